import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import widget, { displayValues, headAt, headLabel } from "../src/views/composition";
import { FakeModel, mountView } from "./helpers";

const L = 2;
const H = 3;
const N = L * H;
const BASELINE = 0.125;

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_layers: L,
    n_heads: H,
    mode: "K",
    relative: true,
    baseline: BASELINE,
    revision: 0,
    selected: { writer: null, reader: null },
    ...attrs,
  });
}

/** A [N, N] matrix: NaN unless writer layer < reader layer; value = 0.1 + writer/10 + reader/100 (+ 0.5 for V). */
function scoresReply(mode: string, revision = 0) {
  const values: number[] = [];
  for (let r = 0; r < N; r++) {
    for (let c = 0; c < N; c++) {
      values.push(headAt(r, H).layer < headAt(c, H).layer ? 0.1 + r / 10 + c / 100 + (mode === "V" ? 0.5 : 0) : NaN);
    }
  }
  const { header, buffer } = encodeArray(values, [N, N], "float16");
  return { result: { revision, mode, baseline: BASELINE, scores: header }, buffers: [buffer] };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, reply: { result: any; buffers: ArrayBuffer[] }) {
  const req = model.requests("scores").at(-1);
  model.reply(req.id, reply.result, reply.buffers);
  return req;
}

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "composition");
  const key = (k: string, times = 1) => {
    for (let i = 0; i < times; i++)
      mounted.q("composition-heatmap").dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
  };
  return { ...mounted, key };
}

afterEach(() => document.body.replaceChildren());

describe("composition helpers", () => {
  test("heads are layer-major and labelled L<layer>H<head>", () => {
    expect(headAt(4, 3)).toEqual({ layer: 1, head: 1 });
    expect(headLabel(headAt(11, 12))).toBe("L0H11");
    expect(headLabel(headAt(12, 12))).toBe("L1H0");
  });

  test("relative values subtract the baseline on a symmetric scale; raw ones start at 0; NaN stays NaN", () => {
    const data = new Float32Array([0.3, NaN, 0.05, 0.2]);
    const rel = displayValues(data, 0.125, true);
    expect(Array.from(rel.values).map((v) => (Number.isNaN(v) ? "nan" : v.toFixed(3)))).toEqual([
      "0.175",
      "nan",
      "-0.075",
      "0.075",
    ]);
    expect(rel.hi).toBeCloseTo(0.175, 6);
    expect(rel.lo).toBeCloseTo(-0.175, 6);
    const raw = displayValues(data, 0.125, false);
    expect(raw.lo).toBe(0);
    expect(raw.hi).toBeCloseTo(0.3, 6);
    expect(displayValues(new Float32Array([NaN]), 0, true)).toMatchObject({ lo: -1, hi: 1 }); // nothing finite: a valid range
  });
});

