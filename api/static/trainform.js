// The training form: a labelled folder (one sub-folder per class), a few params, and the
// promote policy (the API's list of them).
import {postJSON} from "./api.js";
import {h} from "./dom.js";
import {enums} from "./enums.js";

export function trainCard(submitted) {
  const message = h("p", {class: "form-message", id: "train-message"});
  const dataset = h("input", {id: "dataset", size: 48, required: true,
                              placeholder: "s3://bucket/labelled or a folder: a sub-folder per class"});
  const epochs = h("input", {id: "epochs", type: "number", min: 1, max: 1000, placeholder: "default"});
  const imageSize = h("input", {id: "image-size", type: "number", min: 63, max: 512,
                                placeholder: "default"});
  const base = h("input", {id: "base", size: 14, placeholder: "none"});
  const promote = h("select", {id: "promote"},
    enums.promotePolicies.map((p) => h("option", {value: p}, p)));
  const form = h("form", {id: "submit-train", onsubmit: async (ev) => {
    ev.preventDefault();
    const params = {};
    if (epochs.value) params.epochs = Number(epochs.value);
    if (imageSize.value) params.image_size = Number(imageSize.value);
    if (base.value.trim()) params.base = base.value.trim();
    const body = {type: enums.TRAIN, dataset: dataset.value.trim(), params, promote: promote.value};
    try { submitted(await postJSON("/v1/jobs", body)); }
    catch (e) { message.textContent = e.message; message.className = "form-message error"; }
  }}, h("label", {for: "dataset"}, "Dataset"), dataset,
     h("label", {for: "epochs"}, "Epochs"), epochs,
     h("label", {for: "image-size"}, "Image size"), imageSize,
     h("label", {for: "base"}, "Fine-tune from"), base,
     h("label", {for: "promote"}, "Promote"), promote,
     h("button", {type: "submit", id: "submit-train-button"}, "Train"));
  return h("section", {class: "card"}, h("h2", {}, "Train a model"), form,
    h("p", {class: "muted"}, "if_better promotes only if its validation accuracy beats the ",
      "production version's on the same images; always and if_better promote only a version ",
      "that beats always guessing the commonest class; force promotes it anyway. Promoting ",
      "needs an admin key when keys are configured."), message);
}
