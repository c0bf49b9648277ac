// Tiny hand-written SVG charts: a line chart (training curves), stacked share bars and
// shares with their intervals (a module: the pages import what they draw), and the helpers
// other chart modules draw with (svg, niceTicks, fit, fmt, PALETTE).

const SVG_NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2f7ed8", "#e4572e", "#29a36a", "#f2a541", "#8e5cd9", "#17becf", "#d62f8b",
                 "#7f7f7f"];

export function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

export function niceTicks(lo, hi, n = 5) {
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Math.round(t / step) * step);
  }
  return ticks;
}

// A label cut to about px wide (the tooltip keeps it whole), so a narrow chart never clips it.
export function fit(text, px) {
  const most = Math.max(4, Math.floor(px / 6.4));
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}

export function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString();
}

// series: [{name, points: [[x, y], ...]}]; opts: {id, title, yMin, yMax, xLabel, width}
// (width: of the drawing in px, so a full-width chart keeps its text at its size)
export function lineChart(series, opts = {}) {
  const W = opts.width || 520, H = 276, m = {l: 48, r: 16, t: 28, b: 66};
  const pts = series.flatMap((s) => s.points);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs, 1), x1 = Math.max(...xs, 2);
  // Loss: fit the data (small changes stay visible); accuracy passes its fixed 0..1.
  const yLo = opts.yMin ?? Math.min(...ys), yHi = opts.yMax ?? Math.max(...ys, yLo + 1e-3);
  const yt = niceTicks(yLo, yHi), y0 = Math.min(yt[0], yLo), y1 = Math.max(yt.at(-1), yHi);
  const X = (x) => m.l + ((x - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
  const Y = (y) => H - m.b - ((y - y0) / (y1 - y0 || 1)) * (H - m.t - m.b);
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                           "data-chart": opts.id || "", "aria-label": opts.title || ""});
  root.append(svg("text", {x: m.l, y: 18, class: "chart-title"}, opts.title || ""));
  for (const t of yt) {
    root.append(svg("line", {x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: "grid"}));
    root.append(svg("text", {x: m.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end"},
                    fmt(t)));
  }
  const xt = niceTicks(x0, x1, Math.min(10, x1 - x0))
    .filter((t) => Number.isInteger(t) && t >= x0 && t <= x1);
  for (const t of xt) {
    root.append(svg("text", {x: X(t), y: H - m.b + 16, class: "tick", "text-anchor": "middle"},
                    String(t)));
  }
  root.append(svg("text", {x: (W + m.l) / 2, y: H - m.b + 30, class: "axis-label",
                           "text-anchor": "middle"}, opts.xLabel || "epoch"));
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`);
    root.append(svg("path", {d: d.join(" "), stroke: color, class: "line", "data-series": s.name}));
    for (const [x, y] of s.points) {
      const dot = svg("circle", {cx: X(x), cy: Y(y), r: 3, fill: color, "data-series": s.name});
      dot.append(svg("title", {}, `${s.name} · epoch ${x}: ${fmt(y)}`));
      root.append(dot);
    }
    const lx = m.l + i * 160, ly = H - 4;
    root.append(svg("rect", {x: lx, y: ly - 9, width: 12, height: 4, fill: color}));
    root.append(svg("text", {x: lx + 16, y: ly - 4, class: "legend"}, s.name));
  });
  return root;
}

// rows: [{name, images, shares: {label: share}}]; classes: label order
export function shareBars(rows, classes, opts = {}) {
  const W = opts.width || 560, bar = 26, gap = 10, m = {l: 140, r: 16, t: 10, b: 34};
  const H = m.t + rows.length * (bar + gap) + m.b;
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                           "data-chart": opts.id || "shares",
                           "aria-label": "label shares per group"});
  const X = (f) => m.l + f * (W - m.l - m.r);
  rows.forEach((row, i) => {
    const y = m.t + i * (bar + gap);
    root.append(svg("text", {x: m.l - 8, y: y + bar / 2 + 4, class: "tick", "text-anchor": "end"},
                    fit(`${row.name} (${row.images})`, m.l - 10)));
    let at = 0;
    classes.forEach((c, k) => {
      const share = row.shares[c] || 0;
      const rect = svg("rect", {x: X(at), y, width: Math.max(0, X(at + share) - X(at)),
                                height: bar, fill: PALETTE[k % PALETTE.length],
                                "data-group": row.name, "data-label": c,
                                "data-share": share});
      rect.append(svg("title", {}, `${row.name}: ${c} ${(share * 100).toFixed(1)}%`));
      root.append(rect);
      if (share >= 0.08) {
        root.append(svg("text", {x: (X(at) + X(at + share)) / 2, y: y + bar / 2 + 4,
                                 class: "bar-label", "text-anchor": "middle"},
                        `${Math.round(share * 100)}%`));
      }
      at += share;
    });
  });
  classes.forEach((c, k) => {
    const lx = m.l + k * 110, ly = H - 12;
    root.append(svg("rect", {x: lx, y: ly - 9, width: 12, height: 12,
                             fill: PALETTE[k % PALETTE.length]}));
    root.append(svg("text", {x: lx + 16, y: ly + 1, class: "legend"}, c));
  });
  return root;
}

// rows: [{name, cells: {label: {share, ci95: [low, high] | null}}}]; one dot per group and label
// at its share, its Wilson 95 % interval drawn as an error bar around it.
export function intervalChart(rows, classes, opts = {}) {
  const W = opts.width || 560, line = 14, pad = 10, narrow = W < 480;
  const m = {l: 140, r: 16, t: 10, b: narrow ? 68 : 52}; // narrow: the key on a line of its own
  const band = classes.length * line + pad;
  const H = m.t + rows.length * band + m.b;
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                           "data-chart": opts.id || "intervals",
                           "aria-label": "label shares per group with 95% intervals"});
  const X = (f) => m.l + f * (W - m.l - m.r);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", {x1: X(t), x2: X(t), y1: m.t, y2: H - m.b, class: "grid"}));
    root.append(svg("text", {x: X(t), y: H - m.b + 16, class: "tick", "text-anchor": "middle"},
                    `${t * 100}%`));
  }
  rows.forEach((row, i) => {
    const top = m.t + i * band;
    root.append(svg("text", {x: m.l - 8, y: top + band / 2 + 2, class: "tick",
                             "text-anchor": "end"}, fit(row.name, m.l - 10)));
    classes.forEach((c, k) => {
      const cell = row.cells[c];
      if (!cell || !cell.ci95) return;  // nothing scored in the group: no share to draw
      const [lo, hi] = cell.ci95, y = top + pad / 2 + k * line + line / 2, color = PALETTE[k % PALETTE.length];
      const tip = `${row.name}: ${c} ${(cell.share * 100).toFixed(1)}% ` +
                  `(95% interval ${(lo * 100).toFixed(1)}–${(hi * 100).toFixed(1)}%)`;
      const bar = svg("line", {x1: X(lo), x2: X(hi), y1: y, y2: y, stroke: color, class: "ci",
                               "data-group": row.name, "data-label": c, "data-low": lo,
                               "data-high": hi});
      bar.append(svg("title", {}, tip));
      root.append(bar);
      for (const end of [lo, hi]) {
        root.append(svg("line", {x1: X(end), x2: X(end), y1: y - 4, y2: y + 4, stroke: color,
                                 class: "ci-cap"}));
      }
      const dot = svg("circle", {cx: X(cell.share), cy: y, r: 4, fill: color,
                                 "data-group": row.name, "data-label": c,
                                 "data-share": cell.share});
      dot.append(svg("title", {}, tip));
      root.append(dot);
    });
  });
  classes.forEach((c, k) => {
    const lx = m.l + k * 110, ly = H - 12;
    root.append(svg("rect", {x: lx, y: ly - 9, width: 12, height: 12,
                             fill: PALETTE[k % PALETTE.length]}));
    root.append(svg("text", {x: lx + 16, y: ly + 1, class: "legend"}, c));
  });
  root.append(svg("text", {x: narrow ? m.l : W - m.r, y: narrow ? H - 30 : H - 11, class: "legend",
                           "text-anchor": narrow ? "start" : "end"}, "dot: share · bar: 95% interval"));
  return root;
}

