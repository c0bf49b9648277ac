// The JSON API as the dashboard calls it: every request carries the API key pasted at the top
// right (kept in this browser's localStorage), and an error answer becomes an ApiError.
import {h, notice} from "./dom.js";

const KEY_STORAGE = "facesense.apiKey";

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE),
  set: (key) => localStorage.setItem(KEY_STORAGE, key),
  forget: () => localStorage.removeItem(KEY_STORAGE),
};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const key = apiKey.get();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const resp = await fetch(path, {...opts, headers});
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try { message = (await resp.json()).error.message; } catch { /* not our JSON */ }
    if (resp.status === 401) notice("This server needs an API key: paste yours at the top right.");
    throw new ApiError(resp.status, message);
  }
  return resp;
}

export const getJSON = async (path) => (await api(path)).json();

export const postJSON = async (path, body) => (await api(path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
})).json();

// A multipart form (files, a manifest) posted as is: the browser sets its boundary.
export const postForm = async (path, form) => (await api(path, {method: "POST", body: form})).json();

// A file fetched with the key (a plain link could not send it), saved under filename.
export async function download(path, filename) {
  const blob = await (await api(path)).blob();
  const a = h("a", {href: URL.createObjectURL(blob), download: filename});
  document.body.append(a);
  a.click();
  a.remove();
}
