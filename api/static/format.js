// How numbers, times and names read on the page.
import {enums} from "./enums.js";

export const pct = (x) => `${(x * 100).toFixed(x >= 0.995 || x === 0 ? 0 : 1)}%`;
export const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
export const groupName = (g) => (g === "" ? "(top level)" : g);
export const interval = (ci) => (ci ? `, 95% CI ${pct(ci[0])}–${pct(ci[1])}` : "");
export const pValue = (p) => (p < 0.0001 ? "<0.0001" : p.toPrecision(2));

export function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
}

// A running job's rate and time left, from its record's timing ("" while unknown).
export function pace(job) {
  const t = job.timing;
  if (job.status !== enums.STATUS.RUNNING || !t || !t.rate) return "";
  const rate = t.rate >= 0.1 ? `${t.rate.toFixed(1)} ${t.unit}/s` : `${(t.rate * 60).toFixed(2)} ${t.unit}/min`;
  return t.eta_s === null || t.eta_s === undefined ? rate : `${rate} · ${duration(t.eta_s)} left`;
}

// Chart drawings as wide as the page's cards allow (their text keeps its size).
export const chartWidth = () => Math.max(300, Math.min(1300, document.getElementById("view").clientWidth - 64));
