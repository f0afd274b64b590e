import { afterEach, describe, expect, test, vi } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { LineChart } from "../src/lib/line_chart";
import widget, { nextExtent, parseFrame, sparsityTitle } from "../src/views/superposition";
import { FakeModel, mountView, offsetView } from "./helpers";

const N = 5;
const SPARSITY = [0.0, 0.8, 0.9];

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_features: N,
    n_hidden: 2,
    n_instances: SPARSITY.length,
    sparsity: [...SPARSITY],
    importance_decay: 0.9,
    status: "idle",
    progress: { done: 0, total: 0 },
    error: "",
    revision: 0,
    foreground: false,
    ...attrs,
  });
}

/**
 * A frame whose instance k has feature i's column at angle 2*pi*i/n with length (k + 1) / I:
 * the last instance is the pentagon of unit vectors.
 */
function frame(step: number, opts: { I?: number; m?: number; n?: number; sparsity?: number[]; T?: number } = {}) {
  const I = opts.I ?? SPARSITY.length;
  const m = opts.m ?? 2;
  const n = opts.n ?? N;
  const T = opts.T ?? 4;
  const W: number[] = [];
  for (let k = 0; k < I; k++) {
    const r = (k + 1) / I;
    for (let d = 0; d < m; d++) {
      for (let i = 0; i < n; i++) {
        const a = (2 * Math.PI * i) / n;
        W.push(d === 0 ? r * Math.cos(a) : d === 1 ? r * Math.sin(a) : 0);
      }
    }
  }
  const gram: number[] = [];
  const norms: number[] = [];
  for (let k = 0; k < I; k++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let d = 0; d < m; d++) s += W[(k * m + d) * n + i] * W[(k * m + d) * n + j];
        gram.push(s);
      }
      let s = 0;
      for (let d = 0; d < m; d++) s += W[(k * m + d) * n + i] ** 2;
      norms.push(Math.sqrt(s));
    }
  }
  const arrays: Array<[string, number[], number[], "float32" | "int32"]> = [
    ["W", W, [I, m, n], "float32"],
    ["b", Array.from({ length: I * n }, (_, i) => -i / 100), [I, n], "float32"],
    ["importance", Array.from({ length: n }, (_, i) => 0.9 ** i), [n], "float32"],
    ["gram", gram, [I, n, n], "float32"],
    ["norms", norms, [I, n], "float32"],
    ["dimensionality", Array.from({ length: I * n }, (_, i) => (i % n) / n), [I, n], "float32"],
    ["loss_steps", Array.from({ length: T }, (_, t) => t * 10), [T], "int32"],
    ["loss", Array.from({ length: I * T }, (_, i) => 1 / (1 + i)), [I, T], "float32"],
  ];
  const result: Record<string, unknown> = {
    step,
    total: 1000,
    sparsity: opts.sparsity ?? SPARSITY.slice(0, I),
    importance_decay: 0.9,
  };
  const buffers: ArrayBuffer[] = [];
  arrays.forEach(([name, values, shape, dtype], k) => {
    const { header, buffer } = encodeArray(values, shape, dtype, { bufferIndex: k });
    result[name] = header;
    buffers.push(buffer);
  });
  return { result, buffers };
}

