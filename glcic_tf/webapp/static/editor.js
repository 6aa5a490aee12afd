// The page: open a photo, paint holes on a canvas of the photo's own size, complete them, show
// the result beside the photo (before/after slider) and offer it as PNG. The complete step is
// the page's server's (POST /complete with the photo and the mask), or this browser's
// (browser_complete.mjs: the photo never leaves the page): always where the page says
// <body data-completer="browser"> (the folder export.py --formats=web writes), and by choice
// where the server's /config offers it ("browser": the model and runtime it serves).
// Strokes are kept as a list (undo drops the last, clear is itself a step), so undo costs no
// copies of a phone-size canvas. The mask sent is white on black, the photo is the file itself.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, width: 0, height: 0, strokes: [], drawing: null, config: null, resultUrl: null, photoUrl: null };
const photoCanvas = $("photo-canvas");
const maskCanvas = $("mask-canvas");
const maskContext = maskCanvas.getContext("2d");
const PAINT_COLOUR = "rgb(255, 0, 96)";
const EXPORTED = document.body.dataset.completer === "browser"; // a static folder: no server to complete on
const BROWSER_COMPLETER = new URL("browser_complete.mjs", document.currentScript.src).href;
const NO_SERVER = EXPORTED ? "This page's config.json did not load: serve the exported folder with a static server (python -m http.server)." : "The page's server did not answer: is glcic-app still running?";

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function megabytes(bytes) {
  return (bytes / 1048576).toFixed(1) + " MB";
}

function visibleStrokes() {
  // The strokes since the last clear.
  return state.strokes.slice(state.strokes.map((s) => s.tool).lastIndexOf("clear") + 1);
}

function hasHole() {
  // Whether anything is painted: cheap, and exact enough for the buttons (erasing it all is not
  // seen here); the server checks the mask itself.
  return visibleStrokes().some((s) => s.tool === "paint");
}

function updateButtons() {
  const open = state.file !== null;
  $("undo").disabled = !open || state.strokes.length === 0;
  $("clear").disabled = !open || state.strokes.length === 0;
  $("complete").disabled = !open || $("busy").hidden === false;
}

// ---- opening a photo ----
async function openPhoto(file) {
  clearError();
  if (!file) return;
  const limits = { max_upload_bytes: Infinity, max_pixels: Infinity, ...state.config };
  if (file.size > limits.max_upload_bytes) {
    showError(`${file.name} is ${megabytes(file.size)}; this server takes photos up to ${megabytes(limits.max_upload_bytes)}.`);
    return;
  }
  const url = URL.createObjectURL(file);
  const image = new Image();
  try {
    image.src = url;
    await image.decode();
  } catch (error) {
    URL.revokeObjectURL(url);
    showError(`${file.name} is not an image this browser can open (${file.type || "unknown type"}). Open a JPEG, PNG or WebP photo.`);
    return;
  }
  const pixels = image.naturalWidth * image.naturalHeight;
  if (pixels > limits.max_pixels) {
    URL.revokeObjectURL(url);
    showError(`${file.name} is ${image.naturalWidth}x${image.naturalHeight}, over this server's limit of ${limits.max_pixels} pixels.`);
    return;
  }
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  Object.assign(state, { file, width: image.naturalWidth, height: image.naturalHeight, strokes: [], photoUrl: url });
  for (const canvas of [photoCanvas, maskCanvas]) {
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
  }
  photoCanvas.getContext("2d").drawImage(image, 0, 0);
  redrawMask();
  // A brush of about a twentieth of the shorter side suits most objects; the slider goes to a quarter.
  const shorter = Math.min(image.naturalWidth, image.naturalHeight);
  $("brush-size").max = Math.max(50, Math.round(shorter / 4));
  setBrushSize(Math.max(4, Math.round(shorter / 20)));
  $("stage").hidden = false;
  $("drop-hint").hidden = true;
  $("result-section").hidden = true;
  $("photo-info").textContent = `${file.name}: ${image.naturalWidth}x${image.naturalHeight}`;
  updateButtons();
}

$("file").addEventListener("change", (event) => {
  openPhoto(event.target.files[0]);
  event.target.value = ""; // the same file can be opened again
});

// A photo dropped anywhere on the page opens (the browser would otherwise leave the page for it).
const dropZone = $("drop-zone");
window.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
window.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) dropZone.classList.remove("dragging");
});
window.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  if (event.dataTransfer.files.length === 0) showError("Drop an image file (a JPEG, PNG or WebP photo).");
  else openPhoto(event.dataTransfer.files[0]);
});

