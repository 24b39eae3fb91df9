#!/usr/bin/env node
// Classify images with mnistkit's app-ready ONNX model in Node.js (onnxruntime-node, CPU).
//
//   node predict.mjs --model app/model.onnx digit.png other.png
//   node predict.mjs --model app/model.onnx --raw images.bin --json      # N*784 uint8 pixels (N*H*W*C)
//
// The model contract (mnistkit export --format all writes it to app/): input `pixels` uint8 [N,28,28]
// (0-255, light on dark as in the dataset; [N,H,W] or [N,H,W,3] for a model of another input shape),
// outputs `logits` and `probabilities` float32 [N,C]. Labels, the input shape, the transforms and the
// preprocessing recipe come from labels.json beside the model, because ONNX Runtime's JavaScript API
// cannot read a model's metadata. PNG files are prepared by the recorded recipe and transforms
// (../web/preprocess.mjs, ../web/steps.mjs) as mnistkit's Python does; raw buffers are taken as they are.
//
// Exit codes: 0 ok, 1 bad input (one line on stderr), 2 bad usage.

import fs from 'node:fs';
import path from 'node:path';
import process from 'node:process';

import { BlankImageError, RECIPES, prepare, topK } from '../web/preprocess.mjs';
import { SizeError, contractGeometry, geometryText, pixelCount, pixelDims } from '../web/steps.mjs';

const USAGE = `usage: node predict.mjs --model MODEL.onnx [--labels labels.json] [--recipe digits|objects|image]
                         [--top-k K] [--json] (--raw FILE | IMAGE.png ...)`;

class UsageError extends Error {}
class InputError extends Error {}

function parseArgs(argv) {
  const opts = { model: null, labels: null, recipe: null, topK: 3, json: false, raw: null, images: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--model') opts.model = value();
    else if (a === '--labels') opts.labels = value();
    else if (a === '--recipe') opts.recipe = value();
    else if (a === '--top-k') opts.topK = Number.parseInt(value(), 10);
    else if (a === '--json') opts.json = true;
    else if (a === '--raw') opts.raw = value();
    else if (a === '-h' || a === '--help') { console.log(USAGE); process.exit(0); }
    else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else opts.images.push(a);
  }
  if (!opts.model) throw new UsageError('--model is required');
  if (!opts.raw && opts.images.length === 0) throw new UsageError('give --raw FILE or at least one image');
  if (!Number.isInteger(opts.topK) || opts.topK < 1) throw new UsageError('--top-k must be an integer >= 1');
  if (opts.recipe && !RECIPES.includes(opts.recipe)) throw new UsageError(`--recipe ${opts.recipe}: expected ${RECIPES.join(', ')}`);
  return opts;
}

function readContract(modelPath, labelsPath) {
  const file = labelsPath ?? path.join(path.dirname(modelPath), 'labels.json');
  if (!fs.existsSync(file)) throw new InputError(`${file}: no such file (labels.json is written beside the app-ready model by mnistkit export --format all; pass --labels)`);
  let contract;
  try {
    contract = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new InputError(`${file}: not valid JSON (${e.message})`);
  }
  if (!Array.isArray(contract.labels) || contract.labels.length === 0) throw new InputError(`${file}: has no "labels" list`);
  try {
    contract.geometry = contractGeometry(contract);
  } catch (e) {
    throw new InputError(`${file}: ${e.message.replace(/^labels\.json: /, '')}`);
  }
  return contract;
}

async function loadModel(ort, modelPath, geometry) {
  if (!fs.existsSync(modelPath)) throw new InputError(`${modelPath}: no such file`);
  let session;
  try {
    session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'] });
  } catch (e) {
    throw new InputError(`${modelPath}: not a loadable ONNX model (${String(e.message).split('\n')[0]})`);
  }
  const meta = session.inputMetadata?.[0];
  const okInput = session.inputNames.length === 1 && session.inputNames[0] === 'pixels' &&
    (!meta || meta.type === undefined || meta.type === 'uint8');
  if (!okInput || !session.outputNames.includes('probabilities')) {
    const found = session.inputNames.map((n, i) => `${n}${session.inputMetadata?.[i]?.type ? ' ' + session.inputMetadata[i].type : ''}`).join(', ');
    throw new InputError(`${modelPath}: expected the app-ready model (input 'pixels' uint8 [N,${pixelDims(geometry)}]; outputs logits, probabilities); found input ${found} and outputs ${session.outputNames.join(', ')}`);
  }
  return session;
}

