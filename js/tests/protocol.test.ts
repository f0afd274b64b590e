// @vitest-environment node
import { describe, expect, test } from "vitest";
import { decodeArray } from "../src/lib/codec";
import { CancelledError, isCancelled, RemoteError, RequestClient, reassemble } from "../src/lib/protocol";
import { b64, FakeModel, fixture, offsetView } from "./helpers";

interface ProtocolCase {
  max_message_bytes: number;
  buffers: string[];
  messages: Array<{ content: any; buffers: string[] }>;
}

const cases = fixture<ProtocolCase[]>("protocol_vectors.json");

function bytesOf(view: DataView): number[] {
  return [...new Uint8Array(view.buffer, view.byteOffset, view.byteLength)];
}

describe.each(cases)("split reply with max_message_bytes=$max_message_bytes", (c) => {
  test("reassembles the original buffers", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c1" });
    const progress: number[] = [];
    const promise = client.request("pattern", { layer: 1 }, { onProgress: (p) => progress.push(p.done) });
    const id = model.sent[0].content.id;
    expect(model.sent[0].content).toEqual({ type: "request", id, method: "pattern", params: { layer: 1 } });
    model.emit("msg:custom", { type: "progress", id, done: 1, total: 2, label: "layer 1" }, []);
    for (const m of c.messages) {
      model.emit(
        "msg:custom",
        { ...m.content, id },
        m.buffers.map((s) => offsetView(b64(s))),
      );
    }
    const response = await promise;
    expect(response.result).toEqual({ answer: 42 });
    expect(response.buffers.map(bytesOf)).toEqual(c.buffers.map((s) => [...b64(s)]));
    expect(progress).toEqual([1]);
  });
});

describe("RequestClient", () => {
  test("ids carry the client id; replies to other clients are ignored", async () => {
    const model = new FakeModel();
    const a = new RequestClient(model, { clientId: "a" });
    const b = new RequestClient(model, { clientId: "b" });
    const pa = a.request("m");
    const pb = b.request("m");
    const [ida, idb] = model.sent.map((s) => s.content.id);
    expect(ida).toBe("a:1");
    expect(idb).toBe("b:1");
    model.reply(idb, { who: "b" });
    model.reply("zz:1", { who: "nobody" });
    model.reply(ida, { who: "a" });
    expect((await pa).result).toEqual({ who: "a" });
    expect((await pb).result).toEqual({ who: "b" });
  });

  test("random client ids differ between clients", () => {
    const model = new FakeModel();
    new RequestClient(model).request("m");
    new RequestClient(model).request("m");
    const [x, y] = model.sent.map((s) => s.content.id.split(":")[0]);
    expect(x).not.toBe(y);
  });

  test("a request with the same supersede key cancels the older one", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c" });
    const first = client.request("pattern", { head: 0 }, { supersede: "pattern" });
    const other = client.request("overview", {}, { supersede: "overview" });
    const second = client.request("pattern", { head: 1 }, { supersede: "pattern" });
    await expect(first).rejects.toBeInstanceOf(CancelledError);
    expect(model.sent.map((s) => s.content)).toContainEqual({ type: "cancel", id: "c:1" });
    model.reply("c:1", { head: 0 }); // late answer for the cancelled request: ignored
    model.reply("c:3", { head: 1 });
    model.reply("c:2", {});
    expect((await second).result).toEqual({ head: 1 });
    await expect(other).resolves.toBeTruthy();
  });

  test("cancel(key) rejects and tells the kernel", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c" });
    const p = client.request("run", {}, { supersede: "run" });
    client.cancel("run");
    client.cancel("run"); // nothing left: no second cancel message
    await expect(p).rejects.toSatisfy(isCancelled);
    expect(model.sent.filter((s) => s.content.type === "cancel")).toHaveLength(1);
  });

  test("error replies become RemoteError; Cancelled becomes CancelledError", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c" });
    const p1 = client.request("run");
    const p2 = client.request("run");
    model.replyError("c:1", "ValueError", "prompt is too long: 2000 tokens, context is 1024");
    model.replyError("c:2", "Cancelled", "request c:2 (run) was cancelled");
    const e1 = await p1.catch((e) => e);
    expect(e1).toBeInstanceOf(RemoteError);
    expect(e1.type).toBe("ValueError");
    expect(e1.message).toContain("prompt is too long");
    await expect(p2).rejects.toBeInstanceOf(CancelledError);
  });

  test("refuses requests over maxRequestBytes without sending", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { maxRequestBytes: 1000 });
    await expect(client.request("run", { prompt: "x".repeat(2000) })).rejects.toThrow(/over the 1000-byte limit/);
    await expect(client.request("m", {}, { buffers: [new ArrayBuffer(1001)] })).rejects.toThrow(/limit/);
    expect(model.sent).toHaveLength(0);
    await expect(new RequestClient(model).request("m", {}, { buffers: [new ArrayBuffer(1 << 20)] })).rejects.toThrow(
      /1048576-byte/,
    );
  });

  test("sends request buffers along", () => {
    const model = new FakeModel();
    const buf = new ArrayBuffer(8);
    new RequestClient(model).request("m", {}, { buffers: [buf] });
    expect(model.sent[0].buffers).toEqual([buf]);
  });

  test("a single-slice buffer is passed through without copying", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c" });
    const p = client.request("m");
    const view = offsetView(new Uint8Array([1, 2, 3]));
    model.emit(
      "msg:custom",
      { type: "response", id: "c:1", part: 0, parts: 1, ok: true, result: {}, buffer_lengths: [3] },
      [view],
    );
    const { buffers } = await p;
    expect(buffers[0].buffer).toBe(view.buffer);
    expect(buffers[0].byteOffset).toBe(view.byteOffset);
  });

  test("inconsistent parts reject with a clear error", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c" });
    const p = client.request("m");
    model.emit(
      "msg:custom",
      { type: "response", id: "c:1", part: 0, parts: 1, ok: true, result: {}, buffer_lengths: [5] },
      [new DataView(new ArrayBuffer(3))],
    );
    await expect(p).rejects.toThrow("response parts hold 3 bytes, but buffer_lengths add up to 5");
    expect(() => reassemble([], [1])).toThrow();
  });

  test("dispose cancels pending requests and stops listening", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c" });
    const p = client.request("m");
    client.dispose();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    expect(model.sent.map((s) => s.content)).toContainEqual({ type: "cancel", id: "c:1" });
    expect(model.listenerCount()).toBe(0);
    await expect(client.request("m")).rejects.toBeInstanceOf(CancelledError);
  });
});

