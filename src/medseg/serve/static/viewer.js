// medseg viewer: one request per file (POST /v1/segment?format=viewer); the threshold and opacity
// sliders redraw from the 8-bit probabilities that came back, without asking the server again.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, result: null, proba: null, width: 0, height: 0, serverMask: null };

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = kind;
}

function token() { return $("token").value.trim(); }

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

async function failure(response) {
  let message = response.status + " " + response.statusText;
  try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
  if (response.status === 401) { message = "The server needs its token: enter it above. (" + message + ")"; $("token").focus(); }
  return message;
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (!response.ok) { setStatus(await failure(response), "error"); return; }
  state.model = await response.json();
  $("model").textContent = "- " + state.model.name + " (" + state.model.kind + ", " + state.model.id + ")";
  const multi = state.model.multi_class;
  $("threshold-label").textContent = multi ? "Minimum confidence" : "Threshold";
  $("threshold").value = multi ? 0 : Math.round(state.model.threshold * 100);
  showThreshold();
  const legend = $("legend");
  legend.textContent = "";
  for (const c of state.model.classes.slice(1)) {
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = "rgb(" + c.colour.join(",") + ")";
    legend.append(sw, document.createTextNode(c.name));
  }
  if (state.result === null) setStatus("Model loaded. Choose a file.", "idle");
}

function bytesOf(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

async function bitmap(b64, type) {
  return createImageBitmap(new Blob([bytesOf(b64)], { type }), { colorSpaceConversion: "none",
    premultiplyAlpha: "none" });
}

function thresholdValue() { return Number($("threshold").value) / 100; }

function showThreshold() { $("threshold-value").textContent = thresholdValue().toFixed(2); }

function colourOf(cls) {
  const classes = state.model ? state.model.classes : [];
  const c = classes[cls] ? classes[cls].colour : [255, 64, 32];
  return c;
}

// Draw the overlay from the probabilities at the slider's threshold; returns the foreground pixel count.
function drawOverlay() {
  if (!state.proba) return 0;
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(state.width, state.height);
  const p = state.proba;
  const multi = state.model && state.model.multi_class;
  const cut = thresholdValue() * 255;
  let count = 0;
  for (let i = 0; i < state.width * state.height; i++) {
    const k = i * 4;
    const cls = multi ? p[k] : 1;
    const v = multi ? p[k + 1] : p[k];
    if (cls > 0 && v > cut) {
      const c = colourOf(cls);
      out.data[k] = c[0]; out.data[k + 1] = c[1]; out.data[k + 2] = c[2]; out.data[k + 3] = 255;
      count++;
    }
  }
  ctx.putImageData(out, 0, 0);
  canvas.dataset.foreground = String(count);
  updateDownload();
  return count;
}

function atServerThreshold() {
  if (!state.model) return true;
  const t = thresholdValue();
  return state.model.multi_class ? t === 0 : Math.abs(t - state.model.threshold) < 1e-9;
}

function updateDownload() {
  const link = $("download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  if (atServerThreshold()) {
    link.href = URL.createObjectURL(new Blob([state.serverMask], { type: "image/png" }));
    link.download = "mask.png";
    $("download-note").textContent = "the server's mask (threshold and post-processing of the run)";
    link.hidden = false;
    return;
  }
  // A mask at the slider's threshold, made here: 0/255 grey (class values for several classes).
  const c = document.createElement("canvas");
  c.width = state.width; c.height = state.height;
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(state.width, state.height);
  const o = $("overlay").getContext("2d").getImageData(0, 0, state.width, state.height).data;
  const multi = state.model && state.model.multi_class;
  for (let i = 0; i < o.length; i += 4) {
    const v = o[i + 3] ? (multi ? state.proba[i] : 255) : 0;
    img.data[i] = img.data[i + 1] = img.data[i + 2] = v; img.data[i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  c.toBlob((blob) => {
    link.href = URL.createObjectURL(blob);
    link.download = "mask_threshold_" + thresholdValue().toFixed(2) + ".png";
    $("download-note").textContent = "made in the browser at this threshold (no post-processing)";
    link.hidden = false;
  }, "image/png");
}

async function segment(file) {
  state.result = null;
  setStatus("Segmenting...", "busy");
  const form = new FormData();
  form.append("file", file);
  const url = "/v1/segment?format=viewer" + ($("tta").checked ? "&tta=true" : "");
  const started = performance.now();
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form, headers: headers() });
  } catch (e) { setStatus("The server cannot be reached (" + e + ")", "error"); return; }
  if (!response.ok) { setStatus(await failure(response), "error"); return; }
  const result = await response.json();
  const roundTrip = performance.now() - started;
  if (!state.model) await loadModel();
  const image = await bitmap(result.image_jpeg, "image/jpeg");
  const proba = await bitmap(result.probability_png, "image/png");
  state.width = result.input.width; state.height = result.input.height;
  for (const id of ["image", "overlay"]) { $(id).width = state.width; $(id).height = state.height; }
  $("stage").style.width = Math.max(state.width, 512) + "px";  // small images are shown enlarged
  $("image").getContext("2d").drawImage(image, 0, 0);
  const scratch = document.createElement("canvas");
  scratch.width = state.width; scratch.height = state.height;
  const sctx = scratch.getContext("2d", { willReadFrequently: true });
  sctx.drawImage(proba, 0, 0);
  state.proba = sctx.getImageData(0, 0, state.width, state.height).data;
  state.serverMask = bytesOf(result.mask_png);
  state.result = result;
  $("stage").hidden = false;
  drawOverlay();
  const t = result.timing_ms;
  $("timing").textContent = "model " + (t.inference_ms || 0).toFixed(0) + " ms, queue " + (t.queue_ms || 0).toFixed(0)
    + " ms, server " + t.total_ms.toFixed(0) + " ms, round trip " + roundTrip.toFixed(0) + " ms; "
    + state.width + " x " + state.height + " px; " + result.model;
  const areas = result.classes.map((c) => c.name + " " + (100 * c.area_fraction).toFixed(1) + " %").join(", ");
  setStatus("Done: " + areas + ".", "done");
}

$("connect").addEventListener("click", () => { sessionStorage.setItem("medseg-token", token()); loadModel(); });
$("file").addEventListener("change", (e) => { if (e.target.files.length) segment(e.target.files[0]); });
$("threshold").addEventListener("input", () => { showThreshold(); drawOverlay(); });
$("opacity").addEventListener("input", () => {
  $("overlay").style.opacity = String(Number($("opacity").value) / 100);
  $("opacity-value").textContent = $("opacity").value + " %";
});
$("overlay").style.opacity = "0.5";
$("token").value = sessionStorage.getItem("medseg-token") || "";
loadModel();