function readPng(PNG, file, recipe, contract) {
  if (!fs.existsSync(file)) throw new InputError(`${file}: no such file`);
  const buf = fs.readFileSync(file);
  if (buf.length === 0) throw new InputError(`${file}: empty file; expected a PNG image`);
  if (buf.subarray(0, 8).toString('latin1') !== '\x89PNG\r\n\x1a\n') {
    throw new InputError(`${file}: not a PNG image; this example reads PNG files and raw uint8 buffers (--raw)`);
  }
  let png;
  try {
    png = PNG.sync.read(buf);
  } catch (e) {
    throw new InputError(`${file}: not a PNG image (${e.message}); this example reads PNG files and raw uint8 buffers`);
  }
  try {
    return prepare(png.data, png.width, png.height, recipe, contract.geometry, contract.transforms ?? []);
  } catch (e) {
    if (e instanceof BlankImageError) throw new InputError(`${file}: the image is blank; nothing to classify`);
    if (e instanceof SizeError) throw new InputError(`${file}: ${e.message}`);
    throw new InputError(`${file}: ${e.message}`);
  }
}

function readRaw(file, geometry) {
  if (!fs.existsSync(file)) throw new InputError(`${file}: no such file`);
  const buf = fs.readFileSync(file);
  const per = pixelCount(geometry);
  if (buf.length === 0 || buf.length % per !== 0) {
    throw new InputError(`${file}: ${buf.length} bytes is not a whole number of ${pixelDims(geometry).join('x')} uint8 images (${per} bytes each; the model takes ${geometryText(geometry)})`);
  }
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  // imported here so that usage errors answer without loading the native runtime
  if (!fs.existsSync(opts.model)) throw new InputError(`${opts.model}: no such file`);
  // onnxruntime-node 1.30 queues usage events and a device id under ~/.cache/Microsoft/ unless this is set before
  // its native library loads (a value the user set is kept)
  process.env.ORT_DISABLE_TELEMETRY ??= '1';
  const ort = (await import('onnxruntime-node')).default;
  const contract = readContract(opts.model, opts.labels);
  const recipe = opts.recipe ?? contract.preprocess ?? 'digits';
  const geometry = contract.geometry;
  const per = pixelCount(geometry);
  const session = await loadModel(ort, opts.model, geometry);

  let pixels, names;
  if (opts.raw) {
    pixels = readRaw(opts.raw, geometry);
    names = Array.from({ length: pixels.length / per }, (_, i) => `${path.basename(opts.raw)}[${i}]`);
  } else {
    const { PNG } = await import('pngjs');
    const images = opts.images.map((f) => readPng(PNG, f, recipe, contract));
    pixels = new Uint8Array(images.length * per);
    images.forEach((img, i) => pixels.set(img, i * per));
    names = opts.images.map((f) => path.basename(f));
  }
  const n = names.length;
  let results;
  try {
    results = await session.run({ pixels: new ort.Tensor('uint8', pixels, [n, ...pixelDims(geometry)]) });
  } catch (e) {
    throw new InputError(`${opts.model}: does not take uint8 [N,${pixelDims(geometry)}] as labels.json says (${String(e.message).split('\n')[0]})`);
  }
  const probs = results.probabilities.data;
  const c = contract.labels.length;
  if (probs.length !== n * c) throw new InputError(`${opts.model}: ${probs.length / n} outputs per image but ${c} labels`);
  const predictions = names.map((name, i) => {
    const p = Array.from(probs.subarray(i * c, (i + 1) * c));
    const top = topK(p, contract.labels, opts.topK);
    return { input: name, label: top[0].label, index: top[0].index, probabilities: p,
             top_k: top.map(({ label, probability }) => ({ label, probability })) };
  });
  if (opts.json) {
    process.stdout.write(JSON.stringify({ model: opts.model, runtime: `onnxruntime-node ${ort.env.versions?.node ?? ''}`.trim(),
                                          recipe, predictions }) + '\n');
  } else {
    for (const p of predictions) {
      console.log(`${p.input}: ${p.label}   ` + p.top_k.map((t) => `${t.label} ${t.probability.toFixed(3)}`).join('  '));
    }
  }
}

main().catch((e) => {
  process.stderr.write(`error: ${e.message}\n`);
  process.exit(e instanceof UsageError ? 2 : 1);
});
