// The page: draw on the canvas, the app-ready model classifies what you drew, live.
// onnxruntime-web comes from vendor/ (copied from the npm package), never a CDN: the page works offline.
import * as ort from './vendor/ort.wasm.bundle.min.mjs';
import { BlankImageError, prepare, topK } from './preprocess.mjs';
import { SizeError, contractGeometry, image, pixelCount, pixelDims, resizeImage, stepsText } from './steps.mjs';

// The bundle carries its own loader: only the .wasm binary is fetched, from vendor/.
ort.env.wasm.wasmPaths = { wasm: new URL('./vendor/ort-wasm-simd-threaded.wasm', import.meta.url).href };
// Threads need cross-origin isolation, which a plain static server does not give; one is plenty here.
ort.env.wasm.numThreads = 1;

const pad = document.getElementById('pad');
const ctx = pad.getContext('2d', { willReadFrequently: true });
const preview = document.getElementById('preview');
const pctx = preview.getContext('2d');
const predictionEl = document.getElementById('prediction');
const barsEl = document.getElementById('bars');
const statusEl = document.getElementById('status');

const state = { session: null, contract: null, geometry: null, steps: [], lastPixels: null, lastResult: null, label: null,
                busy: null, pending: false };

function resetPad() {
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = '#000000';
  ctx.lineWidth = 20;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
}

function showEmpty() {
  predictionEl.textContent = 'draw a digit';
  predictionEl.classList.add('empty');
  barsEl.replaceChildren();
  pctx.fillStyle = '#000';
  pctx.fillRect(0, 0, preview.width, preview.height);
  state.lastPixels = null;
  state.lastResult = null;
  state.label = null;
}

function showResult(pixels, probabilities) {
  const labels = state.contract.labels;
  const top = topK(probabilities, labels, 3);
  predictionEl.textContent = top[0].label;
  predictionEl.classList.remove('empty');
  barsEl.replaceChildren(...top.map((t) => {
    const li = document.createElement('li');
    li.innerHTML = `<span class="label"></span><div class="bar"><span></span></div><span class="pct"></span>`;
    li.querySelector('.label').textContent = t.label;
    li.querySelector('.bar span').style.width = `${(100 * t.probability).toFixed(1)}%`;
    li.querySelector('.pct').textContent = `${(100 * t.probability).toFixed(1)}%`;
    return li;
  }));
  const { height, width, channels } = state.geometry;
  const img = pctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) img.data[4 * i + c] = pixels[channels === 1 ? i : 3 * i + c];
    img.data[4 * i + 3] = 255;
  }
  const tmp = new OffscreenCanvas(width, height);
  tmp.getContext('2d').putImageData(img, 0, 0);
  pctx.imageSmoothingEnabled = false;
  pctx.drawImage(tmp, 0, 0, preview.width, preview.height);
  state.lastPixels = pixels;
  state.lastResult = Array.from(probabilities);
  state.label = top[0].label;
}

async function runModel(pixels, n) {
  const tensor = new ort.Tensor('uint8', pixels, [n, ...pixelDims(state.geometry)]);
  const out = await state.session.run({ pixels: tensor });
  return out.probabilities.data;
}

async function classifyOnce() {
  const { data, width, height } = ctx.getImageData(0, 0, pad.width, pad.height);
  let pixels;
  try {
    pixels = prepareDrawing(data, width, height);
  } catch (e) {
    if (e instanceof BlankImageError) { showEmpty(); return; }
    throw e;
  }
  showResult(pixels, await runModel(pixels, 1));
}

// The drawing as the model takes it: the recipe and the transforms its script records (preprocess.mjs, as
// mnistkit's Python prepares an image file). A photo model (the `image` recipe) whose transforms do not make the
// 280x280 canvas its size sees the canvas scaled to its size first (Pillow's bilinear, as Resize does).
function prepareDrawing(data, width, height) {
  const recipe = state.contract.preprocess || 'digits';
  try {
    return prepare(data, width, height, recipe, state.geometry, state.steps);
  } catch (e) {
    if (!(e instanceof SizeError) || recipe !== 'image') throw e;
    const rgba = image(data, width, height, 4);
    const scaled = resizeImage(rgba, [state.geometry.height, state.geometry.width]);
    return prepare(scaled.data, scaled.width, scaled.height, recipe, state.geometry, []);
  }
}

