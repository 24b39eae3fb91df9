// The model's input shape and the transforms its training script applied before ToTensor, in JavaScript,
// for the browser page and the Node example: the same steps as mnistkit/steps.py (Python), which does them the
// way torchvision does on PIL images. labels.json (beside the app-ready model) records both:
//   "input": {"shape": ["N", H, W]} (gray) or ["N", H, W, 3] (RGB, channels last)
//   "transforms": [["pad", 2], ["resize", 32], ["crop", [28, 28]], ["gray", 1]]   (absent: none)
//
// Resize is Pillow's BILINEAR resample as torchvision calls it (antialiased when shrinking, 8-bit fixed-point
// coefficients, the horizontal pass then the vertical one), so its pixels equal Python's exactly.

/** An image: uint8 `data`, row-major, `channels` values per pixel (1 gray, 3 RGB). */
export function image(data, width, height, channels) {
  return { data, width, height, channels };
}

/** {channels, height, width} from labels.json's input shape; MNIST's 1x28x28 when it records none. */
export function contractGeometry(contract) {
  const shape = contract?.input?.shape;
  if (shape === undefined || shape === null) return { channels: 1, height: 28, width: 28 };
  const ok = Array.isArray(shape) && (shape.length === 3 || (shape.length === 4 && shape[3] === 3)) &&
    shape.slice(1, 3).every((d) => Number.isInteger(d) && d > 0 && d <= 1024);
  if (!ok) throw new Error(`labels.json: input shape ${JSON.stringify(shape)}; expected ["N", H, W] or ["N", H, W, 3]`);
  return { channels: shape.length === 4 ? 3 : 1, height: shape[1], width: shape[2] };
}

/** The app-ready model's uint8 input dims after the batch axis: [H, W] (gray) or [H, W, 3] (RGB). */
export function pixelDims(geometry) {
  return geometry.channels === 1 ? [geometry.height, geometry.width] : [geometry.height, geometry.width, 3];
}

/** Values per image in the app-ready model's uint8 input. */
export function pixelCount(geometry) {
  return geometry.height * geometry.width * geometry.channels;
}

export function geometryText(g) {
  return `${g.channels}x${g.height}x${g.width}`;
}

/** The steps as the script wrote them: "Pad(2), Resize(32)". */
export function stepsText(steps) {
  const names = { pad: 'Pad', resize: 'Resize', crop: 'CenterCrop', gray: 'Grayscale' };
  const parts = (steps ?? []).map(([kind, value]) =>
    `${names[kind] ?? kind}(${Array.isArray(value) ? `(${value[0]}, ${value[1]})` : value})`);
  return parts.join(', ') || 'no transforms';
}

/** (height, width) after torchvision's Resize(size): [h, w] exactly, or an int for the shorter side. */
export function resizedSize(h, w, size) {
  if (Array.isArray(size)) return [size[0], size[1]];
  const [short, long] = w <= h ? [w, h] : [h, w];
  const newShort = size, newLong = Math.trunc((size * long) / short);
  return w <= h ? [newLong, newShort] : [newShort, newLong];
}

const PRECISION_BITS = 32 - 8 - 2;

// Pillow's precompute_coeffs for the bilinear (triangle) filter, then normalize_coeffs_8bpc.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 1 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      k[x] = t < 1 ? 1 - t : 0;
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * (1 << PRECISION_BITS)) : Math.trunc(0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = Math.floor(ss / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One pass of Pillow's 8-bit resample along x (horizontal) or y (vertical).
function resamplePass(img, outW, outH, horizontal) {
  const { data, width, channels } = img;
  const { ksize, bounds, kk } = coefficients(horizontal ? img.width : img.height, horizontal ? outW : outH);
  const out = new Uint8Array(outW * outH * channels);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const i = horizontal ? x : y;
      const min = bounds[i * 2], n = bounds[i * 2 + 1], base = i * ksize;
      for (let c = 0; c < channels; c++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let j = 0; j < n; j++) {
          const src = horizontal ? (y * width + min + j) : ((min + j) * width + x);
          ss += data[src * channels + c] * kk[base + j];
        }
        out[(y * outW + x) * channels + c] = clip8(ss);
      }
    }
  }
  return image(out, outW, outH, channels);
}

/** torchvision's Resize on a PIL image: Pillow's BILINEAR, exactly. */
export function resizeImage(img, size) {
  const [nh, nw] = resizedSize(img.height, img.width, size);
  if (nh === img.height && nw === img.width) return img;
  let out = img;
  if (nw !== img.width) out = resamplePass(out, nw, out.height, true);
  if (nh !== img.height) out = resamplePass(out, nw, nh, false);
  return out;
}

function padImage(img, top, bottom, left, right) {
  const { data, width, height, channels } = img;
  const w = width + left + right, h = height + top + bottom;
  const out = new Uint8Array(w * h * channels);
  for (let y = 0; y < height; y++) {
    out.set(data.subarray(y * width * channels, (y + 1) * width * channels), ((y + top) * w + left) * channels);
  }
  return image(out, w, h, channels);
}

// Python's round(): halves to the even neighbour (torchvision's CenterCrop offsets use it).
function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** torchvision's CenterCrop: zero padding first where the crop is larger than the image. */
export function centerCrop(img, size) {
  const [ch, cw] = Array.isArray(size) ? size : [size, size];
  if (ch > img.height || cw > img.width) {
    const dh = Math.max(ch - img.height, 0), dw = Math.max(cw - img.width, 0);
    img = padImage(img, dh >> 1, (dh + 1) >> 1, dw >> 1, (dw + 1) >> 1);
  }
  const top = roundHalfEven((img.height - ch) / 2), left = roundHalfEven((img.width - cw) / 2);
  const out = new Uint8Array(cw * ch * img.channels);
  for (let y = 0; y < ch; y++) {
    const from = ((top + y) * img.width + left) * img.channels;
    out.set(img.data.subarray(from, from + cw * img.channels), y * cw * img.channels);
  }
  return image(out, cw, ch, img.channels);
}

/** RGB -> L as PIL's convert("L") does (ITU-R 601-2 luma, integer arithmetic). */
export function toLuma(img) {
  if (img.channels === 1) return img;
  const n = img.width * img.height;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = img.data[3 * i], g = img.data[3 * i + 1], b = img.data[3 * i + 2];
    out[i] = Math.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536);
  }
  return image(out, img.width, img.height, 1);
}

function toRgb(img) {
  if (img.channels === 3) return img;
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = img.data[i];
  return image(out, img.width, img.height, 3);
}

export class SizeError extends Error {}

/** An image (gray or RGB) -> the model's uint8 pixels ([H*W] gray or [H*W*3] RGB) through the script's steps in
 * order, then the model's channels. Throws SizeError when the result is not the model's height and width. */
export function applySteps(img, steps, geometry) {
  let out = img;
  for (const [kind, value] of steps ?? []) {
    if (kind === 'pad') out = padImage(out, value, value, value, value);
    else if (kind === 'resize') out = resizeImage(out, value);
    else if (kind === 'crop') out = centerCrop(out, value);
    else if (kind === 'gray') { out = toLuma(out); if (value === 3) out = toRgb(out); }
    else throw new Error(`unknown transform '${kind}' in labels.json`);
  }
  out = geometry.channels === 1 ? toLuma(out) : toRgb(out);
  if (out.height !== geometry.height || out.width !== geometry.width) {
    throw new SizeError(`${out.height}x${out.width} after ${stepsText(steps)}; the model takes ` +
      `${geometry.height}x${geometry.width} (${geometryText(geometry)}): give images of that size`);
  }
  return out.data;
}
