// mnistkit's preprocessing recipes in JavaScript, for the browser page and the Node example.
//
// The same steps as mnistkit/preprocess.py (Python):
//   digits  (MNIST):         grayscale; invert dark-on-light; crop to the ink; fit a 20x20 box keeping
//                            the aspect ratio; place in 28x28 so the centre of mass is at the centre.
//   objects (Fashion-MNIST): grayscale; invert light backgrounds; crop; fit the longest edge to 28; centre.
// Images already 28x28 and light-on-dark pass through unchanged. The result is what a 1x28x28 app-ready
// model takes: uint8 pixels [28*28], 0-255, light ink on black. prepare() (below) adds the `image` recipe and
// models of other input shapes (the transforms their script records, steps.mjs).
//
// Resizing is an antialiased Lanczos-3 resample like Pillow's; the two implementations round
// differently, so a pixel may differ by one or two levels between Python and JavaScript.

import { applySteps, image } from './steps.mjs';

export const MIN_SIDE = 8;
export const RECIPES = ['digits', 'objects', 'image'];
export const DIGIT_GEOMETRY = Object.freeze({ channels: 1, height: 28, width: 28 });
const INK_THRESHOLD = 0.15;

export class BlankImageError extends Error {
  constructor(message = 'the image is blank: draw a digit') {
    super(message);
    this.name = 'BlankImageError';
  }
}

/** RGBA bytes (Uint8Array/Uint8ClampedArray, width*height*4) -> Float32Array luminance 0-255.
 * Transparent pixels become background: if the opaque pixels are dark, on white; else on black. */
export function toGray(rgba, width, height) {
  const n = width * height;
  const lum = new Float32Array(n);
  const alpha = new Float32Array(n);
  let opaqueSum = 0, opaqueCount = 0, anyTransparent = false;
  for (let i = 0; i < n; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2], a = rgba[4 * i + 3] / 255;
    lum[i] = 0.299 * r + 0.587 * g + 0.114 * b;
    alpha[i] = a;
    if (a < 1) anyTransparent = true;
    if (a > 0.5) { opaqueSum += lum[i]; opaqueCount++; }
  }
  if (!anyTransparent) return lum;
  const background = opaqueCount > 0 && opaqueSum / opaqueCount < 128 ? 255 : 0;
  for (let i = 0; i < n; i++) lum[i] = lum[i] * alpha[i] + background * (1 - alpha[i]);
  return lum;
}

