import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import widget, { FOREGROUND_HINT, formatCount, parseFrame, summaryText } from "../src/views/sae_training";
import { FakeModel, mountView, offsetView } from "./helpers";

const METRICS = ["loss", "mse", "l0", "fve", "dead"];

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    hook: "blocks.0.hook_resid_post",
    d_in: 64,
    d_sae: 512,
    architecture: "topk",
    status: "idle",
    progress: { done: 0, total: 0 },
    error: "",
    revision: 0,
    foreground: false,
    ...attrs,
  });
}

/** A frame of T points whose last column is loss 0.031, MSE 0.029, L0 21.4, FVE 0.93, dead 3. */
function frame(step: number, T = 4, overrides: Partial<Record<string, number[]>> = {}) {
  const steps = Array.from({ length: T }, (_, i) => Math.round(((i + 1) * step) / T));
  const last: Record<string, number> = { loss: 0.031, mse: 0.029, l0: 21.4, fve: 0.93, dead: 3 };
  const values: number[] = [];
  for (const m of METRICS) {
    const row = overrides[m] ?? Array.from({ length: T }, (_, i) => (i === T - 1 ? last[m] : last[m] * (T - i)));
    values.push(...row);
  }
  const s = encodeArray(steps, [T], "int32", { bufferIndex: 0 });
  const v = encodeArray(values, [METRICS.length, T], "float32", { bufferIndex: 1 });
  return {
    result: { step, total: 2000, tokens: step * 4096, metrics: METRICS, steps: s.header, values: v.header },
    buffers: [s.buffer, v.buffer],
  };
}

function push(model: FakeModel, f: { result: unknown; buffers: ArrayBuffer[] }) {
  const content = {
    type: "event",
    event: "frame",
    result: f.result,
    buffer_lengths: f.buffers.map((b) => b.byteLength),
  };
  model.emit(
    "msg:custom",
    content,
    f.buffers.map((b) => offsetView(new Uint8Array(b))),
  );
}

/** Answer a `frame` request; the kernel stamps every reply with the revision it was computed for. */
function replyFrame(model: FakeModel, id: string, f: { result: unknown; buffers: ArrayBuffer[] }, revision = 0): void {
  model.reply(id, { ...(f.result as object), revision }, f.buffers);
}

const nextFrame = () => new Promise((r) => requestAnimationFrame(() => r(undefined)));
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function mount(model: FakeModel) {
  return mountView(widget, model, "sae-training");
}

afterEach(() => document.body.replaceChildren());

