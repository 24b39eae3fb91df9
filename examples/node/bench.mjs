#!/usr/bin/env node
// Time mnistkit's ONNX models with onnxruntime-node the way `mnistkit bench` times Python's runtimes, for
// `mnistkit bench --devices node`: parity outputs first, then warm-up and per-call latencies.
//
//   node bench.mjs CONFIG.json        ->  one JSON object on stdout
//
// CONFIG: {"cases": [{"model": PATH, "dtype": "float32"|"uint8", "input": NAME, "output": NAME, "dims": [1, 28, 28],
//          "fixed_batch": null}], "threads": [1, 2], "batch_sizes": [1, 64],
//          "parity": {"path": FILE, "count": N}, "warmup_s": 0.2, "min_time_s": 1, "min_reps": 20, "max_reps": N}
// parity.path holds N images in each case's native form, back to back: N*784 float32 (normalized) for
// float models and N*784 uint8 pixels for app-ready ones, as FILE.float32 and FILE.uint8. Batches are the
// parity images cycled, as Python's bench builds them. What is timed: one `await session.run(feeds)` with
// the input tensor built once per batch size (process.hrtime.bigint, nanoseconds; bench-core.mjs, shared with
// the browser's page).
// The output: {"runtime": {...}, "cases": [{"model", "threads", "parity_logits": [[...]], "timings":
// {"1": [ms, ...]}, "error": null}]}. A case that fails is {"error": "one line"}; the run itself exits 0.
import fs from 'node:fs';
import os from 'node:os';
import process from 'node:process';

import { benchSession, oneLine } from '../web/bench-core.mjs';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let ort;
process.env.ORT_DISABLE_TELEMETRY ??= '1'; // before the native library loads: no usage events under ~/.cache/Microsoft/
try {
  ort = await import('onnxruntime-node');
} catch (e) {
  console.log(JSON.stringify({ error: `onnxruntime-node cannot be imported: ${oneLine(e)}` }));
  process.exit(0);
}

function readParity(dtype) {
  const buf = fs.readFileSync(`${config.parity.path}.${dtype}`);
  return dtype === 'float32'
    ? new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)
    : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

const result = {
  runtime: {
    name: 'onnxruntime-node', version: ort.env.versions?.node ?? JSON.parse(fs.readFileSync(
      new URL('./node_modules/onnxruntime-node/package.json', import.meta.url), 'utf8')).version,
    node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? '',
  },
  cases: [],
};
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
for (const c of config.cases) {
  const images = readParity(c.dtype);
  for (const threads of config.threads) {
    const out = { model: c.model, threads, parity_logits: null, timings: {}, error: null };
    result.cases.push(out);
    try {
      const session = await ort.InferenceSession.create(c.model, {
        intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
      });
      Object.assign(out, await benchSession(ort, session, images, c, config, nowMs));
    } catch (e) {
      out.error = oneLine(e);
    }
  }
}
console.log(JSON.stringify(result));
