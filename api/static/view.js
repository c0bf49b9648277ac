// What the page on screen holds until the next navigation: its polling timers and the blob
// URLs of thumbnails fetched with a key. The router frees them before it draws another page.
import {notice} from "./dom.js";

let timers = [];
let objectUrls = [];

// fn now, then ms after each run ends (never two at once); errors go to the notice line.
export function every(ms, fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { notice(e.message); }
    if (!stopped) timers.push(setTimeout(tick, ms));
  };
  timers.push({stop: () => { stopped = true; }});
  tick();
}

export function stopPolling() {
  for (const t of timers) (t.stop ? t.stop() : clearTimeout(t));
  timers = [];
}

export function keepObjectUrl(url) {
  objectUrls.push(url);
}

export function freeView() {
  stopPolling();
  objectUrls.forEach(URL.revokeObjectURL);
  objectUrls = [];
}

// Draw the current page again (after a change it shows, e.g. a promotion).
export function redraw() {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

// For a view whose loads can overlap (a filter changed before the last answer came): each call
// begins a load and returns isNewest(), true until a later load begins, so a late answer to an
// older load draws nothing over a newer one.
export function newestLoads() {
  let begun = 0;
  return () => { const mine = ++begun; return () => mine === begun; };
}