// ---- painting ----
function setBrushSize(size) {
  $("brush-size").value = size;
  $("brush-size-value").textContent = $("brush-size").value;
}
$("brush-size").addEventListener("input", () => setBrushSize($("brush-size").value));

function tool() {
  return $("tool-erase").checked ? "erase" : "paint";
}

function photoPoint(event) {
  // The canvas is shown scaled to fit the page; strokes are kept in photo pixels.
  const box = maskCanvas.getBoundingClientRect();
  return [((event.clientX - box.left) * state.width) / box.width, ((event.clientY - box.top) * state.height) / box.height];
}

function drawStroke(stroke) {
  maskContext.save();
  maskContext.globalCompositeOperation = stroke.tool === "erase" ? "destination-out" : "source-over";
  maskContext.strokeStyle = maskContext.fillStyle = PAINT_COLOUR;
  maskContext.lineWidth = stroke.size;
  maskContext.lineCap = maskContext.lineJoin = "round";
  const [first, ...rest] = stroke.points;
  if (rest.length === 0) {
    maskContext.beginPath();
    maskContext.arc(first[0], first[1], stroke.size / 2, 0, 2 * Math.PI);
    maskContext.fill();
  } else {
    maskContext.beginPath();
    maskContext.moveTo(first[0], first[1]);
    for (const [x, y] of rest) maskContext.lineTo(x, y);
    maskContext.stroke();
  }
  maskContext.restore();
}

function redrawMask() {
  maskContext.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  for (const stroke of visibleStrokes()) drawStroke(stroke);
}

maskCanvas.addEventListener("pointerdown", (event) => {
  if (!state.file || event.button !== 0) return;
  maskCanvas.setPointerCapture(event.pointerId);
  state.drawing = { tool: tool(), size: Number($("brush-size").value), points: [photoPoint(event)] };
  state.strokes.push(state.drawing);
  drawStroke(state.drawing);
  updateButtons();
});
maskCanvas.addEventListener("pointermove", (event) => {
  moveCursor(event);
  if (!state.drawing) return;
  const last = state.drawing.points[state.drawing.points.length - 1];
  const point = photoPoint(event);
  state.drawing.points.push(point);
  // Only the new segment: with round caps, the segments cover what the whole stroke does, and a
  // phone photo's canvas is not cleared and redrawn stroke by stroke at every pointer move.
  drawStroke({ ...state.drawing, points: [last, point] });
});
for (const end of ["pointerup", "pointercancel"]) {
  maskCanvas.addEventListener(end, () => {
    state.drawing = null;
  });
}

function moveCursor(event) {
  // A circle of the brush's size under the pointer, in screen pixels.
  const cursor = $("brush-cursor");
  const box = maskCanvas.getBoundingClientRect();
  const diameter = (Number($("brush-size").value) * box.width) / state.width;
  Object.assign(cursor.style, {
    width: diameter + "px",
    height: diameter + "px",
    left: event.clientX - box.left - diameter / 2 + "px",
    top: event.clientY - box.top - diameter / 2 + "px",
  });
  cursor.hidden = false;
}
maskCanvas.addEventListener("pointerleave", () => ($("brush-cursor").hidden = true));

$("undo").addEventListener("click", () => {
  state.strokes.pop();
  redrawMask();
  updateButtons();
});
$("clear").addEventListener("click", () => {
  state.strokes.push({ tool: "clear" });
  redrawMask();
  updateButtons();
});
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "z" && !$("undo").disabled) $("undo").click();
});

// ---- completing ----
function holePixels() {
  // 1 where anything is painted (anti-aliased edges included), 0 elsewhere: one byte a pixel.
  const painted = maskContext.getImageData(0, 0, state.width, state.height).data;
  const holes = new Uint8Array(state.width * state.height);
  for (let i = 0; i < holes.length; i++) holes[i] = painted[4 * i + 3] > 0 ? 1 : 0;
  return holes;
}

function maskBlob() {
  // White where anything is painted (anti-aliased edges included), black elsewhere.
  const painted = maskContext.getImageData(0, 0, state.width, state.height);
  const out = new ImageData(state.width, state.height);
  for (let i = 0; i < painted.data.length; i += 4) {
    const value = painted.data[i + 3] > 0 ? 255 : 0;
    out.data[i] = out.data[i + 1] = out.data[i + 2] = value;
    out.data[i + 3] = 255;
  }
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  canvas.getContext("2d").putImageData(out, 0, 0);
  // toDataURL, not toBlob: Chromium runs toBlob's encoding in idle time, which an idle page
  // (headless, or nothing animating) may not get for a second; toDataURL encodes at once.
  return fetch(canvas.toDataURL("image/png")).then((reply) => reply.blob());
}