interface EventCase {
  content: any;
  buffers: string[];
  decoded: number[];
}

describe("pushed events", () => {
  const [c] = fixture<EventCase[]>("event_vectors.json");

  test("a Python event reaches its listeners with decodable buffers", () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c1" });
    const got: number[][] = [];
    const steps: number[] = [];
    const off = client.onEvent("frame", (e) => {
      steps.push(e.result.step);
      got.push([...(decodeArray(e.result.W, e.buffers).data as Float32Array)]);
    });
    client.onEvent("other", () => {
      throw new Error("not this one");
    });
    model.emit(
      "msg:custom",
      c.content,
      c.buffers.map((s) => offsetView(b64(s))),
    );
    expect(steps).toEqual([7]);
    expect(got[0]).toEqual(c.decoded.map((v) => Math.fround(v)));
    off();
    model.emit(
      "msg:custom",
      c.content,
      c.buffers.map((s) => offsetView(b64(s))),
    );
    expect(steps).toEqual([7]);
  });

  test("events after dispose are ignored, and pending requests are unaffected by events", async () => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c1" });
    const seen: unknown[] = [];
    client.onEvent("frame", (e) => seen.push(e.result));
    const pending = client.request("m");
    model.emit("msg:custom", { type: "event", event: "frame", result: { a: 1 }, buffer_lengths: [] }, []);
    model.reply(model.sent[0].content.id, { ok: 1 });
    expect((await pending).result).toEqual({ ok: 1 });
    client.dispose();
    model.emit("msg:custom", { type: "event", event: "frame", result: { a: 2 }, buffer_lengths: [] }, []);
    expect(seen).toEqual([{ a: 1 }]);
  });
});

// Hosts hand message buffers over in different shapes: JupyterLab as DataView, Colab as Uint8Array (views into
// a larger buffer), others as a bare ArrayBuffer; a message without buffers may come with `undefined`.
const HOST_SHAPES: Array<[string, (bytes: Uint8Array) => unknown]> = [
  ["DataView at an offset (JupyterLab)", (bytes) => offsetView(bytes)],
  [
    "Uint8Array into a larger buffer (Colab)",
    (bytes) => {
      const host = new Uint8Array(bytes.byteLength + 16);
      host.set(bytes, 7);
      return host.subarray(7, 7 + bytes.byteLength);
    },
  ],
  ["bare ArrayBuffer", (bytes) => bytes.slice().buffer],
];

describe.each(HOST_SHAPES)("buffers as %s", (_name, shape) => {
  test.each(cases)("a reply split for max_message_bytes=$max_message_bytes reassembles", async (c) => {
    const model = new FakeModel();
    const client = new RequestClient(model, { clientId: "c1" });
    const promise = client.request("pattern");
    const id = model.sent[0].content.id;
    for (const m of c.messages) {
      const buffers = m.buffers.map((s) => shape(b64(s)));
      model.emit("msg:custom", { ...m.content, id }, (buffers.length ? buffers : undefined) as any);
    }
    const response = await promise;
    expect(response.buffers.map(bytesOf)).toEqual(c.buffers.map((s) => [...b64(s)]));
  });

  test("an event's arrays decode", () => {
    const events =
      fixture<Array<{ content: any; buffers: string[]; decoded: Array<number | string> }>>("event_vectors.json");
    for (const e of events) {
      const model = new FakeModel();
      const client = new RequestClient(model, { clientId: "c1" });
      const got: number[][] = [];
      client.onEvent("frame", (r) => got.push([...decodeArray(r.result.W, r.buffers).data]));
      model.emit(
        "msg:custom",
        e.content,
        e.buffers.map((s) => shape(b64(s))),
      );
      expect(got).toHaveLength(1);
      expect(got[0].map((v) => Math.fround(v))).toEqual(e.decoded.map((v) => Math.fround(Number(v))));
    }
  });
});
