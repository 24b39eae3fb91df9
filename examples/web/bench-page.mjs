// The browser half of `mnistkit bench --devices browser`: onnxruntime-web's WebAssembly backend (SIMD: the
// only build the package ships since 1.19) with ?threads=N worker threads (N > 1 needs cross-origin
// isolation, i.e. COOP/COEP headers from the server; without them onnxruntime-web runs one thread, and the
// result says so). window.mnistkitBench.run(config) does what examples/node/bench.mjs does, timing each
// `await session.run(feeds)` with performance.now() (5 us resolution when cross-origin isolated).
import * as ort from './vendor/ort.wasm.bundle.min.mjs';
import { benchSession, oneLine } from './bench-core.mjs';

ort.env.wasm.wasmPaths = { wasm: new URL('./vendor/ort-wasm-simd-threaded.wasm', import.meta.url).href };
const requested = Number(new URL(window.location.href).searchParams.get('threads') ?? '1');
ort.env.wasm.numThreads = requested;

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
      const session = await ort.InferenceSession.create(c.url, { executionProviders: ['wasm'],
                                                                 graphOptimizationLevel: 'all' });
      Object.assign(out, await benchSession(ort, session, parityCache[c.dtype], c, config,
                                            () => performance.now()));
    } catch (e) {
      out.error = oneLine(e);
    }
  }
  return result;
}

window.mnistkitBench = { run };
