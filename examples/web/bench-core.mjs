// What examples/node/bench.mjs (onnxruntime-node) and bench-page.mjs (onnxruntime-web) share for
// `mnistkit bench --devices node,browser`: the parity run and the per-call timing of one session, the way
// mnistkit's Python bench does it (warm-up of at least 5 calls, then every call timed until min_time_s and
// min_reps). `nowMs` is the runtime's clock in milliseconds; nothing here touches the DOM or Node's APIs.

// `n` images cycled from the `count` parity images, as Python's bench builds a batch.
export function cycled(images, count, n) {
  const out = new images.constructor(n * 784);
  for (let i = 0; i < n; i++) out.set(images.subarray((i % count) * 784, (i % count + 1) * 784), i * 784);
  return out;
}

async function timeCalls(call, config, nowMs) {
  const warmEnd = nowMs() + config.warmup_s * 1e3;
  for (let n = 0; n < 5 || nowMs() < warmEnd; n++) await call();
  const samples = [];
  const deadline = nowMs() + config.min_time_s * 1e3;
  while (samples.length < config.max_reps) {
    const t0 = nowMs();
    await call();
    const t1 = nowMs();
    samples.push(t1 - t0);
    if (samples.length >= config.min_reps && t0 >= deadline) break;
  }
  return samples;
}

// Run a loaded session on the parity images (native dtype 'float32' or 'uint8'), then time it at each batch
// size; returns {parity_logits: [[...] per image], timings: {batch: [ms per call]}}. Releases the session.
export async function benchSession(ort, session, images, dtype, config, nowMs) {
  const tail = dtype === 'float32' ? [1, 28, 28] : [28, 28];
  const input = session.inputNames[0];
  const output = session.outputNames.includes('logits') ? 'logits' : session.outputNames[0];
  const n = config.parity.count;
  try {
    const logits = (await session.run({ [input]: new ort.Tensor(dtype, images, [n, ...tail]) }))[output];
    const classes = logits.dims[1];
    const parity = Array.from({ length: n }, (_, i) => Array.from(logits.data.subarray(i * classes, (i + 1) * classes)));
    const timings = {};
    for (const b of config.batch_sizes) {
      const feeds = { [input]: new ort.Tensor(dtype, cycled(images, n, b), [b, ...tail]) };
      timings[b] = await timeCalls(() => session.run(feeds, [output]), config, nowMs);
    }
    return { parity_logits: parity, timings };
  } finally {
    await session.release();
  }
}

export function oneLine(e) {
  return String(e?.message ?? e).split('\n')[0].slice(0, 300);
}