describe("CompositionView", () => {
  test("asks for the model's mode, then shows the scale and a hint", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    for (const id of ["mode-Q", "mode-K", "mode-V", "relative", "scale", "readout", "error", "composition-heatmap"])
      expect(q(id), id).not.toBeNull();
    expect(root.dataset.mode).toBe("K");
    expect(q("mode-K").getAttribute("aria-pressed")).toBe("true");
    expect(q("mode-Q").getAttribute("aria-pressed")).toBe("false");
    expect((q("relative") as HTMLInputElement).checked).toBe(true);
    expect(q("relative").parentElement!.textContent).toContain("0.125");
    expect(model.requests("scores").map((r) => r.params)).toEqual([{ mode: "K" }]);
    expect(root.dataset.loading).toBe("true");
    answer(model, scoresReply("K"));
    await tick();
    expect(root.dataset.loading).toBeUndefined();
    expect(root.dataset.revision).toBe("0");
    // largest |score - baseline|: writer row 2 (0.3), reader col 5 (0.05) -> 0.35 + ... - 0.125
    expect(q("scale").textContent).toMatch(/^colour: −0\.2\d\d … \+0\.2\d\d vs random$/);
    expect(q("readout").textContent).toContain("click to select");
    expect(q("error").textContent).toBe("");
  });

  test("mode buttons set the mode in Python; each mode is fetched once and cached", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    answer(model, scoresReply("K"));
    await tick();
    q("mode-V").click();
    expect(model.get("mode")).toBe("V");
    expect(model.saves).toBe(1);
    expect(root.dataset.mode).toBe("V");
    expect(q("mode-V").getAttribute("aria-pressed")).toBe("true");
    expect(model.requests("scores").map((r) => r.params)).toEqual([{ mode: "K" }, { mode: "V" }]);
    answer(model, scoresReply("V"));
    await tick();
    model.set("mode", "K"); // from Python
    expect(root.dataset.mode).toBe("K");
    expect(model.requests("scores")).toHaveLength(2); // K came from the cache
  });

  test("hover readout, select with the keyboard, toggle off, and refuse a pair that cannot compose", async () => {
    const model = makeModel();
    const { q, key, root } = mount(model);
    answer(model, scoresReply("K"));
    await tick();
    key("ArrowDown"); // cursor appears at (0, 0)
    key("ArrowDown", 2);
    key("ArrowRight", 4); // row 2 = L0H2, col 4 = L1H1
    const v = 0.1 + 2 / 10 + 4 / 100;
    expect(q("readout").textContent).toContain(
      `L0H2 → L1H1: K-composition ${v.toFixed(3)} (random 0.125, +${(v - BASELINE).toFixed(3)})`,
    );
    key("Enter");
    expect(model.get("selected")).toEqual({ writer: [0, 2], reader: [1, 1] });
    expect(root.dataset.selected).toBe("L0H2>L1H1");
    key("Enter");
    expect(model.get("selected")).toEqual({ writer: null, reader: null });
    key("ArrowLeft", 4); // col 0 = L0H0: same layer
    expect(q("readout").textContent).toContain("L0H2 → L0H0: no composition");
    key("Enter");
    expect(model.get("selected")).toEqual({ writer: null, reader: null });
    expect(q("readout").textContent).toContain("must be in a later layer");
  });

  test("a selection made in Python is shown; Escape clears it", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    answer(model, scoresReply("K"));
    await tick();
    model.set("selected", { writer: [0, 1], reader: [1, 2] });
    expect(root.dataset.selected).toBe("L0H1>L1H2");
    expect(q("readout").textContent).toContain("L0H1 → L1H2: K-composition");
    q("composition-heatmap").dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(model.get("selected")).toEqual({ writer: null, reader: null });
    expect(root.dataset.selected).toBe("");
  });

  test("the relative box switches to raw scores on a 0-based scale", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    answer(model, scoresReply("K"));
    await tick();
    const box = q<HTMLInputElement>("relative");
    box.checked = false;
    box.dispatchEvent(new Event("change"));
    expect(model.get("relative")).toBe(false);
    expect(root.dataset.relative).toBe("false");
    expect(q("scale").textContent).toMatch(/^colour: 0 … 0\.\d{3}$/);
  });

  test("a refresh refetches and drops replies computed before it", async () => {
    const model = makeModel();
    const { root } = mount(model);
    model.set("revision", 1);
    const stale = model.requests("scores")[0];
    model.reply(stale.id, scoresReply("K", 0).result, scoresReply("K", 0).buffers);
    await tick();
    expect(root.dataset.revision).toBeUndefined();
    answer(model, scoresReply("K", 1));
    await tick();
    expect(root.dataset.revision).toBe("1");
  });

  test("a reply for an old revision is never drawn; modes cached for it are asked again", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    answer(model, scoresReply("K"));
    await tick();
    q("mode-V").click();
    answer(model, scoresReply("V"));
    await tick();
    expect(root.dataset.revision).toBe("0");
    q("mode-K").click(); // from the cache
    expect(model.requests("scores")).toHaveLength(2);
    q("mode-Q").click();
    const first = model.requests("scores").at(-1);
    model.set("revision", 1); // a refresh while Q is out: cancelled and asked again
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === first.id)).toBe(true);
    const second = model.requests("scores").at(-1);
    expect(second.id).not.toBe(first.id);
    expect(second.params).toEqual({ mode: "Q" });
    // The first reply arrives anyway (it crossed the cancel), then one for the new request computed
    // for the old revision (the kernel was behind): neither is drawn.
    model.reply(first.id, scoresReply("Q", 0).result, scoresReply("Q", 0).buffers);
    await tick();
    expect(root.dataset.loading).toBe("true");
    model.reply(second.id, scoresReply("Q", 0).result, scoresReply("Q", 0).buffers);
    await tick();
    expect(root.dataset.revision).toBe("0");
    expect(q("readout").textContent).toContain("Hover a cell");
    // K was cached for revision 0 only: asked again
    q("mode-K").click();
    expect(model.requests("scores").at(-1).params).toEqual({ mode: "K" });
    expect(model.requests("scores")).toHaveLength(5);
    answer(model, scoresReply("K", 1));
    await tick();
    expect(root.dataset.revision).toBe("1");
    expect(root.dataset.loading).toBeUndefined();
    expect(q("error").textContent).toBe("");
  });

  test("failed requests and malformed replies go to the banner, and the view keeps working", async () => {
    const model = makeModel();
    const { q } = mount(model);
    const req = model.requests("scores")[0];
    model.replyError(req.id, "RuntimeError", "weights are meta tensors");
    await tick();
    expect(q("error").textContent).toContain("weights are meta tensors");
    model.set("mode", "Q");
    const { header, buffer } = encodeArray([1, 2, 3, 4], [2, 2], "float32");
    answer(model, { result: { revision: 0, mode: "Q", baseline: 0.1, scores: header }, buffers: [buffer] });
    await tick();
    expect(q("error").textContent).toContain("shape [6, 6]");
    model.set("mode", "V");
    answer(model, scoresReply("V"));
    await tick();
    expect(q("error").textContent).toBe("");
  });

  test("dispose removes the view and its listeners", () => {
    const model = makeModel();
    const { cleanup, el } = mount(model);
    const listeners = model.listenerCount();
    expect(listeners).toBeGreaterThan(0);
    cleanup();
    expect(el.querySelector("[data-testid=composition]")).toBeNull();
    expect(model.listenerCount()).toBe(0);
  });
});
