import { afterEach, describe, expect, test, vi } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { CanvasHeatmap } from "../src/lib/heatmap";
import widget, {
  checkIndex,
  checkText,
  FOREGROUND_HINT,
  keyFrequencyText,
  parseFrame,
  row,
  spectrumImage,
  valuesAt,
} from "../src/views/grokking";
import { FakeModel, mountView, offsetView } from "./helpers";

const METRICS = ["train_loss", "test_loss", "train_acc", "test_acc"];
const CHECK_METRICS = ["restricted_loss", "excluded_loss", "weight_norm", "key_fraction"];
/** p = 9: frequencies 1..4. */
const K = 4;

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    p: 9,
    train_frac: 0.3,
    device: "cpu",
    key_frequencies: [],
    phase: "",
    selected_step: -1,
    status: "idle",
    progress: { done: 0, total: 0 },
    error: "",
    revision: 0,
    foreground: false,
    ...attrs,
  });
}

interface FrameOpts {
  /** Logged points (every 10 steps up to `step`). */
  T?: number;
  /** Checks, at steps 100, 200, ... */
  C?: number;
  keys?: number[];
  phases?: Array<{ name: string; start: number; end: number | null }>;
  /** Added to every spectrum value (a different spectrum for the same checks). */
  shift?: number;
}

/**
 * A frame at `step`: losses 1/(i+1), accuracies i/T; at check c restricted loss c+1, excluded loss
 * 10(c+1), weight norm 20 - c, key fraction c/10; the spectrum's frequency 2 grows with c (c + 1),
 * every other frequency 0.1, the constant 5.
 */
function frame(step: number, opts: FrameOpts = {}) {
  const T = opts.T ?? 4;
  const C = opts.C ?? 3;
  const shift = opts.shift ?? 0;
  const steps = Array.from({ length: T }, (_, i) => Math.round(((i + 1) * step) / T));
  const values: number[] = [];
  values.push(...steps.map((_, i) => 1 / (i + 1)));
  values.push(...steps.map((_, i) => 2 / (i + 1)));
  values.push(...steps.map((_, i) => (i + 1) / T));
  values.push(...steps.map((_, i) => i / T));
  const checkSteps = Array.from({ length: C }, (_, c) => (c + 1) * 100);
  const checkValues: number[] = [];
  checkValues.push(...checkSteps.map((_, c) => c + 1));
  checkValues.push(...checkSteps.map((_, c) => 10 * (c + 1)));
  checkValues.push(...checkSteps.map((_, c) => 20 - c));
  checkValues.push(...checkSteps.map((_, c) => c / 10));
  const spectrum: number[] = [];
  for (let c = 0; c < C; c++) spectrum.push(5, 0.1 + shift, c + 1 + shift, 0.1 + shift, 0.1 + shift);
  const s = encodeArray(steps, [T], "int32", { bufferIndex: 0 });
  const v = encodeArray(values, [4, T], "float32", { bufferIndex: 1 });
  const cs = encodeArray(checkSteps, [C], "int32", { bufferIndex: 2 });
  const cv = encodeArray(checkValues, [4, C], "float32", { bufferIndex: 3 });
  const sp = encodeArray(spectrum, [C, K + 1], "float32", { bufferIndex: 4 });
  return {
    result: {
      step,
      total: 20000,
      p: 9,
      metrics: METRICS,
      steps: s.header,
      values: v.header,
      check_metrics: CHECK_METRICS,
      check_steps: cs.header,
      check_values: cv.header,
      spectrum: sp.header,
      key_frequencies: opts.keys ?? [2],
      phases: opts.phases ?? [
        { name: "memorisation", start: 0, end: 150 },
        { name: "circuit formation", start: 150, end: null },
      ],
    } as Record<string, any>,
    buffers: [s.buffer, v.buffer, cs.buffer, cv.buffer, sp.buffer],
  };
}

type Frame = ReturnType<typeof frame>;

