// The editor's complete step in the browser (the folder export.py --formats=web writes): the
// network runs on onnxruntime-web's WASM backend, on crops around the painted holes, and the
// photograph never leaves the page. As glcic_tf.tiling: each hole's neighbourhood grown by the
// network's receptive radius (config.margin, 153 px), corners on multiples of config.multiple
// (4), completes the hole exactly as the whole photograph would; overlapping crops are merged.

let sessionPromise = null;

export class LoadError extends Error {}

export function prepare(config) {
  // Loads the runtime and the model once (the first Complete waits for it); a LoadError says
  // what failed.
  if (!sessionPromise) {
    sessionPromise = load(config).catch((error) => {
      sessionPromise = null; // tried again at the next Complete
      throw new LoadError(`The in-browser model did not load (${error.message || error})`);
    });
  }
  return sessionPromise;
}

async function load(config) {
  const ort = await import(new URL(config.runtime_url, document.baseURI).href);
  ort.env.wasm.wasmPaths = new URL(config.runtime_url, document.baseURI).href.replace(/[^/]*$/, "");
  // Threads need SharedArrayBuffer, which only a cross-origin isolated page has (a server
  // sending COOP/COEP headers); elsewhere one thread.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const session = await ort.InferenceSession.create(new URL(config.model_url, document.baseURI).href, { executionProviders: ["wasm"] });
  const mask = session.inputNames.find((name) => name.includes("mask"));
  const image = session.inputNames.find((name) => name !== mask);
  return { ort, session, names: { image, mask, output: session.outputNames[0] } };
}

export function holeRegions(holes, width, height, margin, multiple) {
  // [top, left, bottom, right] crops: the cells (multiple x multiple) within `margin` of a hole
  // cell, grouped into connected parts, each part's bounding box, merged while any overlap.
  const rows = Math.ceil(height / multiple), cols = Math.ceil(width / multiple);
  // Cells holding a hole pixel, each grown by the margin from its own bounds (a little more than
  // the pixels' own margins: a larger crop completes its holes as exactly).
  const holeCells = new Uint8Array(rows * cols);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) if (holes[y * width + x]) holeCells[Math.floor(y / multiple) * cols + Math.floor(x / multiple)] = 1;
  }
  const grow = Math.ceil(margin / multiple);
  const cells = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (!holeCells[r * cols + c]) continue;
      const left = Math.max(0, c - grow), right = Math.min(cols, c + 1 + grow);
      for (let rr = Math.max(0, r - grow); rr < Math.min(rows, r + 1 + grow); rr++) cells.fill(1, rr * cols + left, rr * cols + right);
    }
  }
  // Bounding boxes of 4-connected parts (flood fill over cells).
  let boxes = [];
  const seen = new Uint8Array(rows * cols);
  for (let start = 0; start < cells.length; start++) {
    if (!cells[start] || seen[start]) continue;
    const box = [rows, cols, 0, 0];
    const stack = [start];
    seen[start] = 1;
    while (stack.length) {
      const cell = stack.pop(), r = Math.floor(cell / cols), c = cell % cols;
      box[0] = Math.min(box[0], r); box[1] = Math.min(box[1], c); box[2] = Math.max(box[2], r + 1); box[3] = Math.max(box[3], c + 1);
      for (const [nr, nc] of [[r - 1, c], [r + 1, c], [r, c - 1], [r, c + 1]]) {
        const next = nr * cols + nc;
        if (nr >= 0 && nr < rows && nc >= 0 && nc < cols && cells[next] && !seen[next]) { seen[next] = 1; stack.push(next); }
      }
    }
    boxes.push(box);
  }
  for (let merged = true; merged; ) {
    merged = false;
    outer: for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const [a, b] = [boxes[i], boxes[j]];
        if (a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]) {
          boxes[i] = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])];
          boxes.splice(j, 1);
          merged = true;
          break outer;
        }
      }
    }
  }
  return boxes.map(([t, l, b, r]) => [t * multiple, l * multiple, Math.min(height, b * multiple), Math.min(width, r * multiple)]);
}

export async function complete({ photoCanvas, holes, config }) {
  // The photograph of `photoCanvas` with the pixels where `holes` (Uint8Array, 1 = hole, one per
  // pixel) is set completed: a PNG Blob of the canvas's size.
  const { ort, session, names } = await prepare(config);
  const width = photoCanvas.width, height = photoCanvas.height;
  const context = photoCanvas.getContext("2d");
  const photo = context.getImageData(0, 0, width, height);
  const result = new ImageData(new Uint8ClampedArray(photo.data), width, height);
  const multiple = config.multiple;
  for (const [top, left, bottom, right] of holeRegions(holes, width, height, config.margin, multiple)) {
    const h = bottom - top, w = right - left;
    const H = Math.ceil(h / multiple) * multiple, W = Math.ceil(w / multiple) * multiple;
    if (H * W > (config.max_network_pixels || Infinity)) {
      throw new Error(`A hole's neighbourhood (${w}x${h} pixels) is larger than this page completes at once (${config.max_network_pixels} pixels): paint smaller holes, one at a time.`);
    }
    // The crop in [0, 1], padded to H x W by repeating its last row and column.
    const image = new Float32Array(H * W * 3), mask = new Float32Array(H * W);
    for (let y = 0; y < H; y++) {
      const sy = top + Math.min(y, h - 1);
      for (let x = 0; x < W; x++) {
        const sx = left + Math.min(x, w - 1), s = sy * width + sx, d = y * W + x;
        mask[d] = holes[s];
        image[3 * d] = photo.data[4 * s] / 255;
        image[3 * d + 1] = photo.data[4 * s + 1] / 255;
        image[3 * d + 2] = photo.data[4 * s + 2] / 255;
      }
    }
    const outputs = await session.run({
      [names.image]: new ort.Tensor("float32", image, [1, H, W, 3]),
      [names.mask]: new ort.Tensor("float32", mask, [1, H, W, 1]),
    });
    const completed = outputs[names.output].data;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const s = y * W + x, d = (top + y) * width + left + x;
        if (!holes[d]) continue; // the photograph's own pixels outside the hole
        for (let c = 0; c < 3; c++) result.data[4 * d + c] = Math.round(completed[3 * s + c] * 255);
      }
    }
    for (const tensor of Object.values(outputs)) tensor.dispose?.();
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(result, 0, 0);
  // toDataURL, not toBlob (editor.js's maskBlob says why).
  return (await fetch(canvas.toDataURL("image/png"))).blob();
}