describe("SAETrainer view", () => {
  test("renders the toolbar, the config line and one chart per metric before any frame", () => {
    const model = makeModel();
    const { root, q, el } = mount(model);
    for (const id of ["start-button", "stop-button", "status", "summary", "foreground-hint"])
      expect(q(id), id).not.toBeNull();
    for (const m of METRICS) expect(q(`chart-${m}`), m).not.toBeNull();
    expect(q("config").textContent).toBe("blocks.0.hook_resid_post · topk · 64 → 512");
    expect(q("summary").textContent).toBe("no steps yet");
    const titles = [...el.querySelectorAll(".miw-line-chart-title")].map((t) => t.textContent);
    expect(titles).toEqual([
      "loss",
      "mse",
      "L0 (active features per token)",
      "variance explained",
      "dead features (of 512)",
    ]);
    expect(root.dataset.frames).toBe("0");
    expect(q("foreground-hint").hidden).toBe(true);
    model.set("d_sae", 1024);
    expect(q("config").textContent).toBe("blocks.0.hook_resid_post · topk · 64 → 1024");
    expect(q("chart-dead").querySelector(".miw-line-chart-title")!.textContent).toBe("dead features (of 1024)");
  });

  test("the reply to the frame request on render is drawn", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    const reqs = model.requests("frame");
    expect(reqs).toHaveLength(1);
    replyFrame(model, reqs[0].id, frame(1200));
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("1200");
    expect(root.dataset.frames).toBe("1");
    expect(q("summary").textContent).toBe("step 1200 · loss 0.031 · MSE 0.029 · L0 21.4 · FVE 0.93 · dead 3");
    expect(q("tokens").textContent).toBe("4.92M tokens");
    expect(q("chart-loss").dataset.points).toBe("4");
    expect(q("chart-loss-readout").textContent).toBe("step 1200 · loss 0.031");
  });

  test("pushed frames are drawn once per animation frame, latest wins", async () => {
    const model = makeModel({ status: "running" });
    const { root, q } = mount(model);
    push(model, frame(100));
    push(model, frame(200));
    push(model, frame(300, 6));
    expect(root.dataset.frames).toBe("0"); // nothing drawn before the animation frame
    await nextFrame();
    expect(root.dataset.frames).toBe("1");
    expect(root.dataset.step).toBe("300");
    expect(q("chart-fve").dataset.points).toBe("6");
    expect(q("summary").textContent).toMatch(/^step 300 · loss 0.031 /);
    push(model, frame(400));
    await nextFrame();
    expect(root.dataset.frames).toBe("2");
    expect(root.dataset.step).toBe("400");

    // A reply to a frame request that an event overtook is stale: dropped.
    model.set("revision", 1);
    const req = model.requests("frame").at(-1);
    push(model, frame(500));
    replyFrame(model, req.id, frame(450), 1);
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("500");
  });

  test("stale policy: a reply for an older revision than asked is never drawn; bumps during a request fold into one more", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    const first = model.requests("frame")[0];
    model.set("revision", 1);
    model.set("revision", 2);
    expect(model.requests("frame")).toHaveLength(1); // coalesced: the request in flight lands first
    replyFrame(model, first.id, frame(40), 0); // asked at revision 0: drawn
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("40");
    const requests = model.requests("frame");
    expect(requests).toHaveLength(2); // then one more, for revision 2
    replyFrame(model, requests[1].id, frame(60), 1); // computed for revision 1 < 2: never drawn
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("40");
    expect(root.dataset.frames).toBe("1");
    expect(q("error").textContent).toBe("");
  });

  test("a fetched frame is ordered against pushed ones by (revision, step): never over a newer push", async () => {
    const model = makeModel({ status: "running" });
    const { root } = mount(model);
    push(model, frame(2000)); // the last frame of a run, at revision 0
    await nextFrame();
    replyFrame(model, model.requests("frame")[0].id, frame(1990), 0); // same revision, older step: dropped
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("2000");
    expect(root.dataset.frames).toBe("1");

    model.set("revision", 1); // the run ended; the reply was computed after that (a restarted run's step 10)
    replyFrame(model, model.requests("frame")[1].id, frame(10), 1);
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("10");
    expect(root.dataset.frames).toBe("2");

    model.set("revision", 2);
    push(model, frame(40)); // stamped with revision 2
    replyFrame(model, model.requests("frame")[2].id, frame(40), 2); // same revision, same step: drawn
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("40");
    expect(root.dataset.frames).toBe("3"); // one draw: both came before the animation frame
  });

  test("variance explained keeps [0, 1] unless the data leaves it", async () => {
    const model = makeModel();
    const { q } = mount(model);
    push(model, frame(10, 4, { fve: [0.2, 0.5, 0.8, 0.93] }));
    await nextFrame();
    const fve = q("chart-fve");
    expect([fve.dataset.yLo, fve.dataset.yHi]).toEqual(["0", "1"]);
    push(model, frame(20, 4, { fve: [-0.5, 0.2, NaN, 0.9] }));
    await nextFrame();
    expect(Number(fve.dataset.yLo)).toBeLessThan(-0.5);
    expect(fve.dataset.points).toBe("3");
    push(model, frame(30, 4, { fve: [0.1, 0.2, Infinity, 0.9] })); // inf is not drawn, so it keeps [0, 1]
    await nextFrame();
    expect([fve.dataset.yLo, fve.dataset.yHi]).toEqual(["0", "1"]);
  });

  test("training in the foreground disables Stop and shows the hint", () => {
    const model = makeModel();
    const { q, root } = mount(model);
    const stop = q<HTMLButtonElement>("stop-button");
    model.set("status", "running");
    expect(stop.disabled).toBe(false);
    model.set("foreground", true);
    expect(stop.disabled).toBe(true);
    expect(q("foreground-hint").hidden).toBe(false);
    expect(q("foreground-hint").textContent).toBe(FOREGROUND_HINT);
    expect(root.dataset.foreground).toBe("true");
    model.set("progress", { done: 5, total: 100 }); // the toolbar re-renders: Stop stays disabled
    expect(stop.disabled).toBe(true);
    expect(q("status").textContent).toBe("running: step 5/100");
    model.set("foreground", false);
    expect(stop.disabled).toBe(false);
    expect(q("foreground-hint").hidden).toBe(true);
  });

  test("Start and Stop send requests", () => {
    const model = makeModel();
    const { q } = mount(model);
    q<HTMLButtonElement>("start-button").click();
    expect(model.requests("start")).toHaveLength(1);
    model.set("status", "running");
    q<HTMLButtonElement>("stop-button").click();
    expect(model.requests("stop")).toHaveLength(1);
  });

  test("errors reach the banner: the Python trait, a failed request and a malformed frame", async () => {
    const model = makeModel();
    const { q } = mount(model);
    const banner = q("error");
    model.set("error", "RuntimeError: loss is NaN at step 17");
    expect(banner.textContent).toBe("RuntimeError: loss is NaN at step 17");
    expect(banner.parentElement!.hidden).toBe(false);
    model.set("error", "");
    model.replyError(model.requests("frame")[0].id, "ValueError", "no SAE yet");
    await tick();
    expect(banner.textContent).toBe("ValueError: no SAE yet");
    const bad = frame(10);
    (bad.result as any).metrics = ["loss"]; // values has 5 rows
    push(model, bad);
    expect(banner.textContent).toBe("frame values must have shape [1 metrics, 4 steps], got [5, 4]");
    push(model, frame(20)); // a good frame clears the frame error
    expect(banner.textContent).toBe("");
    expect(banner.parentElement!.hidden).toBe(true);
    expect(document.body.textContent).not.toContain("failed to start");
  });

  test("dispose removes the view, its model listeners and its event subscription", async () => {
    const model = makeModel();
    const { root, el, cleanup } = mount(model);
    expect(model.listenerCount()).toBeGreaterThan(0);
    push(model, frame(10));
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(el.querySelector("[data-testid=sae-training]")).toBeNull();
    await nextFrame();
    push(model, frame(20));
    await nextFrame();
    expect(root.dataset.frames).toBe("0"); // the pending frame was cancelled, later ones ignored
  });
});

describe("frame helpers", () => {
  test("parseFrame checks shapes and summaryText reads the last column", () => {
    const f = frame(8, 2);
    const toViews = (bufs: ArrayBuffer[]) => bufs.map((b) => new DataView(b));
    const parsed = parseFrame(f.result, toViews(f.buffers));
    expect(parsed.points).toBe(2);
    expect(Array.from(parsed.steps)).toEqual([4, 8]);
    expect(summaryText(parsed)).toBe("step 8 · loss 0.031 · MSE 0.029 · L0 21.4 · FVE 0.93 · dead 3");
    expect(() => parseFrame(null, [])).toThrow("frame must be an object");
    const empty = frame(0, 0);
    expect(summaryText(parseFrame(empty.result, toViews(empty.buffers)))).toBe("step 0");
  });

  test("formatCount", () => {
    expect(formatCount(0)).toBe("0");
    expect(formatCount(9999)).toBe("9999");
    expect(formatCount(38400)).toBe("38.4k");
    expect(formatCount(1.2e6)).toBe("1.2M");
    expect(formatCount(3e9)).toBe("3B");
  });
});
