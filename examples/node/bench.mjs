#!/usr/bin/env node
// Time mnistkit's ONNX models with onnxruntime-node the way `mnistkit bench` times Python's runtimes, for
// `mnistkit bench --devices node`: parity outputs first, then warm-up and per-call latencies.
//
//   node bench.mjs CONFIG.json        ->  one JSON object on stdout
//
// CONFIG: {"cases": [{"model": PATH, "dtype": "float32"|"uint8"}], "threads": [1, 2], "batch_sizes": [1, 64],
//          "parity": {"path": FILE, "count": N}, "warmup_s": 0.2, "min_time_s": 1, "min_reps": 20, "max_reps": N}
// parity.path holds N images in each case's native form, back to back: N*784 float32 (normalized) for
// float models and N*784 uint8 pixels for app-ready ones, as FILE.float32 and FILE.uint8. Batches are the
// parity images cycled, as Python's bench builds them. What is timed: one `await session.run(feeds)` with
// the input tensor built once per batch size (process.hrtime.bigint, nanoseconds).
// The output: {"runtime": {...}, "cases": [{"model", "threads", "parity_logits": [[...]], "timings":
// {"1": [ms, ...]}, "error": null}]}. A case that fails is {"error": "one line"}; the run itself exits 0.
import fs from 'node:fs';
import os from 'node:os';
import process from 'node:process';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let ort;
try {
  ort = await import('onnxruntime-node');
} catch (e) {
  console.log(JSON.stringify({ error: `onnxruntime-node cannot be imported: ${String(e.message).split('\n')[0]}` }));
  process.exit(0);
}

function readParity(dtype) {
  const buf = fs.readFileSync(`${config.parity.path}.${dtype}`);
  return dtype === 'float32'
    ? new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)
    : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function cycled(images, count, n) {
  const out = new images.constructor(n * 784);
  for (let i = 0; i < n; i++) out.set(images.subarray((i % count) * 784, (i % count + 1) * 784), i * 784);
  return out;
}

async function timeCalls(call) {
  const clock = process.hrtime.bigint;
  const warmEnd = clock() + BigInt(Math.round(config.warmup_s * 1e9));
  for (let n = 0; n < 5 || clock() < warmEnd; n++) await call();
  const samples = [];
  const deadline = clock() + BigInt(Math.round(config.min_time_s * 1e9));
  while (samples.length < config.max_reps) {
    const t0 = clock();
    await call();
    const t1 = clock();
    samples.push(Number(t1 - t0) / 1e6);
    if (samples.length >= config.min_reps && t0 >= deadline) break;
  }
  return samples;
}

const result = {
  runtime: {
    name: 'onnxruntime-node', version: ort.env.versions?.node ?? JSON.parse(fs.readFileSync(
      new URL('./node_modules/onnxruntime-node/package.json', import.meta.url), 'utf8')).version,
    node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? '',
  },
  cases: [],
};
for (const c of config.cases) {
  const images = readParity(c.dtype);
  const tail = c.dtype === 'float32' ? [1, 28, 28] : [28, 28];
  for (const threads of config.threads) {
    const out = { model: c.model, threads, parity_logits: null, timings: {}, error: null };
    result.cases.push(out);
    try {
      const session = await ort.InferenceSession.create(c.model, {
        intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
      });
      const input = session.inputNames[0];
      const output = session.outputNames.includes('logits') ? 'logits' : session.outputNames[0];
      const n = config.parity.count;
      const parity = await session.run({ [input]: new ort.Tensor(c.dtype, images, [n, ...tail]) });
      const logits = parity[output];
      const classes = logits.dims[1];
      out.parity_logits = Array.from({ length: n }, (_, i) => Array.from(logits.data.subarray(i * classes, (i + 1) * classes)));
      for (const b of config.batch_sizes) {
        const feeds = { [input]: new ort.Tensor(c.dtype, cycled(images, n, b), [b, ...tail]) };
        out.timings[b] = await timeCalls(() => session.run(feeds, [output]));
      }
      await session.release();
    } catch (e) {
      out.error = String(e.message ?? e).split('\n')[0].slice(0, 300);
    }
  }
}
console.log(JSON.stringify(result));
