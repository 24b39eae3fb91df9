// What examples/node/bench.mjs (onnxruntime-node) and bench-page.mjs (onnxruntime-web) share for
// `mnistkit bench --devices node,browser`: the parity run and the per-call timing of one session, the way
// mnistkit's Python bench does it (warm-up of at least 5 calls, then every call timed until min_time_s and
// min_reps). `nowMs` is the runtime's clock in milliseconds; nothing here touches the DOM or Node's APIs.

// `n` images cycled from the `count` parity images (`per` values each), as Python's bench builds a batch.
export function cycled(images, count, n, per = 784) {
  const out = new images.constructor(n * per);
  for (let i = 0; i < n; i++) out.set(images.subarray((i % count) * per, (i % count + 1) * per), i * per);
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
// `c` is the case mnistkit sends: dtype, and the model's signature as Python read it (input and output names,
// `dims` after the batch axis, `fixed_batch` for a model that takes only that many images per call: a batch
// is then run as that many-image calls, the last padded with the first images, as Python's backends do).
export async function benchSession(ort, session, images, c, config, nowMs) {
  const dtype = c.dtype;
  const dims = c.dims ?? (dtype === 'float32' ? [1, 28, 28] : [28, 28]);
  const per = dims.reduce((a, b) => a * b, 1);
  const input = c.input ?? session.inputNames[0];
  const output = c.output ?? (session.outputNames.includes('logits') ? 'logits' : session.outputNames[0]);
  const n = config.parity.count;
  // the feeds of one batch of b images (cycled from the parity images): one call, or ceil(b / fixed) calls
  const feedsFor = (b) => {
    const step = c.fixed_batch ?? b;
    const calls = Math.ceil(b / step);
    const data = cycled(images, n, calls * step, per);
    return Array.from({ length: calls }, (_, k) => ({
      [input]: new ort.Tensor(dtype, data.subarray(k * step * per, (k + 1) * step * per), [step, ...dims]),
    }));
  };
  try {
    const parity = [];
    for (const feeds of feedsFor(n)) {
      const logits = (await session.run(feeds, [output]))[output];
      const classes = logits.dims[1];
      for (let i = 0; i < logits.dims[0] && parity.length < n; i++) {
        parity.push(Array.from(logits.data.subarray(i * classes, (i + 1) * classes)));
      }
    }
    const timings = {};
    for (const b of config.batch_sizes) {
      const all = feedsFor(b);
      const one = all[0];
      timings[b] = await timeCalls(all.length === 1 ? () => session.run(one, [output])
        : async () => { for (const feeds of all) await session.run(feeds, [output]); }, config, nowMs);
    }
    return { parity_logits: parity, timings };
  } finally {
    await session.release();
  }
}

export function oneLine(e) {
  return String(e?.message ?? e).split('\n')[0].slice(0, 300);
}
