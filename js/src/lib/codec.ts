/**
 * Array codec: TypeScript twin of `mi_widgets/transport/codec.py`.
 *
 * An encoded array is a JSON header plus one little-endian binary buffer. Both sides are
 * checked against `tests/fixtures/codec_vectors.json`, so encoders must match byte for byte.
 */

export type WireDtype = "float32" | "float16" | "uint8" | "int32";

export interface ArrayHeader {
  dtype: WireDtype;
  shape: number[];
  buffer: number;
  /** Only for quantised uint8: codes 0..254 map linearly onto [lo, hi]. */
  range?: [number, number];
  /** "lower": square trailing matrices whose buffer holds only the lower triangle, row by row (zeros above). */
  layout?: "lower";
}

export interface DecodedArray {
  dtype: WireDtype;
  shape: number[];
  data: Float32Array | Int32Array;
  /** The raw codes of a quantised uint8 array as on the wire (255 = non-finite; stored triangle only for layout "lower"). */
  codes?: Uint8Array;
}

type BufferLike = DataView | ArrayBuffer | ArrayBufferView;

const NONFINITE_CODE = 255;
const MAX_CODE = 254;
const ITEM_SIZE: Record<WireDtype, number> = { float32: 4, float16: 2, uint8: 1, int32: 4 };

/** Typed arrays below reinterpret wire bytes in host order, so a big-endian host takes a slow path. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function isWireDtype(d: unknown): d is WireDtype {
  return typeof d === "string" && Object.hasOwn(ITEM_SIZE, d);
}

function asBytes(buf: BufferLike): Uint8Array {
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  return new Uint8Array(buf.buffer as ArrayBuffer, buf.byteOffset, buf.byteLength);
}

/** Bytes starting at an offset aligned for `itemSize`; copies only when the view is misaligned. */
function aligned(bytes: Uint8Array, itemSize: number): Uint8Array {
  return bytes.byteOffset % itemSize === 0 ? bytes : bytes.slice();
}

let halfTable: Float32Array | null = null;

/** All 65536 half-precision values, built on first use: decoding is then one lookup per value. */
function halfLookup(): Float32Array {
  if (halfTable === null) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = halfToFloat(i);
  }
  return halfTable;
}

/** IEEE half-precision bits -> number (NaN and infinities kept). */
export function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** Round half to even, like numpy's `rint`. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5 || (d === 0.5 && f % 2 !== 0)) return f + 1;
  return f;
}

/**
 * number -> IEEE half-precision bits, rounded to nearest even straight from the double
 * (as numpy's float64 -> float16 cast does); overflow gives infinity.
 */
export function floatToHalf(value: number): number {
  if (Number.isNaN(value)) return 0x7e00;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const x = Math.abs(value);
  if (x === Infinity) return sign | 0x7c00;
  if (x < 2 ** -14) return sign | roundHalfEven(x * 2 ** 24); // subnormal; 1024 rolls into the smallest normal
  let e = Math.floor(Math.log2(x));
  if (2 ** e > x) e--;
  else if (2 ** (e + 1) <= x) e++;
  if (e > 15) return sign | 0x7c00;
  const m = roundHalfEven(x / 2 ** (e - 10)); // 1024..2048; 2048 carries into the exponent below
  return sign | Math.min(((e + 15) << 10) + m - 1024, 0x7c00);
}

/** Decode one array of a message. Quantised uint8 and float16 become Float32Array. */
export function decodeArray(header: ArrayHeader, buffers: ReadonlyArray<BufferLike>): DecodedArray {
  const { dtype } = header;
  if (!isWireDtype(dtype))
    throw new Error(`header dtype must be one of float32, float16, uint8, int32, got ${JSON.stringify(dtype)}`);
  const shape = header.shape.map(Number);
  const index = Number(header.buffer ?? 0);
  if (!(index >= 0 && index < buffers.length)) {
    throw new Error(`header points at buffer ${index}, but the message has ${buffers.length} buffer(s)`);
  }
  const lower = header.layout === "lower";
  if (header.layout !== undefined && !lower)
    throw new Error(`header layout must be "lower" or absent, got ${JSON.stringify(header.layout)}`);
  const count = lower ? lowerCount(shape) : shape.reduce((a, b) => a * b, 1);
  const bytes = asBytes(buffers[index]);
  const expected = count * ITEM_SIZE[dtype];
  if (bytes.byteLength !== expected) {
    const what = lower ? `lower-triangle layout of shape [${shape.join(", ")}]` : `shape [${shape.join(", ")}]`;
    throw new Error(`buffer holds ${bytes.byteLength} bytes, but dtype ${dtype} with ${what} needs ${expected}`);
  }
  const flat = decodeDense(dtype, header, shape, count, bytes);
  return lower ? { ...flat, shape, data: expandLower(flat.data, shape) } : flat;
}

