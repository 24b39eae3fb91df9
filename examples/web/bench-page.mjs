// The browser half of `mnistkit bench --devices browser`: onnxruntime-web's WebAssembly backend (SIMD: the
// only build the package ships since 1.19) with ?threads=N worker threads (N > 1 needs cross-origin
// isolation, i.e. COOP/COEP headers from the server; without them onnxruntime-web runs one thread, and the
// result says so). window.mnistkitBench.run(config) does what examples/node/bench.mjs does, timing each
// `await session.run(feeds)` with performance.now() (5 us resolution when cross-origin isolated).
import * as ort from './vendor/ort.wasm.bundle.min.mjs';

ort.env.wasm.wasmPaths = { wasm: new URL('./vendor/ort-wasm-simd-threaded.wasm', import.meta.url).href };
const requested = Number(new URL(window.location.href).searchParams.get('threads') ?? '1');
ort.env.wasm.numThreads = requested;

function cycled(images, count, n) {
  const out = new images.constructor(n * 784);
  for (let i = 0; i < n; i++) out.set(images.subarray((i % count) * 784, (i % count + 1) * 784), i * 784);
  return out;
}

async function timeCalls(call, config) {
  const warmEnd = performance.now() + config.warmup_s * 1e3;
  for (let n = 0; n < 5 || performance.now() < warmEnd; n++) await call();
  const samples = [];
  const deadline = performance.now() + config.min_time_s * 1e3;
  while (samples.length < config.max_reps) {
    const t0 = performance.now();
    await call();
    const t1 = performance.now();
    samples.push(t1 - t0);
    if (samples.length >= config.min_reps && t0 >= deadline) break;
  }
  return samples;
}

async function run(config) {
  const result = {
    runtime: {
      name: 'onnxruntime-web', version: ort.env.versions?.web ?? '', backend: 'wasm', simd: true,
      threads_requested: requested, cross_origin_isolated: window.crossOriginIsolated,
      threads: window.crossOriginIsolated ? requested : 1, user_agent: navigator.userAgent,
      hardware_concurrency: navigator.hardwareConcurrency,
    },
    cases: [],
  };
  const parityCache = {};
  for (const c of config.cases) {
    const out = { model: c.model, threads: result.runtime.threads, parity_logits: null, timings: {}, error: null };
    result.cases.push(out);
    try {
      if (!parityCache[c.dtype]) {
        const buf = await (await fetch(`${config.parity.url}.${c.dtype}`)).arrayBuffer();
        parityCache[c.dtype] = c.dtype === 'float32' ? new Float32Array(buf) : new Uint8Array(buf);
      }
      const images = parityCache[c.dtype];
      const tail = c.dtype === 'float32' ? [1, 28, 28] : [28, 28];
      const session = await ort.InferenceSession.create(c.url, { executionProviders: ['wasm'],
                                                                 graphOptimizationLevel: 'all' });
      const input = session.inputNames[0];
      const output = session.outputNames.includes('logits') ? 'logits' : session.outputNames[0];
      const n = config.parity.count;
      const parity = await session.run({ [input]: new ort.Tensor(c.dtype, images, [n, ...tail]) });
      const logits = parity[output];
      const classes = logits.dims[1];
      out.parity_logits = Array.from({ length: n }, (_, i) => Array.from(logits.data.subarray(i * classes, (i + 1) * classes)));
      for (const b of config.batch_sizes) {
        const feeds = { [input]: new ort.Tensor(c.dtype, cycled(images, n, b), [b, ...tail]) };
        out.timings[b] = await timeCalls(() => session.run(feeds, [output]), config);
      }
      await session.release();
    } catch (e) {
      out.error = String(e?.message ?? e).split('\n')[0].slice(0, 300);
    }
  }
  return result;
}

window.mnistkitBench = { run };
