// The FaceSense dashboard: a hash-routed single page over the JSON API, written as ES modules
// the browser loads as they are (no build step). This one routes and starts; the server's
// vocabulary comes from /openapi.json (enums.js) before any page is drawn.
import {apiKey} from "./api.js";
import {h, notice} from "./dom.js";
import {loadEnums} from "./enums.js";
import {jobView} from "./job.js";
import {jobsView} from "./jobs.js";
import {modelsView, modelView} from "./models.js";
import {freeView} from "./view.js";

const routes = [
  [/^#?\/?$/, jobsView],
  [/^#\/jobs\/([0-9a-f]+)(?:\?(.*))?$/, jobView],  // ?label=&group=&offset=&limit=: the gallery
  [/^#\/models$/, modelsView],
  [/^#\/models\/([A-Za-z0-9._-]+)$/, modelView],
];

async function route() {
  freeView();
  notice("");
  const hash = location.hash || "#/";
  const main = document.getElementById("view");
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", hash.startsWith("#/models") === (a.dataset.nav === "models"));
  }
  for (const [re, view] of routes) {
    const m = hash.match(re);
    if (m) {
      main.replaceChildren();
      try {
        await loadEnums();
        await view(main, ...m.slice(1));
      } catch (e) { notice(e.message); }
      return;
    }
  }
  main.replaceChildren(h("p", {}, "No such page. ", h("a", {href: "#/"}, "Back to the jobs.")));
}

document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = document.getElementById("api-key").value.trim();
  if (key) apiKey.set(key);
  document.getElementById("api-key").value = "";
  notice(key ? "Key saved in this browser." : "", "info");
  route();
});
document.getElementById("forget-key").addEventListener("click", () => {
  apiKey.forget();
  notice("Key forgotten.", "info");
});
window.addEventListener("hashchange", route);
route();