/**
 * A decoded array's values as a Float32Array. `decodeArray` returns a fresh array the caller owns,
 * a Float32Array for float32, float16 and uint8: only int32 data is converted (copied).
 */
export function asFloat32(a: DecodedArray): Float32Array {
  return a.data instanceof Float32Array ? a.data : Float32Array.from(a.data);
}

/** A decoded array's values as an Int32Array: int32 data as it is, float data converted (truncated, NaN to 0). */
export function asInt32(a: DecodedArray): Int32Array {
  return a.data instanceof Int32Array ? a.data : Int32Array.from(a.data);
}

/** Decode `result[name]`, which must have `shape`; the errors start with `what` (e.g. "lens", "frame"). */
export function decodeShaped(
  result: Record<string, unknown>,
  buffers: ReadonlyArray<BufferLike>,
  name: string,
  shape: number[],
  what: string,
): DecodedArray {
  const header = result[name] as ArrayHeader | null | undefined;
  if (header === undefined || header === null) throw new Error(`${what} has no ${name}`);
  const a = decodeArray(header, buffers);
  if (a.shape.length !== shape.length || a.shape.some((n, i) => n !== shape[i])) {
    throw new Error(`${what} ${name} must have shape [${shape.join(", ")}], got [${a.shape.join(", ")}]`);
  }
  return a;
}

/** Number of stored values for the lower-triangle layout of `shape` (trailing dims must be square). */
export function lowerCount(shape: number[]): number {
  const n = shape[shape.length - 1];
  if (shape.length < 2 || shape[shape.length - 2] !== n) {
    throw new Error(`lower-triangle layout needs square trailing dimensions, got shape [${shape.join(", ")}]`);
  }
  return shape.slice(0, -2).reduce((a, b) => a * b, 1) * ((n * (n + 1)) / 2);
}

/** Lower-triangle values (row by row) -> dense matrices with zeros above the diagonal. */
function expandLower<T extends Float32Array | Int32Array>(stored: T, shape: number[]): T {
  const n = shape[shape.length - 1];
  const matrices = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  const out = new (stored.constructor as { new (n: number): T })(matrices * n * n);
  let src = 0;
  for (let m = 0; m < matrices; m++) {
    for (let i = 0; i < n; i++) {
      out.set(stored.subarray(src, src + i + 1), m * n * n + i * n);
      src += i + 1;
    }
  }
  return out;
}

function decodeDense(
  dtype: WireDtype,
  header: ArrayHeader,
  shape: number[],
  count: number,
  bytes: Uint8Array,
): DecodedArray {
  switch (dtype) {
    case "float32":
      return {
        dtype,
        shape,
        data: LITTLE_ENDIAN ? copyInto(new Float32Array(count), bytes) : readSlow(bytes, count, "f32"),
      };
    case "int32":
      return {
        dtype,
        shape,
        data: LITTLE_ENDIAN ? copyInto(new Int32Array(count), bytes) : readSlow(bytes, count, "i32"),
      };
    case "float16": {
      const out = new Float32Array(count);
      const table = halfLookup();
      if (LITTLE_ENDIAN) {
        const src = aligned(bytes, 2);
        const halves = new Uint16Array(src.buffer, src.byteOffset, count);
        for (let i = 0; i < count; i++) out[i] = table[halves[i]];
      } else {
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        for (let i = 0; i < count; i++) out[i] = table[view.getUint16(2 * i, true)];
      }
      return { dtype, shape, data: out };
    }
    case "uint8": {
      const [lo, hi] = (header.range ?? [0, 1]).map(Number);
      const codes = bytes.slice();
      // Float32 arithmetic, exactly as the Python decoder does it.
      const lo32 = Math.fround(lo);
      const step = Math.fround((hi - lo) / MAX_CODE);
      const table = new Float32Array(256);
      for (let c = 0; c < 255; c++) table[c] = Math.fround(lo32 + Math.fround(c * step));
      table[NONFINITE_CODE] = NaN;
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = table[codes[i]];
      return { dtype, shape, data: out, codes };
    }
  }
}

