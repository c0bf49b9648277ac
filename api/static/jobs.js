// The jobs page: the scoring forms (a folder or prefix, uploaded files, a manifest), the
// training form, and the job list below them.
import {postForm, postJSON} from "./api.js";
import {h} from "./dom.js";
import {enums} from "./enums.js";
import {jobList} from "./joblist.js";
import {trainCard} from "./trainform.js";
import {every} from "./view.js";

export async function jobsView(main) {
  const message = h("p", {class: "form-message", id: "submit-message"});
  const opts = scoringOptions();
  const submitted = (record) => { location.hash = `#/jobs/${record.id}`; };
  const failed = (e) => { message.textContent = e.message; message.className = "form-message error"; };
  const ctx = {opts, submitted, failed, message};
  const list = jobList();
  main.append(
    h("section", {class: "card"}, h("h2", {}, "Score a folder"),
      h("div", {class: "model-row"}, h("label", {for: "model"}, "Model"), opts.model,
        h("span", {class: "muted"}, "version or alias; empty: the server's default"),
        h("label", {for: "priority"}, "Priority"), opts.priority,
        h("label", {for: "faces"}, "Score"), opts.faces),
      sourceForm(ctx), uploadForm(ctx), manifestForm(ctx), message),
    trainCard(submitted),
    list.card);
  every(2000, list.load);
}

// The options every scoring form sends: model, priority (the API's, its default first) and
// faces (find each face and score it, a row per face; default: as the model was trained).
function scoringOptions() {
  const model = h("input", {id: "model", name: "model", placeholder: "production", size: 14});
  const first = [enums.defaultPriority, ...enums.priorities.filter((p) => p !== enums.defaultPriority)];
  const priority = h("select", {id: "priority", name: "priority"},
                     first.map((p) => h("option", {value: p}, p)));
  const faces = h("select", {id: "faces", name: "faces"},
                  [["", "as the model was trained"], ["true", "each face"], ["false", "whole images"]]
                    .map(([v, t]) => h("option", {value: v}, t)));
  // The fields as a classify request: JSON typed (faces a boolean), or strings for a form.
  const fields = () => {
    const out = {type: enums.CLASSIFY, priority: priority.value};
    if (model.value.trim()) out.model = model.value.trim();
    if (faces.value) out.faces = faces.value === "true";
    return out;
  };
  const formData = (extra = {}) => {
    const form = new FormData();
    for (const [k, v] of Object.entries({...fields(), ...extra})) form.append(k, String(v));
    return form;
  };
  return {model, priority, faces, fields, formData};
}

function sourceForm({opts, submitted, failed}) {
  const source = h("input", {id: "source", name: "source", size: 48, required: true,
                             placeholder: "s3://bucket/prefix or a folder on the server"});
  return h("form", {id: "submit-source", onsubmit: async (ev) => {
    ev.preventDefault();
    try { submitted(await postJSON("/v1/jobs", {...opts.fields(), source: source.value.trim()})); }
    catch (e) { failed(e); }
  }}, h("label", {for: "source"}, "Source"), source,
     h("button", {type: "submit", id: "submit-source-button"}, "Score"));
}

function uploadForm({opts, submitted, failed, message}) {
  const files = h("input", {id: "files", type: "file", multiple: true,
                            accept: "image/*,.zip,application/zip"});
  const folder = h("input", {id: "folder", type: "file", webkitdirectory: true});
  return h("form", {id: "submit-upload", onsubmit: async (ev) => {
    ev.preventDefault();
    if (!files.files.length && !folder.files.length) return failed(new Error("choose files or a folder"));
    const form = opts.formData();
    for (const f of files.files) form.append("files", f, f.name);
    for (const f of folder.files) { // drop the chosen folder's own name: sub-folders are groups
      form.append("files", f, f.webkitRelativePath.split("/").slice(1).join("/") || f.name);
    }
    message.textContent = "Uploading…";
    message.className = "form-message";
    try { submitted(await postForm("/v1/jobs", form)); } catch (e) { failed(e); }
  }}, h("label", {for: "files"}, "Images or a .zip"), files,
     h("label", {for: "folder"}, "or a folder"), folder,
     h("button", {type: "submit"}, "Upload and score"));
}

// A manifest: a CSV / JSON Lines file the server reads (path or s3://), or one uploaded
// (its images then named by absolute path, s3:// or URL); group_by: the column to group by.
function manifestForm({opts, submitted, failed}) {
  const manifest = h("input", {id: "manifest", size: 40,
                               placeholder: "manifest.csv on the server, or s3://bucket/key"});
  const manifestFile = h("input", {id: "manifest-file", type: "file", accept: ".csv,.jsonl,.json"});
  const groupBy = h("input", {id: "group-by", size: 12, placeholder: "folder"});
  return h("form", {id: "submit-manifest", onsubmit: async (ev) => {
    ev.preventDefault();
    const extra = groupBy.value.trim() ? {group_by: groupBy.value.trim()} : {};
    try {
      if (manifestFile.files.length) {
        const form = opts.formData(extra);
        form.append("manifest", manifestFile.files[0], manifestFile.files[0].name);
        submitted(await postForm("/v1/jobs", form));
      } else if (manifest.value.trim()) {
        submitted(await postJSON("/v1/jobs", {...opts.fields(), ...extra,
                                              manifest: manifest.value.trim()}));
      } else {
        failed(new Error("give a manifest path or choose a manifest file"));
      }
    } catch (e) { failed(e); }
  }}, h("label", {for: "manifest"}, "Manifest"), manifest,
     h("label", {for: "manifest-file"}, "or upload one"), manifestFile,
     h("label", {for: "group-by"}, "group by"), groupBy,
     h("button", {type: "submit", id: "submit-manifest-button"}, "Score manifest"));
}
