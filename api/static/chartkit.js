// Around every chart: a tooltip that follows the pointer (or a tap) and PNG / SVG downloads
// for slide decks. Charts keep their <title> elements, which say what a mark is.

// The chart rules of app.css, inlined into a downloaded SVG (a file has no stylesheet).
const CHART_STYLE = `
  text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  .grid { stroke: #eceff3; }
  .tick, .legend, .axis-label { font-size: 11px; fill: #4b5468; }
  .chart-title { font-size: 13px; font-weight: 600; fill: #1d2330; }
  .line { fill: none; stroke-width: 2; }
  .ci { stroke-width: 2; } .ci-cap { stroke-width: 1.5; } .peak-line { stroke-width: 1; opacity: .7; }
  .bar-label { font-size: 11px; fill: #fff; font-weight: 600; }`;

// The text of a mark's tooltip: its own <title>, or its group's.
function tipText(target, root) {
  for (let el = target; el && el !== root; el = el.parentNode) {
    const title = [...(el.children || [])].find((c) => c.tagName === "title");
    if (title) return title.textContent;
  }
  return "";
}

// A standalone copy of a chart: sized, namespaced, with its styles and a white background.
export function svgFile(chart) {
  const copy = chart.cloneNode(true);
  const [, , w, h] = chart.getAttribute("viewBox").split(" ").map(Number);
  copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  copy.setAttribute("width", w);
  copy.setAttribute("height", h);
  copy.removeAttribute("class");
  const style = document.createElementNS("http://www.w3.org/2000/svg", "style");
  style.textContent = CHART_STYLE;
  const bg = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  for (const [k, v] of Object.entries({width: "100%", height: "100%", fill: "#fff"})) bg.setAttribute(k, v);
  copy.prepend(style, bg);
  return {text: new XMLSerializer().serializeToString(copy), w, h};
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function downloadSvg(chart, name) {
  saveBlob(new Blob([svgFile(chart).text], {type: "image/svg+xml"}), `${name}.svg`);
}

// The SVG drawn on a canvas at twice its size (sharp on a slide), saved as PNG.
function downloadPng(chart, name, scale = 2) {
  const {text, w, h} = svgFile(chart);
  const img = new Image();
  const url = URL.createObjectURL(new Blob([text], {type: "image/svg+xml"}));
  img.onload = () => {
    const canvas = document.createElement("canvas");
    canvas.width = w * scale;
    canvas.height = h * scale;
    const ctx = canvas.getContext("2d");
    ctx.scale(scale, scale);
    ctx.drawImage(img, 0, 0, w, h);
    URL.revokeObjectURL(url);
    canvas.toBlob((blob) => saveBlob(blob, `${name}.png`), "image/png");
  };
  img.src = url;
}

// chart: an SVG from charts.js; name: the file name of its downloads (no extension).
export function chartBox(chart, name) {
  const box = document.createElement("figure");
  box.className = "chart-box";
  box.dataset.chartBox = name;
  const tip = document.createElement("div");
  tip.className = "chart-tip";
  tip.hidden = true;
  tip.setAttribute("role", "status");
  const tools = document.createElement("div");
  tools.className = "chart-tools";
  for (const [kind, save] of [["PNG", downloadPng], ["SVG", downloadSvg]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `chart-download download-${kind.toLowerCase()}`;
    b.textContent = `⤓ ${kind}`;
    b.title = `Download this chart as ${kind}`;
    b.addEventListener("click", () => save(chart, name));
    tools.append(b);
  }
  const show = (ev) => {
    const text = tipText(ev.target, chart);
    if (!text) { tip.hidden = true; return; }
    tip.textContent = text;
    tip.hidden = false;
    const at = box.getBoundingClientRect();
    const x = Math.min(ev.clientX - at.left + 12, at.width - tip.offsetWidth - 4);
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${ev.clientY - at.top + 14}px`;
  };
  chart.addEventListener("pointermove", show);
  chart.addEventListener("pointerdown", show); // a tap on a phone
  chart.addEventListener("pointerleave", () => { tip.hidden = true; });
  box.append(tools, chart, tip);
  return box;
}