function median(values) {
  const s = Float32Array.from(values).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function border(gray, w, h) {
  const out = [];
  for (let x = 0; x < w; x++) { out.push(gray[x], gray[(h - 1) * w + x]); }
  for (let y = 1; y < h - 1; y++) { out.push(gray[y * w], gray[y * w + w - 1]); }
  return out;
}

function lanczos(x) {
  const a = 3;
  if (x === 0) return 1;
  if (x <= -a || x >= a) return 0;
  const px = Math.PI * x;
  return (a * Math.sin(px) * Math.sin(px / a)) / (px * px);
}

// One separable pass of an antialiased resample (the filter widens when shrinking).
function resample1d(src, srcLen, dstLen, count, stride, step) {
  const scale = srcLen / dstLen;
  const filterScale = Math.max(scale, 1);
  const support = 3 * filterScale;
  const out = new Float32Array(dstLen * count);
  for (let i = 0; i < dstLen; i++) {
    const center = (i + 0.5) * scale;
    const lo = Math.max(0, Math.floor(center - support));
    const hi = Math.min(srcLen, Math.ceil(center + support));
    const weights = [];
    let total = 0;
    for (let j = lo; j < hi; j++) {
      const wgt = lanczos((j + 0.5 - center) / filterScale);
      weights.push(wgt);
      total += wgt;
    }
    for (let c = 0; c < count; c++) {
      let acc = 0;
      for (let j = lo; j < hi; j++) acc += src[c * stride + j * step] * weights[j - lo];
      out[c * dstLen + i] = total ? acc / total : 0;
    }
  }
  return out;
}

/** Resize a float image (row-major, w x h) to (nw x nh). */
export function resize(gray, w, h, nw, nh) {
  nw = Math.max(1, nw); nh = Math.max(1, nh);
  const rows = resample1d(gray, w, nw, h, w, 1);             // [h][nw]
  const cols = resample1d(rows, h, nh, nw, 1, nw);           // [nw][nh] (column-major)
  const out = new Float32Array(nw * nh);
  for (let x = 0; x < nw; x++) for (let y = 0; y < nh; y++) out[y * nw + x] = cols[x * nh + y];
  return out;
}

export function isDatasetReady(gray, w, h) {
  return w === 28 && h === 28 && median(border(gray, w, h)) <= 127;
}

/** Grayscale float image (any polarity) -> Uint8Array(784) by recipe. Throws BlankImageError. */
export function applyRecipe(grayIn, w, h, recipe) {
  if (recipe !== 'digits' && recipe !== 'objects') throw new Error(`unknown preprocessing recipe '${recipe}'`);
  if (w < MIN_SIDE || h < MIN_SIDE) throw new Error(`image is ${w}x${h} pixels; expected at least ${MIN_SIDE}x${MIN_SIDE}`);
  let gray = Float32Array.from(grayIn);
  if (median(border(gray, w, h)) > 127) for (let i = 0; i < gray.length; i++) gray[i] = 255 - gray[i];
  const bg = median(border(gray, w, h));
  let peak = 0;
  for (let i = 0; i < gray.length; i++) {
    gray[i] = Math.min(255, Math.max(0, gray[i] - bg));
    if (gray[i] > peak) peak = gray[i];
  }
  if (peak < 16) throw new BlankImageError();
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const v = (gray[y * w + x] *= 255 / peak);
    if (v > INK_THRESHOLD * 255) {
      if (x < x0) x0 = x; if (x > x1) x1 = x;
      if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
  }
  const cw = x1 - x0 + 1, ch = y1 - y0 + 1;
  const crop = new Float32Array(cw * ch);
  for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) crop[y * cw + x] = gray[(y0 + y) * w + (x0 + x)];
  const box = recipe === 'digits' ? 20 : 28;
  const scale = box / Math.max(cw, ch);
  const fw = Math.max(1, Math.round(cw * scale)), fh = Math.max(1, Math.round(ch * scale));
  const fitted = resize(crop, cw, ch, fw, fh);
  for (let i = 0; i < fitted.length; i++) fitted[i] = Math.min(255, Math.max(0, fitted[i]));
  let top, left;
  if (recipe === 'digits') {
    let total = 0, sy = 0, sx = 0;
    for (let y = 0; y < fh; y++) for (let x = 0; x < fw; x++) {
      const v = fitted[y * fw + x];
      total += v; sy += v * y; sx += v * x;
    }
    const cy = total > 0 ? sy / total : (fh - 1) / 2;
    const cx = total > 0 ? sx / total : (fw - 1) / 2;
    top = Math.round(13.5 - cy); left = Math.round(13.5 - cx);
  } else {
    top = Math.floor((28 - fh) / 2); left = Math.floor((28 - fw) / 2);
  }
  const out = new Uint8Array(28 * 28);
  for (let y = 0; y < fh; y++) for (let x = 0; x < fw; x++) {
    const ty = top + y, tx = left + x;
    if (ty >= 0 && ty < 28 && tx >= 0 && tx < 28) out[ty * 28 + tx] = Math.round(fitted[y * fw + x]);
  }
  return out;
}

/** RGBA image -> Uint8Array(784) ready for the app-ready model. */
export function preprocess(rgba, width, height, recipe) {
  const gray = toGray(rgba, width, height);
  if (isDatasetReady(gray, width, height)) return Uint8Array.from(gray, (v) => Math.round(v));
  return applyRecipe(gray, width, height, recipe);
}

/** RGBA image -> the app-ready model's uint8 pixels at `geometry` ({channels, height, width}; steps.mjs reads it
 * from labels.json), as mnistkit's Python prepares an image file:
 *   digits, objects: the recipe above gives MNIST's 28x28, then the script's transforms (`steps`: a LeNet-5's
 *                    Pad(2) makes it 32x32);
 *   image:           RGB as torchvision's ImageFolder loads it (alpha dropped), then the transforms.
 * Throws BlankImageError, or SizeError (steps.mjs) when the result is not the model's size. */
export function prepare(rgba, width, height, recipe, geometry = DIGIT_GEOMETRY, steps = []) {
  if (recipe === 'image') {
    const n = width * height;
    const rgb = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) {
      rgb[3 * i] = rgba[4 * i]; rgb[3 * i + 1] = rgba[4 * i + 1]; rgb[3 * i + 2] = rgba[4 * i + 2];
    }
    return applySteps(image(rgb, width, height, 3), steps, geometry);
  }
  const pixels = preprocess(rgba, width, height, recipe);
  const digits = geometry.channels === 1 && geometry.height === 28 && geometry.width === 28;
  return digits && !(steps ?? []).length ? pixels : applySteps(image(pixels, 28, 28, 1), steps, geometry);
}

/** Softmax-free helpers shared by both examples. */
export function topK(probabilities, labels, k) {
  return Array.from(probabilities, (p, i) => ({ label: labels[i], index: i, probability: p }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, k);
}
