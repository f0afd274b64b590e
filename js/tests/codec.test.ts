// @vitest-environment node
import { describe, expect, test } from "vitest";
import {
  type ArrayHeader,
  asFloat32,
  asInt32,
  decodeArray,
  decodeShaped,
  encodeArray,
  floatToHalf,
  halfToFloat,
  type WireDtype,
} from "../src/lib/codec";
import { b64, fixture, num, offsetView } from "./helpers";

interface CodecCase {
  name: string;
  values: Array<number | string>;
  shape: number[];
  dtype: WireDtype;
  range: [number, number] | null;
  layout: "dense" | "lower";
  header: ArrayHeader;
  bytes: string;
  decoded: Array<number | string>;
}

const cases = fixture<CodecCase[]>("codec_vectors.json");

function expectSame(actual: ArrayLike<number>, expected: number[]): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Object.is(actual[i], expected[i]), `index ${i}: ${actual[i]} vs ${expected[i]}`).toBe(true);
  }
}

describe.each(cases)("vector $name", (c) => {
  test("decodes to the Python values, at any byte offset", () => {
    const bytes = b64(c.bytes);
    for (const buffer of [bytes.buffer as ArrayBuffer, offsetView(bytes, 1), offsetView(bytes, 4), bytes]) {
      const out = decodeArray(c.header, [buffer]);
      expect(out.shape).toEqual(c.shape);
      expect(out.dtype).toBe(c.dtype);
      expectSame(out.data, c.decoded.map(num));
      if (c.dtype === "uint8") expect([...out.codes!]).toEqual([...bytes]);
    }
  });

  test("encodes to exactly the Python bytes and header", () => {
    const { header, buffer } = encodeArray(c.values.map(num), c.shape, c.dtype, {
      ...(c.range ? { range: c.range } : {}),
      ...(c.layout === "lower" ? { layout: "lower" as const } : {}),
    });
    expect([...new Uint8Array(buffer)]).toEqual([...b64(c.bytes)]);
    expect(header).toEqual(c.header);
  });
});

describe("decodeArray checks", () => {
  const header: ArrayHeader = { dtype: "float16", shape: [2, 3], buffer: 0 };

  test("names expected and actual byte counts", () => {
    expect(() => decodeArray(header, [new ArrayBuffer(10)])).toThrow(
      "buffer holds 10 bytes, but dtype float16 with shape [2, 3] needs 12",
    );
  });

  test("rejects a missing buffer and an unknown dtype", () => {
    expect(() => decodeArray({ ...header, buffer: 1 }, [new ArrayBuffer(12)])).toThrow(
      "buffer 1, but the message has 1 buffer(s)",
    );
    expect(() => decodeArray({ ...header, dtype: "float64" as WireDtype }, [new ArrayBuffer(48)])).toThrow("dtype");
  });

  test("uses the buffer the header points at", () => {
    const { header: h, buffer } = encodeArray([1, 2], [2], "int32", { bufferIndex: 1 });
    expect(h.buffer).toBe(1);
    expect([...decodeArray(h, [new ArrayBuffer(0), buffer]).data]).toEqual([1, 2]);
  });
});

describe("half precision", () => {
  test("every non-NaN half survives halfToFloat -> floatToHalf", () => {
    for (let bits = 0; bits < 65536; bits++) {
      const v = halfToFloat(bits);
      if (Number.isNaN(v)) continue;
      expect(floatToHalf(v)).toBe(bits);
    }
  });

  test("rounds half to even and overflows to infinity", () => {
    expect(floatToHalf(2049)).toBe(floatToHalf(2048)); // tie -> even mantissa
    expect(floatToHalf(2051)).toBe(floatToHalf(2052));
    expect(floatToHalf(65519.99)).toBe(0x7bff);
    expect(floatToHalf(65520)).toBe(0x7c00);
    expect(floatToHalf(-1e9)).toBe(0xfc00);
    expect(floatToHalf(2 ** -25)).toBe(0); // tie between 0 and the smallest subnormal
    expect(floatToHalf(2 ** -25 * 1.0001)).toBe(1);
    expect(floatToHalf(NaN)).toBe(0x7e00);
  });

  test("decodes 1M float16 values about as fast as a plain copy loop", () => {
    // Relative to a baseline, since CI machines differ by 10x in absolute speed.
    const n = 1 << 20;
    const bytes = new Uint8Array(2 * n);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    const header: ArrayHeader = { dtype: "float16", shape: [1024, 1024], buffer: 0 };
    const src = new Float32Array(n);
    const best = (fn: () => void) => {
      let min = Infinity;
      for (let k = 0; k < 5; k++) {
        const t0 = performance.now();
        fn();
        min = Math.min(min, performance.now() - t0);
      }
      return min;
    };
    const baseline = best(() => {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] * 2;
    });
    const view = offsetView(bytes, 2);
    const decode = best(() => expect(decodeArray(header, [view]).data.length).toBe(n));
    expect(decode).toBeLessThan(4 * baseline + 5);
  });
});

describe("typed views of decoded arrays", () => {
  const decode = (values: number[], dtype: WireDtype) => {
    const { header, buffer } = encodeArray(values, [values.length], dtype);
    return decodeArray(header, [buffer]);
  };

  test("asFloat32 and asInt32 hand back decodeArray's own array when the type fits, and convert otherwise", () => {
    for (const dtype of ["float32", "float16", "uint8"] as const) {
      const a = decode([1, 2], dtype);
      expect(asFloat32(a)).toBe(a.data); // no second copy of every reply
    }
    const ints = decode([3, -4], "int32");
    expect(asInt32(ints)).toBe(ints.data);
    expect([...asFloat32(ints)]).toEqual([3, -4]);
    expect(asFloat32(ints)).toBeInstanceOf(Float32Array);
    expect([...asInt32(decode([2.5, -1.5, NaN], "float32"))]).toEqual([2, -1, 0]);
  });

  test("decodeShaped: the array when its shape is the one asked for, else an error naming it", () => {
    const { header, buffer } = encodeArray([1, 2, 3, 4, 5, 6], [2, 3], "float32");
    const result = { heads: header };
    expect(decodeShaped(result, [buffer], "heads", [2, 3], "lens").shape).toEqual([2, 3]);
    expect(() => decodeShaped(result, [buffer], "heads", [3, 2], "lens")).toThrow(
      "lens heads must have shape [3, 2], got [2, 3]",
    );
    expect(() => decodeShaped(result, [buffer], "heads", [6], "lens")).toThrow("lens heads must have shape [6]");
    expect(() => decodeShaped(result, [buffer], "mlps", [2], "frame")).toThrow("frame has no mlps");
  });
});