function setBusy(busy) {
  $("busy").hidden = !busy;
  $("complete").setAttribute("aria-busy", String(busy));
  updateButtons();
}

$("complete").addEventListener("click", async () => {
  clearError();
  if (!hasHole()) {
    showError("Nothing is painted: paint over what should go, then press Complete.");
    return;
  }
  setBusy(true);
  const file = state.file;
  const started = performance.now();
  // Once a second: on a machine that runs the model too, repainting the page (a phone photo's
  // canvases) ten times a second took a second of CPU from a 7-second completion.
  const ticker = setInterval(() => {
    $("busy-text").textContent = `Completing… ${Math.round((performance.now() - started) / 1000)} s`;
  }, 1000);
  try {
    const { blob, serverSeconds } = await (inBrowser() ? completeInBrowser() : completeOnServer());
    if (state.file === file) await showResult(blob, started, serverSeconds); // else another photo was opened meanwhile
  } catch (error) {
    showError(error.message);
  } finally {
    clearInterval(ticker);
    $("busy-text").textContent = "Completing…";
    setBusy(false);
  }
});

async function completeOnServer() {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  form.append("mask", await maskBlob(), "mask.png");
  form.append("postprocess", String($("postprocess").checked));
  let reply;
  try {
    reply = await fetch("complete", { method: "POST", body: form });
  } catch (error) {
    throw new Error(NO_SERVER);
  }
  if (!reply.ok) {
    let message = `The server answered ${reply.status} ${reply.statusText}.`;
    try {
      message = (await reply.json()).error || message;
    } catch (error) {
      // not JSON: keep the status line
    }
    throw new Error(message);
  }
  return { blob: await reply.blob(), serverSeconds: reply.headers.get("X-Completion-Seconds") };
}

function inBrowser() {
  return EXPORTED || $("where-browser").checked;
}

function browserConfig() {
  // What browser_complete.mjs needs: the folder's config.json, or the server's offer of it.
  return EXPORTED ? state.config : state.config.browser;
}

async function completeInBrowser() {
  const completer = await import(BROWSER_COMPLETER);
  try {
    return { blob: await completer.complete({ photoCanvas, holes: holePixels(), config: browserConfig() }), serverSeconds: null };
  } catch (error) {
    if (!(error instanceof completer.LoadError)) throw error;
    const advice = EXPORTED
      ? "reload the page; if it fails again, write this folder anew with export.py --formats=web"
      : "choose On the server, or restart app.py with a folder written anew by export.py --formats=web";
    throw new Error(`${error.message}: ${advice}.`);
  }
}

function prepareBrowser() {
  // The runtime and the model (tens of MB) load while the photo is opened and painted; a failure
  // is shown by the Complete that needs them.
  import(BROWSER_COMPLETER).then((completer) => completer.prepare(browserConfig())).catch(() => {});
}

function showWhere() {
  // No post-processing in the browser (fast marching and Poisson blending are the server's, in Python).
  $("postprocess").parentElement.hidden = inBrowser();
  if (inBrowser()) prepareBrowser();
}
for (const choice of ["where-server", "where-browser"]) $(choice).addEventListener("change", showWhere);

async function showResult(blob, started, serverSeconds) {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = URL.createObjectURL(blob);
  $("before").src = state.photoUrl;
  $("result").src = state.resultUrl;
  await Promise.all([$("before").decode(), $("result").decode()]); // shown whole, not line by line
  const seconds = (performance.now() - started) / 1000;
  const stem = state.file.name.replace(/\.[^.]*$/, "");
  $("download").href = state.resultUrl;
  $("download").download = `${stem}_completed.png`;
  $("timing").textContent = `Completed in ${seconds.toFixed(2)} s` + (serverSeconds ? ` (${Number(serverSeconds).toFixed(2)} s on the server).` : " in this browser.");
  $("result-section").hidden = false;
  setCompare($("compare-slider").value);
}

function setCompare(percent) {
  // The photo left of the line, the result right of it: 0 shows all of the result.
  $("result").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("compare-line").style.left = `${percent}%`;
}
$("compare-slider").addEventListener("input", (event) => setCompare(event.target.value));

// ---- start ----
if (EXPORTED) $("postprocess").parentElement.hidden = true;
fetch(EXPORTED ? "config.json" : "config")
  .then((reply) => reply.json())
  .then((config) => {
    state.config = config;
    if (config.model) $("model-line").textContent = `Model: ${config.model}.`;
    $("where").hidden = EXPORTED || !config.browser;
    showWhere();
  })
  .catch(() => showError(NO_SERVER));
updateButtons();