function push(model: FakeModel, f: { result: unknown; buffers: ArrayBuffer[] }): void {
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

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
/** Long enough for happy-dom's requestAnimationFrame to fire. */
const nextFrame = () => tick(30);

function mount(model: FakeModel) {
  return mountView(widget, model, "superposition");
}

function slide(input: HTMLInputElement, value: number, kind: "input" | "change"): void {
  input.value = String(value);
  input.dispatchEvent(new Event(kind, { bubbles: true }));
}

/** A recording stand-in for CanvasRenderingContext2D (happy-dom has no canvas). */
function recordingContext() {
  const calls: Array<{ canvas: unknown; name: string; args: any[]; style: unknown }> = [];
  const make = (canvas: unknown) => {
    const state: Record<string | symbol, unknown> = {};
    return new Proxy(state, {
      get(target, prop) {
        if (prop in target) return target[prop];
        if (prop === "createImageData")
          return (w: number, h: number) => ({ data: new Uint8ClampedArray(w * h * 4), width: w, height: h });
        return (...args: any[]) =>
          calls.push({ canvas, name: String(prop), args, style: target.strokeStyle ?? target.fillStyle });
      },
      set(target, prop, value) {
        target[prop] = value;
        return true;
      },
    });
  };
  const contexts = new Map<unknown, unknown>();
  const spy = vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(function (
    this: HTMLCanvasElement,
  ) {
    if (!contexts.has(this)) contexts.set(this, make(this));
    return contexts.get(this) as any;
  });
  return { calls, spy };
}

afterEach(() => {
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

describe("helpers", () => {
  test("sparsityTitle names sparsity and feature probability", () => {
    expect(sparsityTitle(0.9)).toBe("sparsity 0.90 (feature probability 0.10)");
    expect(sparsityTitle(0)).toBe("sparsity 0.00 (feature probability 1.00)");
  });

  test("nextExtent grows at once, holds while norms wobble, shrinks only when far too big", () => {
    expect(nextExtent(0, 0.5)).toBe(1.2); // at least 1.2
    expect(nextExtent(0, 2)).toBeCloseTo(2.2);
    expect(nextExtent(2.2, 1.9)).toBe(2.2); // small dip: hold
    expect(nextExtent(2.2, 2.3)).toBeCloseTo(2.53); // would leave the picture: grow
    expect(nextExtent(3, 1)).toBe(1.2); // far too big: shrink
    expect(nextExtent(1.2, NaN)).toBe(1.2);
  });

  test("parseFrame checks shapes against W and names the array that is off", () => {
    const f = frame(1);
    const views = f.buffers.map((b) => new DataView(b));
    const parsed = parseFrame(f.result, views);
    expect([parsed.I, parsed.m, parsed.n, parsed.T]).toEqual([3, 2, 5, 4]);
    expect([...parsed.lossSteps]).toEqual([0, 10, 20, 30]);
    const norms = encodeArray(new Array(12).fill(1), [3, 4], "float32", { bufferIndex: views.length });
    const bad = { ...f.result, norms: norms.header };
    expect(() => parseFrame(bad, [...views, new DataView(norms.buffer)])).toThrow(
      "frame norms must have shape [3, 5], got [3, 4]",
    );
    expect(() => parseFrame({ ...f.result, sparsity: [0.1] }, views)).toThrow("1 sparsity values for 3 instances");
  });
});

describe("SuperpositionToy", () => {
  test("renders the toolbar, sliders and one panel per instance; draws the `frame` reply", async () => {
    const model = makeModel();
    const { root, q, el } = mount(model);
    for (const id of ["start-button", "stop-button", "status", "importance-decay", "loss-chart"])
      expect(q(id), id).not.toBeNull();
    for (let i = 0; i < 3; i++) {
      for (const id of [`instance-${i}`, `sparsity-${i}`, `feature-plane-${i}`, `gram-${i}`, `bars-${i}`])
        expect(q(id), id).not.toBeNull();
      expect(q(`gram-${i}`).getAttribute("aria-label")).toContain("W transpose W");
    }
    expect(el.querySelectorAll(".miw-sup-title")[2].textContent).toBe("sparsity 0.90 (feature probability 0.10)");
    expect(q<HTMLInputElement>("sparsity-1").value).toBe("0.8");
    expect(q<HTMLInputElement>("importance-decay").value).toBe("0.9");
    expect(q("info").textContent).toBe("5 features in 2 hidden dimensions");
    expect(root.dataset.frames).toBe("0");

    const setSeries = vi.spyOn(LineChart.prototype, "setSeries");
    const req = model.requests("frame")[0];
    expect(req.params).toEqual({});
    replyFrame(model, req.id, frame(40));
    await nextFrame();
    expect(root.dataset.frames).toBe("1");
    expect(root.dataset.step).toBe("40");
    expect(q("instance-2").dataset.sparsity).toBe("0.90");
    expect(q("instance-0").dataset.sparsity).toBe("0.00");
    expect(q("feature-plane-0").dataset.extent).toBe("1.200");
    expect(q("error").textContent).toBe("");
    const series = setSeries.mock.calls.at(-1)![0];
    expect(series.map((s) => s.label)).toEqual(["sparsity 0.00", "sparsity 0.80", "sparsity 0.90"]);
    expect(Array.from(series[1].x)).toEqual([0, 10, 20, 30]);
    expect(Array.from(series[1].y)).toEqual([1 / 5, 1 / 6, 1 / 7, 1 / 8].map(Math.fround));
    expect(q("loss-chart").dataset.points).toBe("12");
  });

  test("pushed frames are drawn once per animation frame, latest wins; the pentagon lands on the unit circle", async () => {
    const { calls } = recordingContext();
    const model = makeModel();
    const { root, q } = mount(model);
    await nextFrame(); // the theme pass
    push(model, frame(10));
    push(model, frame(20));
    push(model, frame(30));
    expect(root.dataset.frames).toBe("0");
    calls.length = 0;
    await nextFrame();
    expect(root.dataset.frames).toBe("1");
    expect(root.dataset.step).toBe("30");

    // Instance 2 holds unit vectors at 72 degree steps: arrows from the centre to radius (100 - 12) / 1.2.
    const plane = q("feature-plane-2");
    const ends = calls.filter(
      (c) => c.canvas === plane && c.name === "lineTo" && c.args[0] !== 200 && c.args[1] !== 200,
    );
    expect(ends).toHaveLength(N);
    const r = 88 / 1.2;
    const radii = ends.map((c) => Math.hypot(c.args[0] - 100, c.args[1] - 100));
    for (const d of radii) expect(d).toBeCloseTo(r, 3);
    const angles = ends
      .map((c) => Math.round((Math.atan2(100 - c.args[1], c.args[0] - 100) * 180) / Math.PI + 360) % 360)
      .sort((a, b) => a - b);
    expect(angles).toEqual([0, 72, 144, 216, 288]);
    // Least important first, so the most important (feature 0, at angle 0) is drawn last.
    expect(ends.at(-1)!.args[0]).toBeCloseTo(100 + r, 3);

    const gram = q("gram-2");
    expect(calls.some((c) => c.canvas === gram && c.name === "drawImage")).toBe(true);
    expect(gram.dataset.range).toBe("1.000");
    const bars = calls.filter((c) => c.canvas === q("bars-2") && c.name === "fillRect");
    expect(bars).toHaveLength(N);

    push(model, frame(40));
    await nextFrame();
    expect(root.dataset.frames).toBe("2");
    expect(root.dataset.step).toBe("40");
  });

  test("a `frame` reply overtaken by a pushed frame is dropped", async () => {
    const model = makeModel();
    const { root } = mount(model);
    push(model, frame(50));
    const req = model.requests("frame")[0];
    replyFrame(model, req.id, frame(5));
    await nextFrame();
    expect(root.dataset.step).toBe("50");
    expect(root.dataset.frames).toBe("1");
  });

  test("stale policy: a reply for an older revision than asked is never drawn; bumps during a request fold into one more", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    const first = model.requests("frame")[0];
    model.set("revision", 1);
    model.set("revision", 2);
    expect(model.requests("frame")).toHaveLength(1); // coalesced: the request in flight lands first
    replyFrame(model, first.id, frame(40), 0); // asked at revision 0: drawn
    await nextFrame();
    expect(root.dataset.step).toBe("40");
    const requests = model.requests("frame");
    expect(requests).toHaveLength(2); // then one more, for revision 2
    replyFrame(model, requests[1].id, frame(60), 1); // computed for revision 1 < 2: never drawn
    await nextFrame();
    expect(root.dataset.step).toBe("40");
    expect(root.dataset.frames).toBe("1");
    expect(q("error").textContent).toBe("");
    model.set("revision", 3);
    replyFrame(model, model.requests("frame")[2].id, frame(80), 3);
    await nextFrame();
    expect(root.dataset.step).toBe("80");
    expect(root.dataset.frames).toBe("2");
  });

  test("a fetched frame is ordered against pushed ones by (revision, step): never over a newer push", async () => {
    const model = makeModel();
    const { root } = mount(model);
    push(model, frame(3000)); // the last frame of a run, at revision 0
    await nextFrame();
    replyFrame(model, model.requests("frame")[0].id, frame(2990), 0); // same revision, older step: dropped
    await nextFrame();
    expect(root.dataset.step).toBe("3000");
    expect(root.dataset.frames).toBe("1");

    model.set("revision", 1); // the run ended; the reply was computed after that (a restarted run's step 10)
    replyFrame(model, model.requests("frame")[1].id, frame(10), 1);
    await nextFrame();
    expect(root.dataset.step).toBe("10");
    expect(root.dataset.frames).toBe("2");

    push(model, frame(30)); // stamped with revision 1
    model.set("revision", 2);
    push(model, frame(40)); // stamped with revision 2
    replyFrame(model, model.requests("frame")[2].id, frame(35), 2); // same revision, older step: dropped
    await nextFrame();
    expect(root.dataset.step).toBe("40");
    expect(root.dataset.frames).toBe("3");
    model.set("revision", 3);
    replyFrame(model, model.requests("frame")[3].id, frame(40), 3); // a newer revision: drawn
    await nextFrame();
    expect(root.dataset.frames).toBe("4");
  });

  test("a sparsity slider shows its value while dragged and sets the trait on release", () => {
    const model = makeModel();
    const { q, el } = mount(model);
    const slider = q<HTMLInputElement>("sparsity-1");
    slide(slider, 0.55, "input");
    expect(model.attrs.sparsity).toEqual(SPARSITY);
    expect(model.saves).toBe(0);
    expect(el.querySelectorAll(".miw-sup-title")[1].textContent).toBe("sparsity 0.55 (feature probability 0.45)");

    // Python's value must not yank a slider that is being dragged.
    model.set("sparsity", [0.0, 0.8, 0.95]);
    expect(slider.value).toBe("0.55");
    expect(q<HTMLInputElement>("sparsity-2").value).toBe("0.95");

    slide(slider, 0.6, "change");
    expect(model.attrs.sparsity).toEqual([0.0, 0.6, 0.95]);
    expect(model.saves).toBe(1);
  });

  test("keys on a slider stay with the slider (the notebook's command mode binds the arrows)", () => {
    const model = makeModel();
    const { q, el } = mount(model);
    const reached: string[] = [];
    el.addEventListener("keydown", (ev) => reached.push((ev as KeyboardEvent).key));
    for (const id of ["sparsity-0", "importance-decay"]) {
      q<HTMLInputElement>(id).dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowLeft", bubbles: true }));
    }
    expect(reached).toEqual([]);
  });

  test("the importance-decay slider sets its trait on release and follows Python", () => {
    const model = makeModel();
    const { q } = mount(model);
    const slider = q<HTMLInputElement>("importance-decay");
    slide(slider, 0.7, "input");
    expect(model.attrs.importance_decay).toBe(0.9);
    slide(slider, 0.7, "change");
    expect(model.attrs.importance_decay).toBe(0.7);
    expect(model.saves).toBe(1);
    model.set("importance_decay", 0.8);
    expect(slider.value).toBe("0.8");
    expect(slider.parentElement!.textContent).toContain("0.80");
  });

  test("a sparsity change from Python moves the sliders and titles; a new instance count rebuilds the panels", async () => {
    const model = makeModel();
    const { q, el, root } = mount(model);
    model.set("sparsity", [0.1, 0.2, 0.3]);
    expect(q<HTMLInputElement>("sparsity-0").value).toBe("0.1");
    expect(q<HTMLInputElement>("sparsity-2").value).toBe("0.3");
    expect(el.querySelectorAll(".miw-sup-title")[2].textContent).toBe("sparsity 0.30 (feature probability 0.70)");

    model.attrs.sparsity = [0.5, 0.99];
    model.set("n_instances", 2);
    expect(el.querySelectorAll("[data-testid^=instance-]")).toHaveLength(2);
    expect(q<HTMLInputElement>("sparsity-1").value).toBe("0.99");
    push(model, frame(7, { I: 2, sparsity: [0.5, 0.99] }));
    await nextFrame();
    expect(root.dataset.step).toBe("7");
    expect(q("instance-1").dataset.sparsity).toBe("0.99");
  });

  test("with m != 2 there is no feature plane; the gram and bars are still drawn", async () => {
    const model = makeModel({ n_hidden: 3 });
    const { q, el, root } = mount(model);
    expect(el.querySelectorAll("[data-testid^=feature-plane-]")).toHaveLength(0);
    expect(q("gram-0")).not.toBeNull();
    expect(q("bars-0")).not.toBeNull();
    push(model, frame(3, { m: 3 }));
    await nextFrame();
    expect(root.dataset.frames).toBe("1");
    expect(q("gram-1").dataset.range).toBe("1.000");
    expect(q("error").textContent).toBe("");
  });

  test("errors: the error trait, a failed request and a malformed frame go to the banner", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    model.replyError(model.requests("frame")[0].id, "RuntimeError", "no model yet");
    await tick();
    expect(q("error").textContent).toContain("no model yet");
    model.set("error", "training diverged");
    expect(q("error").textContent).toContain("training diverged");
    expect(q("error").parentElement!.hidden).toBe(false);

    const f = frame(1);
    push(model, { result: { ...f.result, sparsity: [0.5] }, buffers: f.buffers });
    await nextFrame();
    expect(q("error").textContent).toContain("1 sparsity values for 3 instances");
    expect(root.dataset.frames).toBe("0");
    push(model, frame(2));
    await nextFrame();
    expect(q("error").textContent).not.toContain("sparsity values");
    expect(root.dataset.frames).toBe("1");

    q<HTMLButtonElement>("start-button").click();
    expect(model.requests("start")).toHaveLength(1);
  });

  test("dispose unsubscribes everything and cancels the pending animation frame", async () => {
    const model = makeModel();
    const { root, el, cleanup } = mount(model);
    const cancel = vi.spyOn(window, "cancelAnimationFrame");
    push(model, frame(1));
    (cleanup as () => void)();
    expect(cancel).toHaveBeenCalled();
    expect(model.listenerCount()).toBe(0);
    expect(el.children).toHaveLength(0);
    await nextFrame();
    expect(root.dataset.frames).toBe("0");
    push(model, frame(2)); // nobody listens any more
    await nextFrame();
    expect(root.dataset.frames).toBe("0");
  });
});
