// The page: draw on the canvas, the app-ready model classifies what you drew, live.
// onnxruntime-web comes from vendor/ (copied from the npm package), never a CDN: the page works offline.
import * as ort from './vendor/ort.wasm.bundle.min.mjs';
import { BlankImageError, preprocess, topK } from './preprocess.mjs';

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

const state = { session: null, contract: null, lastPixels: null, lastResult: null, label: null, busy: null, pending: false };

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
  const img = pctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = pixels[i];
    img.data[4 * i + 3] = 255;
  }
  const tmp = new OffscreenCanvas(28, 28);
  tmp.getContext('2d').putImageData(img, 0, 0);
  pctx.imageSmoothingEnabled = false;
  pctx.drawImage(tmp, 0, 0, preview.width, preview.height);
  state.lastPixels = pixels;
  state.lastResult = Array.from(probabilities);
  state.label = top[0].label;
}

async function runModel(pixels, n) {
  const tensor = new ort.Tensor('uint8', pixels, [n, 28, 28]);
  const out = await state.session.run({ pixels: tensor });
  return out.probabilities.data;
}

async function classifyOnce() {
  const { data, width, height } = ctx.getImageData(0, 0, pad.width, pad.height);
  let pixels;
  try {
    pixels = preprocess(data, width, height, state.contract.preprocess || 'digits');
  } catch (e) {
    if (e instanceof BlankImageError) { showEmpty(); return; }
    throw e;
  }
  showResult(pixels, await runModel(pixels, 1));
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
  state.session = session;
  document.getElementById('recipe').textContent = contract.preprocess || 'digits';
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
  /** Probabilities for N raw 28x28 uint8 images (Uint8Array or plain array of N*784 values). */
  async classifyPixels(values) {
    await ready;
    const pixels = Uint8Array.from(values);
    const n = pixels.length / 784;
    const flat = await runModel(pixels, n);
    const c = state.contract.labels.length;
    return Array.from({ length: n }, (_, i) => Array.from(flat.subarray(i * c, (i + 1) * c)));
  },
  get lastPixels() { return state.lastPixels && Array.from(state.lastPixels); },
  get lastResult() { return state.lastResult; },
  get label() { return state.label; },
  get prediction() { return predictionEl.textContent; },
};