// Run one classification at a time; a request during a run is folded into one more run after it.
function classify() {
  if (!state.session) return Promise.resolve();
  if (state.busy) { state.pending = true; return state.busy; }
  state.busy = (async () => {
    do {
      state.pending = false;
      await classifyOnce();
    } while (state.pending);
    state.busy = null;
  })();
  return state.busy;
}

function position(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * (pad.width / r.width), (ev.clientY - r.top) * (pad.height / r.height)];
}

let drawing = false;
let frame = 0;
pad.addEventListener('pointerdown', (ev) => {
  drawing = true;
  pad.setPointerCapture(ev.pointerId);
  const [x, y] = position(ev);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.01, y);
  ctx.stroke();
});
pad.addEventListener('pointermove', (ev) => {
  if (!drawing) return;
  const [x, y] = position(ev);
  ctx.lineTo(x, y);
  ctx.stroke();
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; classify(); });
});
for (const type of ['pointerup', 'pointercancel']) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    classify();
  });
}
document.getElementById('clear').addEventListener('click', () => { resetPad(); showEmpty(); });

async function init() {
  resetPad();
  const contract = await (await fetch('model/labels.json')).json();
  const session = await ort.InferenceSession.create('model/model.onnx', { executionProviders: ['wasm'] });
  if (session.inputNames[0] !== 'pixels' || !session.outputNames.includes('probabilities')) {
    throw new Error(`expected the app-ready model (input 'pixels', output 'probabilities'); found ${session.inputNames} -> ${session.outputNames}`);
  }
  state.contract = contract;
  state.geometry = contractGeometry(contract);
  state.steps = contract.transforms ?? [];
  state.session = session;
  const g = state.geometry;
  document.getElementById('recipe').textContent = contract.preprocess || 'digits';
  document.getElementById('seen').textContent = `${g.height}×${g.width}${g.channels === 3 ? ' RGB' : ''}` +
    (state.steps.length ? ` (${stepsText(state.steps)})` : '');
  preview.setAttribute('aria-label', `what the model sees (${g.height}x${g.width})`);
  statusEl.textContent = `${contract.dataset || 'model'} · ${contract.labels.length} classes · onnxruntime-web ${ort.env.versions?.web ?? ''}`;
  showEmpty();
}

const ready = init().catch((e) => {
  predictionEl.textContent = 'model failed to load';
  predictionEl.classList.add('empty');
  statusEl.textContent = String(e.message || e);
  throw e;
});

// A small API for tests and for curious users in the console.
window.mnistkit = {
  ready,
  classify,
  clear() { resetPad(); showEmpty(); },
  /** Probabilities for N raw uint8 images at the model's shape (Uint8Array or plain array of N*H*W*C values;
   * N*784 for a 1x28x28 model). */
  async classifyPixels(values) {
    await ready;
    const pixels = Uint8Array.from(values);
    const per = pixelCount(state.geometry);
    if (pixels.length === 0 || pixels.length % per !== 0) throw new Error(`${pixels.length} values is not a whole number of ${per}-value images`);
    const n = pixels.length / per;
    const flat = await runModel(pixels, n);
    const c = state.contract.labels.length;
    return Array.from({ length: n }, (_, i) => Array.from(flat.subarray(i * c, (i + 1) * c)));
  },
  get lastPixels() { return state.lastPixels && Array.from(state.lastPixels); },
  get geometry() { return state.geometry; },
  get lastResult() { return state.lastResult; },
  get label() { return state.label; },
  get prediction() { return predictionEl.textContent; },
};