/** Copies into a fresh typed array: callers own their data, and misalignment cannot bite. */
function copyInto<T extends Float32Array | Int32Array>(out: T, bytes: Uint8Array): T {
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

function readSlow(bytes: Uint8Array, count: number, kind: "f32" | "i32"): Float32Array | Int32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = kind === "f32" ? new Float32Array(count) : new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = kind === "f32" ? view.getFloat32(4 * i, true) : view.getInt32(4 * i, true);
  return out;
}

/** Encode values as `(header, buffer)`, byte-identical to the Python encoder. */
export function encodeArray(
  values: ArrayLike<number>,
  shape: number[],
  dtype: WireDtype,
  opts: { range?: [number, number]; bufferIndex?: number; layout?: "lower" } = {},
): { header: ArrayHeader; buffer: ArrayBuffer } {
  if (!isWireDtype(dtype))
    throw new Error(`wire dtype must be one of float32, float16, uint8, int32, got ${JSON.stringify(dtype)}`);
  const total = shape.reduce((a, b) => a * b, 1);
  if (values.length !== total)
    throw new Error(`shape [${shape.join(", ")}] needs ${total} values, got ${values.length}`);
  if (opts.layout === "lower") values = selectLower(values, shape);
  const count = values.length;
  const header: ArrayHeader = { dtype, shape: [...shape], buffer: opts.bufferIndex ?? 0 };
  if (opts.layout === "lower") header.layout = "lower";
  const buffer = new ArrayBuffer(count * ITEM_SIZE[dtype]);
  const view = new DataView(buffer);
  switch (dtype) {
    case "float32":
      for (let i = 0; i < count; i++) view.setFloat32(4 * i, values[i], true);
      break;
    case "int32":
      for (let i = 0; i < count; i++) view.setInt32(4 * i, values[i], true);
      break;
    case "float16":
      for (let i = 0; i < count; i++) view.setUint16(2 * i, floatToHalf(values[i]), true);
      break;
    case "uint8": {
      const { codes, lo, hi } = quantise(values, opts.range);
      new Uint8Array(buffer).set(codes);
      header.range = [lo, hi];
      break;
    }
  }
  return { header, buffer };
}

/** The lower triangle (diagonal included) of each trailing square matrix, row by row. */
function selectLower(values: ArrayLike<number>, shape: number[]): number[] {
  const n = shape[shape.length - 1];
  const out: number[] = new Array(lowerCount(shape));
  const matrices = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  let k = 0;
  for (let m = 0; m < matrices; m++) {
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) out[k++] = values[m * n * n + i * n + j];
  }
  return out;
}

/** Codes 0..254 over [lo, hi] (default: finite min/max as float32), 255 for non-finite; float32 maths like numpy. */
function quantise(values: ArrayLike<number>, range?: [number, number]): { codes: Uint8Array; lo: number; hi: number } {
  const n = values.length;
  let lo: number;
  let hi: number;
  if (range === undefined) {
    lo = Infinity;
    hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = Math.fround(values[i]);
      if (Number.isFinite(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo > hi) [lo, hi] = [0, 1];
  } else {
    [lo, hi] = range;
    if (!(Number.isFinite(lo) && Number.isFinite(hi)) || hi < lo) {
      throw new Error(`range must be finite with lo <= hi, got [${lo}, ${hi}]`);
    }
  }
  const span = hi - lo;
  const lo32 = Math.fround(lo);
  const scale = Math.fround(MAX_CODE / span);
  const codes = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = Math.fround(values[i]);
    if (!Number.isFinite(v)) {
      codes[i] = NONFINITE_CODE;
      continue;
    }
    const scaled = span > 0 ? Math.fround(Math.fround(v - lo32) * scale) : 0;
    codes[i] = Math.min(MAX_CODE, Math.max(0, roundHalfEven(scaled)));
  }
  return { codes, lo, hi };
}
