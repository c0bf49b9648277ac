// DOM helpers: elements built with textContent (never innerHTML: image names and errors come
// from users), the notice line, and the small widgets every page shows.

// h("div", {class: "x"}, child, "text"); attributes named on* become listeners.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) {
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  return el;
}

// The line under the header: an error (default) or an info message; "" hides it.
export function notice(text, kind = "error") {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = kind;
  el.hidden = !text;
}

export function statusBadge(status) {
  return h("span", {class: `badge status-${status}`, "data-status": status}, status);
}

export function progressBar(done, total, failed = 0) {
  const share = (n) => (total ? Math.min(100, (n / total) * 100) : 0).toFixed(1);
  return h("div", {class: "progress", "data-done": done, "data-total": total, role: "progressbar",
                   "aria-valuenow": done, "aria-valuemax": total},
    h("div", {class: "fill", style: `width:${share(done - failed)}%`}),
    failed ? h("div", {class: "fill failed",
                       style: `left:${share(done - failed)}%;width:${share(failed)}%`}) : null,
    h("span", {class: "progress-text"}, `${done} / ${total || "?"}${failed ? ` (${failed} failed)` : ""}`));
}

// A definition list of [term, value] pairs.
export function meta(rows) {
  return h("dl", {class: "meta"}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}
