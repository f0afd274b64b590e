import { describe, expect, test } from "vitest";
import { decodeArray } from "../src/lib/codec";
import { canonicalJson, OfflineModel, type RecordedReply, requestKey } from "../src/lib/offline";
import { RemoteError, RequestClient } from "../src/lib/protocol";
import { fixture } from "./helpers";

interface ExportVectors {
  keys: Array<{ method: string; params: Record<string, unknown>; key: string }>;
  reply: RecordedReply;
  values: number[][];
  extra: number[];
}

const vectors = fixture<ExportVectors>("export_vectors.json");

describe("requestKey", () => {
  test("is the string Python's request_key makes, whatever the key order", () => {
    for (const { method, params, key } of vectors.keys) {
      expect(requestKey(method, params)).toBe(key);
      const reversed = Object.fromEntries(Object.entries(params).reverse());
      expect(requestKey(method, reversed)).toBe(key);
    }
    expect(requestKey("overview", undefined)).toBe(vectors.keys[0].key);
    expect(canonicalJson([1, "a", null, { b: 2, a: [true] }])).toBe('[1,"a",null,{"a":[true],"b":2}]');
  });
});

describe("OfflineModel", () => {
  const key = vectors.keys[1].key;

  test("answers a recorded request through the request client, parts and buffers as the kernel sent them", async () => {
    const model = new OfflineModel({ revision: 4, selected: {} }, { [key]: vectors.reply });
    const client = new RequestClient(model);
    const reply = await client.request("pattern", { head: 0, layer: 1 });
    expect(vectors.reply.messages.length).toBeGreaterThan(1); // the recorded reply was cut into parts
    expect(reply.result.revision).toBe(4);
    const pattern = decodeArray(reply.result.pattern, reply.buffers);
    expect(Array.from(pattern.data)).toEqual(vectors.values.flat());
    expect(Array.from(new Uint8Array(reply.buffers[1].buffer, reply.buffers[1].byteOffset, 7))).toEqual(vectors.extra);
    // asked again (a head switched back to): the same answer, unpacked once
    const again = await client.request("pattern", { layer: 1, head: 0 });
    expect(Array.from(decodeArray(again.result.pattern, again.buffers).data)).toEqual(vectors.values.flat());
    client.dispose();
  });

  test("a request that was not recorded fails with a message that says so", async () => {
    const model = new OfflineModel({}, { [key]: vectors.reply }, () => "left out of this file");
    const client = new RequestClient(model);
    const failed = client.request("pattern", { layer: 3, head: 1 });
    await expect(failed).rejects.toBeInstanceOf(RemoteError);
    await expect(failed).rejects.toThrow(
      /not in this export: pattern \{"head":1,"layer":3\} \(left out of this file\)/,
    );
    client.dispose();
  });

  test("set() changes the state locally and tells listeners; save_changes sends nothing", () => {
    const model = new OfflineModel({ selected: { layer: 0, head: 0 } }, {});
    const seen: unknown[] = [];
    const listener = (_m: unknown, value: unknown) => seen.push(value);
    model.on("change:selected", listener);
    model.set("selected", { layer: 1, head: 2 });
    model.save_changes();
    expect(model.get("selected")).toEqual({ layer: 1, head: 2 });
    expect(seen).toEqual([{ layer: 1, head: 2 }]);
    model.off("change:selected", listener);
    model.set("selected", { layer: 0, head: 0 });
    expect(seen.length).toBe(1);
  });
});