function push(model: FakeModel, f: Frame) {
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

function replyFrame(model: FakeModel, id: string, f: Frame, revision = 0): void {
  model.reply(id, { ...f.result, revision }, f.buffers);
}

const nextFrame = () => new Promise((r) => requestAnimationFrame(() => r(undefined)));
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function mount(model: FakeModel) {
  return mountView(widget, model, "grokking");
}

/** Mount and draw one pushed frame. */
async function mountWith(model: FakeModel, f: Frame) {
  const m = mount(model);
  push(model, f);
  await nextFrame();
  return m;
}

function slide(slider: HTMLInputElement, i: number) {
  slider.value = String(i);
  slider.dispatchEvent(new Event("input"));
}

afterEach(() => {
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

const TESTIDS = [
  "start-button",
  "stop-button",
  "status",
  "foreground-hint",
  "grokking-header",
  "grokking-step",
  "grokking-config",
  "grokking-phase",
  "grokking-keyfreqs",
  "grokking-loss",
  "grokking-accuracy",
  "grokking-measures",
  "grokking-weight-norm",
  "grokking-spectrum",
  "grokking-spectrum-axes",
  "grokking-spectrum-readout",
  "grokking-spectrum-bars",
  "grokking-slider",
  "grokking-latest",
  "grokking-check-readout",
];

describe("Grokking view", () => {
  test("renders every part before any frame", () => {
    const model = makeModel({ key_frequencies: [] });
    const { root, q } = mount(model);
    for (const id of TESTIDS) expect(q(id), id).not.toBeNull();
    expect(q("grokking-step").textContent).toBe("no steps yet");
    expect(q("grokking-config").textContent).toBe("p = 9 · 30% of pairs to train · cpu");
    expect(q("grokking-phase").textContent).toBe("no phase yet");
    expect(q("grokking-keyfreqs").textContent).toBe("no key frequencies yet");
    expect(q("grokking-check-readout").textContent).toBe("no checks yet");
    const slider = q<HTMLInputElement>("grokking-slider");
    expect(slider.type).toBe("range");
    expect(slider.disabled).toBe(true);
    expect(q("grokking-latest").getAttribute("aria-pressed")).toBe("true");
    expect(root.dataset.frames).toBe("0");
    expect(root.dataset.following).toBe("true");
    expect(model.requests("frame")).toHaveLength(1);
    model.set("device", "cuda:0");
    model.set("train_frac", 0.5);
    expect(q("grokking-config").textContent).toBe("p = 9 · 50% of pairs to train · cuda:0");
  });

  test("the reply to the frame request is drawn: header, charts, phases, spectrum, latest check", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    replyFrame(model, model.requests("frame")[0].id, frame(1200, { C: 3 }));
    await tick();
    await nextFrame();
    expect(root.dataset.frames).toBe("1");
    expect(root.dataset.step).toBe("1200");
    expect(root.dataset.checks).toBe("3");
    expect(q("grokking-step").textContent).toBe("step 1200 / 20000");
    // Trait empty: phase and key frequencies from the frame.
    expect(q("grokking-phase").textContent).toBe("phase: circuit formation");
    expect(root.dataset.phase).toBe("circuit formation");
    expect(q("grokking-keyfreqs").textContent).toBe("key frequencies 2");

    const loss = q("grokking-loss");
    expect(loss.dataset.points).toBe("8"); // train and test
    expect(loss.dataset.bands).toBe("memorisation|circuit formation");
    const bandLabels = [...loss.querySelectorAll(".miw-line-chart-band-label")].map((s) => s.textContent);
    expect(bandLabels).toEqual(["memorisation", "circuit formation"]);
    expect(q("grokking-accuracy").dataset.bands).toBe("|"); // the same bands, unlabelled
    expect([q("grokking-accuracy").dataset.yLo, q("grokking-accuracy").dataset.yHi]).toEqual(["0", "1"]);
    expect(q("grokking-loss-readout").textContent).toBe("step 1200 · train 0.25 · test 0.5");
    // Restricted, excluded and the test loss at the checks (100, 200, 300: nearest logged 300, 300, 300).
    expect(q("grokking-measures").dataset.points).toBe("9");
    expect(q("grokking-measures-readout").textContent).toBe("step 300 · restricted 3 · excluded 30 · test 2");
    expect(q("grokking-weight-norm-readout").textContent).toBe("step 300 · weight norm 18");
    for (const id of ["grokking-loss", "grokking-accuracy", "grokking-measures", "grokking-weight-norm"])
      expect(q(id).dataset.markers ?? "", id).toBe(""); // following the latest: no marker

    const heat = q("grokking-spectrum");
    expect([heat.dataset.rows, heat.dataset.cols]).toEqual(["4", "3"]);
    expect(q("grokking-spectrum-axes").textContent).toBe(
      "rows: frequency 1–4, top to bottom · columns: 3 checks, step 100–300",
    );
    const bars = q("grokking-spectrum-bars");
    expect(bars.dataset.count).toBe("4");
    expect(bars.dataset.highlight).toBe("1"); // frequency 2
    expect(q("grokking-spectrum-bars-readout").textContent).toBe("largest frequency 2: 3 (key)");
    expect(bars.querySelector(".miw-bar-chart-title")!.textContent).toBe("embedding spectrum at step 300");

    const slider = q<HTMLInputElement>("grokking-slider");
    expect([slider.disabled, slider.max, slider.value]).toEqual([false, "2", "2"]);
    expect(slider.getAttribute("aria-valuetext")).toBe("step 300");
    expect(q("grokking-check-readout").textContent).toBe(
      "latest check · step 300 · restricted loss 3 · excluded loss 30 · weight norm 18 · key fraction 0.2",
    );
    expect(root.dataset.selectedStep).toBe("300");
  });

  test("the traits win over the frame for the phase and the key frequencies", async () => {
    const model = makeModel({ phase: "cleanup", key_frequencies: [3, 1] });
    const { q } = await mountWith(model, frame(500));
    expect(q("grokking-phase").textContent).toBe("phase: cleanup");
    expect(q("grokking-keyfreqs").textContent).toBe("key frequencies 3, 1");
    expect(q("grokking-keyfreqs").dataset.frequencies).toBe("3,1");
    expect(q("grokking-spectrum-bars").dataset.highlight).toBe("0,2");
    model.set("phase", "generalised");
    model.set("key_frequencies", [4]);
    expect(q("grokking-phase").textContent).toBe("phase: generalised");
    expect(q("grokking-keyfreqs").textContent).toBe("key frequencies 4");
    expect(q("grokking-spectrum-bars").dataset.highlight).toBe("3");
  });

  test("the slider writes selected_step; the check's spectrum, measures and a marker follow", async () => {
    const model = makeModel();
    const { root, q } = await mountWith(model, frame(1200, { C: 3 }));
    const slider = q<HTMLInputElement>("grokking-slider");
    slide(slider, 0);
    expect(model.get("selected_step")).toBe(100);
    expect(model.saves).toBe(1);
    expect(root.dataset.following).toBe("false");
    expect(root.dataset.selectedStep).toBe("100");
    expect(q("grokking-latest").getAttribute("aria-pressed")).toBe("false");
    expect(q("grokking-check-readout").textContent).toBe(
      "check 1 of 3 · step 100 · restricted loss 1 · excluded loss 10 · weight norm 20 · key fraction 0",
    );
    expect(q("grokking-spectrum-bars-readout").textContent).toBe("largest frequency 2: 1 (key)");
    for (const id of ["grokking-loss", "grokking-accuracy", "grokking-measures", "grokking-weight-norm"])
      expect(q(id).dataset.markers, id).toBe("100");

    // Moving to where it already is writes nothing.
    slide(slider, 0);
    expect(model.saves).toBe(1);

    // "latest" follows the newest check again.
    q<HTMLButtonElement>("grokking-latest").click();
    expect(model.get("selected_step")).toBe(-1);
    expect(model.saves).toBe(2);
    expect(slider.value).toBe("2");
    expect(q("grokking-loss").dataset.markers).toBe("");
    expect(root.dataset.following).toBe("true");
  });

  test("Python setting selected_step moves the slider (nearest check) before and after frames", async () => {
    const model = makeModel({ selected_step: 190 });
    const { root, q } = mount(model);
    expect(q("grokking-check-readout").textContent).toBe("no checks yet");
    push(model, frame(1200, { C: 3 }));
    await nextFrame();
    const slider = q<HTMLInputElement>("grokking-slider");
    expect(slider.value).toBe("1"); // 190 is nearest check 200
    expect(root.dataset.selectedStep).toBe("200");
    model.set("selected_step", 300);
    expect(slider.value).toBe("2");
    expect(q("grokking-loss").dataset.markers).toBe("300");
    expect(model.saves).toBe(0); // following Python writes nothing back
  });

  test("new checks move the slider while following; a pinned check stays put", async () => {
    const model = makeModel();
    const { root, q } = await mountWith(model, frame(300, { C: 3 }));
    const slider = q<HTMLInputElement>("grokking-slider");
    push(model, frame(500, { C: 5 }));
    await nextFrame();
    expect([slider.max, slider.value]).toEqual(["4", "4"]);
    expect(root.dataset.selectedStep).toBe("500");
    slide(slider, 1);
    push(model, frame(700, { C: 7 }));
    await nextFrame();
    expect([slider.max, slider.value]).toEqual(["6", "1"]);
    expect(root.dataset.selectedStep).toBe("200");
    expect(q("grokking-check-readout").textContent).toMatch(/^check 2 of 7 · step 200 /);
  });

  test("the heatmap is recoloured only when the spectrum changes, not on every frame", async () => {
    const setData = vi.spyOn(CanvasHeatmap.prototype, "setData");
    const model = makeModel();
    const { root, el } = await mountWith(model, frame(300, { C: 3 }));
    expect(setData).toHaveBeenCalledTimes(1);
    const nodes = el.querySelectorAll("*").length;
    for (const step of [310, 320, 330]) {
      push(model, frame(step, { C: 3 }));
      await nextFrame();
    }
    expect(root.dataset.frames).toBe("4");
    expect(setData).toHaveBeenCalledTimes(1); // same checks, same spectrum
    expect(el.querySelectorAll("*").length).toBe(nodes); // no DOM rebuilt
    push(model, frame(340, { C: 3, shift: 1 })); // same checks, new values (e.g. a restored run)
    await nextFrame();
    expect(setData).toHaveBeenCalledTimes(2);
    push(model, frame(400, { C: 4 }));
    await nextFrame();
    expect(setData).toHaveBeenCalledTimes(3);
    const [values, rows, cols] = setData.mock.calls[2];
    expect([rows, cols]).toEqual([K, 4]);
    expect(Array.from(values!.subarray(4, 8))).toEqual([1, 2, 3, 4]); // frequency 2 across the checks
  });

  test("a click on the heatmap picks that check; hover reads a cell", async () => {
    const model = makeModel();
    const { q } = mount(model);
    const heat = q("grokking-spectrum");
    Object.defineProperty(heat, "clientWidth", { configurable: true, get: () => 300 });
    Object.defineProperty(heat, "clientHeight", { configurable: true, get: () => 200 });
    vi.spyOn(heat, "getBoundingClientRect").mockReturnValue({ left: 0, top: 0, width: 300, height: 200 } as DOMRect);
    push(model, frame(300, { C: 3 }));
    await nextFrame();
    const x0 = Number(heat.dataset.originX);
    const y0 = Number(heat.dataset.originY);
    const cell = Number(heat.dataset.cellWidth);
    const at = (row: number, col: number) => ({ clientX: x0 + (col + 0.5) * cell, clientY: y0 + (row + 0.5) * cell });
    heat.dispatchEvent(new MouseEvent("mousemove", at(1, 0)));
    expect(q("grokking-spectrum-readout").textContent).toBe("step 100 · frequency 2: 1");
    heat.dispatchEvent(new MouseEvent("click", at(1, 1)));
    expect(model.get("selected_step")).toBe(200);
    expect(model.saves).toBe(1);
    heat.dispatchEvent(new MouseEvent("mouseleave"));
    expect(q("grokking-spectrum-readout").textContent).toBe("");
  });

  test("picking a bar outlines it (keyboard too); Escape drops it", async () => {
    const model = makeModel();
    const { q } = await mountWith(model, frame(300, { C: 3 }));
    const bars = q("grokking-spectrum-bars");
    const canvas = q("grokking-spectrum-bars-canvas");
    expect(canvas.tabIndex).toBe(0);
    canvas.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(bars.dataset.selected).toBe("0");
    canvas.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(bars.dataset.selected).toBe("1");
    expect(q("grokking-spectrum-bars-readout").textContent).toBe("selected frequency 2: 3 (key)");
    canvas.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(bars.dataset.selected).toBe("");
    expect(model.saves).toBe(0); // a local pick, no trait
  });

  test("the slider's keys stay out of the notebook", async () => {
    const model = makeModel();
    const { el, q } = await mountWith(model, frame(300));
    const outside = vi.fn();
    el.addEventListener("keydown", outside);
    q("grokking-slider").dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowLeft", bubbles: true }));
    expect(outside).not.toHaveBeenCalled();
  });

  test("no checks yet: slider disabled, empty spectrum, no error", async () => {
    const model = makeModel();
    const { q } = await mountWith(model, frame(20, { C: 0, T: 2, phases: [] }));
    expect(q<HTMLInputElement>("grokking-slider").disabled).toBe(true);
    expect(q("grokking-check-readout").textContent).toBe("no checks yet");
    expect(q("grokking-spectrum-bars").dataset.count).toBe("0");
    expect(q("grokking-loss").dataset.points).toBe("4");
    expect(q("grokking-loss").dataset.bands ?? "").toBe("");
    expect(q("grokking-phase").textContent).toBe("no phase yet");
    expect(q("error").textContent).toBe("");
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
    model.set("progress", { done: 5, total: 100 });
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

  test("a stale fetched frame never overwrites a newer pushed one", async () => {
    const model = makeModel({ status: "running" });
    const { root } = mount(model);
    push(model, frame(2000));
    await nextFrame();
    replyFrame(model, model.requests("frame")[0].id, frame(1990), 0);
    await tick();
    await nextFrame();
    expect(root.dataset.step).toBe("2000");
    expect(root.dataset.frames).toBe("1");
  });

  test("errors reach the banner: the trait, a failed request and malformed frames", async () => {
    const model = makeModel();
    const { q } = mount(model);
    const banner = q("error");
    model.set("error", "TrainingDiverged: loss is NaN at step 17");
    expect(banner.textContent).toBe("TrainingDiverged: loss is NaN at step 17");
    model.set("error", "");
    model.replyError(model.requests("frame")[0].id, "RuntimeError", "boom");
    await tick();
    expect(banner.textContent).toBe("RuntimeError: boom");
    const bad = frame(10);
    bad.result.check_metrics = ["restricted_loss"];
    push(model, bad);
    expect(banner.textContent).toContain("frame check_values must have shape [1, 3], got [4, 3]");
    const noSpectrum = frame(10);
    delete noSpectrum.result.spectrum;
    push(model, noSpectrum);
    expect(banner.textContent).toContain("frame has no spectrum");
    push(model, frame(20)); // a good frame clears the frame errors (the request's was under "frame" too)
    expect(banner.textContent).toBe("");
  });

  test("dispose removes the view, its listeners and its event subscription", async () => {
    const model = makeModel();
    const { root, el, cleanup } = mount(model);
    push(model, frame(10));
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(el.querySelector("[data-testid=grokking]")).toBeNull();
    await nextFrame();
    push(model, frame(20));
    await nextFrame();
    expect(root.dataset.frames).toBe("0");
  });
});

describe("grokking helpers", () => {
  const views = (bufs: ArrayBuffer[]) => bufs.map((b) => new DataView(b));

  test("parseFrame reads every array and checks the spectrum's shape", () => {
    const f = frame(400, { C: 2, T: 3 });
    const parsed = parseFrame(f.result, views(f.buffers));
    expect([parsed.points, parsed.checks, parsed.K]).toEqual([3, 2, K]);
    expect(Array.from(parsed.checkSteps)).toEqual([100, 200]);
    expect(Array.from(row(parsed.checkValues, parsed.checkMetrics, 2, "weight_norm"))).toEqual([20, 19]);
    expect(row(parsed.values, parsed.metrics, 3, "nope")).toHaveLength(0);
    expect(parsed.phases).toEqual([
      { name: "memorisation", start: 0, end: 150 },
      { name: "circuit formation", start: 150, end: null },
    ]);
    expect(parsed.keyFrequencies).toEqual([2]);
    const wrong = frame(400, { C: 2 });
    const sp = encodeArray([1, 2, 3], [3, 1], "float32", { bufferIndex: 4 });
    wrong.result.spectrum = sp.header;
    wrong.buffers[4] = sp.buffer;
    expect(() => parseFrame(wrong.result, views(wrong.buffers))).toThrow(
      "frame spectrum must have shape [2 checks, K + 1], got [3, 1]",
    );
    expect(() => parseFrame(null, [])).toThrow("frame must be an object");
  });

  test("checkIndex: -1 follows the newest, a step picks the nearest check", () => {
    expect(checkIndex([100, 200, 300], -1)).toBe(2);
    expect(checkIndex([100, 200, 300], 100)).toBe(0);
    expect(checkIndex([100, 200, 300], 240)).toBe(1);
    expect(checkIndex([100, 200, 300], 9999)).toBe(2);
    expect(checkIndex([], -1)).toBe(-1);
    expect(checkIndex([], 100)).toBe(-1);
  });

  test("valuesAt reads the nearest logged step; spectrumImage transposes without the constant", () => {
    expect(Array.from(valuesAt([0, 10, 20], [1, 2, 3], [9, 20]))).toEqual([2, 3]);
    expect(Array.from(valuesAt([], [], [5]))).toEqual([NaN]);
    // [C = 2, K + 1 = 3]
    const { data, max } = spectrumImage(Float32Array.from([9, 1, 2, 9, 3, NaN]), 2, 2);
    expect(Array.from(data)).toEqual([1, 3, 2, NaN]);
    expect(max).toBe(3);
  });

  test("texts", () => {
    expect(keyFrequencyText([21, 20, 7])).toBe("key frequencies 21, 20, 7");
    expect(keyFrequencyText([])).toBe("no key frequencies yet");
    const f = frame(400, { C: 2 });
    const parsed = parseFrame(f.result, views(f.buffers));
    expect(checkText(parsed, 1, false)).toBe(
      "check 2 of 2 · step 200 · restricted loss 2 · excluded loss 20 · weight norm 19 · key fraction 0.1",
    );
    expect(checkText(parsed, 1, true)).toMatch(/^latest check · step 200 · /);
    expect(checkText(parsed, -1, true)).toBe("no checks yet");
  });
});
