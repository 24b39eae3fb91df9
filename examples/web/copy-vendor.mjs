// Copy the few onnxruntime-web files the page needs from node_modules into vendor/ (git-ignored).
// The npm package's dist/ is ~136 MB; the page needs one ES module (the bundle, with its loader inlined) and the WebAssembly binary.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, 'node_modules', 'onnxruntime-web', 'dist');
const vendor = path.join(here, 'vendor');
const FILES = ['ort.wasm.bundle.min.mjs', 'ort-wasm-simd-threaded.wasm'];

if (!fs.existsSync(dist)) {
  console.error(`error: ${dist} not found; run npm install in ${here} first`);
  process.exit(1);
}
fs.mkdirSync(vendor, { recursive: true });
for (const f of FILES) {
  const src = path.join(dist, f);
  if (!fs.existsSync(src)) {
    console.error(`error: ${src} not found (onnxruntime-web changed its dist layout?)`);
    process.exit(1);
  }
  fs.copyFileSync(src, path.join(vendor, f));
}
const version = JSON.parse(fs.readFileSync(path.join(dist, '..', 'package.json'), 'utf8')).version;
fs.writeFileSync(path.join(vendor, 'VERSION'), `onnxruntime-web ${version}\n`);
console.log(`copied ${FILES.join(', ')} (onnxruntime-web ${version}) to ${vendor}`);
