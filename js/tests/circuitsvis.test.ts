/**
 * What the CircuitsVis drop-in (`mi_widgets.circuitsvis`) added to the views: the zero-anchored colour scale
 * (checked against Python's `transport/scale.py` through `tests/fixtures/scale_vectors.json`), AttentionView's
 * head names / masked upper triangle / colour scale / axis labels, ActivationView's names and labels of its axes
 * and fixed scale, LogitLens's fixed predictions with a target per cell, TopExamples' unit names.
 */

import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { anchoredColormap, cssColor, parseScale, rgbAt, sequentialColormap, withEmptyCells } from "../src/lib/colormap";
import activationWidget, { fixedScale } from "../src/views/activation";
import attentionWidget, { maskUpperTri } from "../src/views/attention";
import lensWidget, { decodeLens } from "../src/views/logit_lens";
import topWidget from "../src/views/top_examples";
import { FakeModel, fixture, mountView } from "./helpers";

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, method: string, reply: { result: unknown; buffers?: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers ?? []);
  return req;
}

afterEach(() => {
  document.body.replaceChildren();
  document.body.removeAttribute("data-jp-theme-light");
});

interface ScaleVector {
  lo: number;
  hi: number;
  negative: string;
  positive: string;
  theme: "light" | "dark";
  lut: number[][];
}

describe("the zero-anchored colour scale", () => {
  test("equals Python's table entry for entry (scale_vectors.json)", () => {
    const vectors = fixture<ScaleVector[]>("scale_vectors.json");
    expect(vectors.length).toBeGreaterThan(10);
    for (const v of vectors) {
      const cmap = anchoredColormap(v.theme, v);
      const rgb = Array.from({ length: 256 }, (_, i) => [...rgbAt(cmap, i)]);
      expect(rgb, JSON.stringify({ ...v, lut: undefined })).toEqual(v.lut);
    }
  });

  test("0..1 without colours is the sequential map; 0 is the background; ends are the given colours", () => {
    expect(anchoredColormap("light", { lo: 0, hi: 1, negative: "", positive: "" }).lut).toEqual(
      sequentialColormap("light").lut,
    );
    const scale = { lo: -1, hi: 2, negative: "#ff0000", positive: "#0000ff" };
    const cmap = anchoredColormap("light", scale);
    expect(cssColor(cmap, 0, -1, 2)).toBe("rgb(255, 255, 255)");
    expect(cssColor(cmap, 2, -1, 2)).toBe("rgb(0, 0, 255)");
    expect(cssColor(cmap, -1, -1, 2)).toBe("rgb(255, 0, 0)");
    expect(cssColor(cmap, 5, -1, 2)).toBe("rgb(0, 0, 255)"); // beyond an end: that end's colour
  });

  test("parseScale keeps only a finite lo < hi and #rrggbb colours", () => {
    expect(parseScale({ lo: -2, hi: 3, negative: "#ABCDEF", positive: "red" })).toEqual({
      lo: -2,
      hi: 3,
      negative: "#abcdef",
      positive: "",
    });
    expect(parseScale({ lo: 1, hi: 1 })).toEqual({ lo: 0, hi: 1, negative: "", positive: "" });
    expect(parseScale(null)).toEqual({ lo: 0, hi: 1, negative: "", positive: "" });
    expect(fixedScale({})).toBeNull();
    expect(fixedScale({ lo: -1, hi: 1, negative: "", positive: "" })).toEqual({
      lo: -1,
      hi: 1,
      negative: "",
      positive: "",
    });
  });

  test("maskUpperTri empties what is above the diagonal and leaves the data alone", () => {
    const data = Float32Array.from([1, 2, 3, 4]);
    const masked = maskUpperTri(data, 2);
    expect([...masked]).toEqual([1, NaN, 3, 4]);
    expect([...data]).toEqual([1, 2, 3, 4]);
  });
});

function attentionModel(attrs: Record<string, unknown> = {}) {
  return new FakeModel({
    n_layers: 1,
    n_heads: 2,
    tokens: ["A", " person", "!"],
    prompt: "",
    can_rerun: false,
    head_names: ["prev", "induction"],
    color_scale: { lo: -1, hi: 2, negative: "#ff0000", positive: "#0000ff" },
    mask_upper_tri: true,
    show_axis_labels: true,
    revision: 1,
    error: "",
    selected: { layer: 0, head: 1, query: null, key: null },
    ...attrs,
  });
}

function patternReply(head: number) {
  const values = [2, 0, 0, -1, 1, 0, 0.5, 0.5, 0];
  const { header, buffer } = encodeArray(values, [3, 3], "float16");
  return { result: { revision: 1, layer: 0, head, pattern: header }, buffers: [buffer] };
}

describe("AttentionView with CircuitsVis's options", () => {
  test("head names in the readout and grid; masked cells say so; the strip colours by the given scale", async () => {
    document.body.setAttribute("data-jp-theme-light", "true");
    const model = attentionModel();
    const { q } = mountView(attentionWidget, model, "attention-view");
    answer(model, "pattern", patternReply(1));
    await tick();
    expect(q("readout").textContent).toBe("induction  hover a cell or token; click to lock");
    model.set("selected", { layer: 0, head: 1, query: 0, key: 2 });
    expect(q("readout").textContent).toBe('induction  query 0 "A" -> key 2 "!": masked');
    model.set("selected", { layer: 0, head: 1, query: 1, key: 0 });
    expect(q("readout").textContent).toBe('induction  query 1 " person" -> key 0 "A": -1.000');
    model.set("selected", { layer: 0, head: 1, query: 0, key: null });
    const tokens = [...q("token-strip").querySelectorAll<HTMLElement>("[data-testid=token]")];
    const scale = { lo: -1, hi: 2, negative: "#ff0000", positive: "#0000ff" };
    const cmap = anchoredColormap("light", scale);
    expect(tokens[0].style.backgroundColor).toBe("rgb(0, 0, 255)"); // 2 = max_value: full positive colour
    expect(tokens[1].style.backgroundColor).toBe(cssColor(withEmptyCells(cmap, "light"), NaN, -1, 2)); // masked
    model.set("selected", { layer: 0, head: 1, query: 1, key: null });
    expect(tokens[0].style.backgroundColor).toBe("rgb(255, 0, 0)"); // -1 = min_value: full negative colour
  });

  test("without names the heads are L0H1; without masking the upper cells are values", async () => {
    const model = attentionModel({ head_names: [], mask_upper_tri: false, color_scale: {} });
    const { q } = mountView(attentionWidget, model, "attention-view");
    answer(model, "pattern", patternReply(1));
    await tick();
    model.set("selected", { layer: 0, head: 1, query: 0, key: 2 });
    expect(q("readout").textContent).toBe('L0H1  query 0 "A" -> key 2 "!": 0.000');
  });

  test("show_axis_labels=false leaves the tokens off the heatmap", async () => {
    const model = attentionModel({ show_axis_labels: false });
    const { q } = mountView(attentionWidget, model, "attention-view");
    answer(model, "pattern", patternReply(1));
    await tick();
    expect(q("pattern-heatmap")).not.toBeNull();
    model.set("show_axis_labels", true); // and back: a trait change relabels
    expect(q("pattern-heatmap")).not.toBeNull();
  });
});

function activationModel(attrs: Record<string, unknown> = {}) {
  return new FakeModel({
    hook: "",
    hooks: ["", ""],
    layers: [0, 1],
    n_layers: 2,
    d: 3,
    tokens: [
      ["A", " person"],
      ["is", " here", "!"],
    ],
    has_direction: false,
    layer_name: "Block",
    unit_name: "Feature",
    layer_labels: ["embed", "mlp"],
    unit_labels: ["f0", "f1", "f2"],
    prompt_labels: ["first", "second"],
    color_scale: { lo: -2, hi: 4, negative: "#ff0000", positive: "#0000ff" },
    revision: 0,
    error: "",
    selected: { layer: 0, neuron: 1, prompt_index: null, position: null },
    ...attrs,
  });
}

function valuesReply(layer: number, neuron: number) {
  const flat = [4, -2, 0, 1, 8];
  const values = encodeArray(flat, [5], "float16", { bufferIndex: 0 });
  const offs = encodeArray([0, 2, 5], [3], "int32", { bufferIndex: 1 });
  return {
    result: { revision: 0, layer, neuron, range: 8, values: values.header, offsets: offs.header },
    buffers: [values.buffer, offs.buffer],
  };
}

describe("ActivationView from arrays", () => {
  test("axis names and labels everywhere; a fixed scale colours by min_value..max_value", async () => {
    document.body.setAttribute("data-jp-theme-light", "true");
    const model = activationModel();
    const { q, el } = mountView(activationWidget, model, "activation-view");
    answer(model, "values", valuesReply(0, 1));
    await tick();
    expect(q("layer-name").textContent).toBe("Block ");
    expect(q("unit-name").textContent).toBe("Feature ");
    expect([...q<HTMLSelectElement>("layer-select").options].map((o) => o.textContent)).toEqual(["embed", "mlp"]);
    expect(q("neuron-range").textContent).toBe("of 0..2: f1");
    expect([...el.querySelectorAll("[data-testid=prompt-row] .miw-act-row-label")].map((e) => e.textContent)).toEqual([
      "first",
      "second",
    ]);
    expect(q("scale").textContent).toBe("colour: −2.000 … +4.000 (fixed)");
    const tokens = [...el.querySelectorAll<HTMLElement>("[data-testid=token]")];
    expect(tokens[0].style.backgroundColor).toBe("rgb(0, 0, 255)"); // 4 = max_value
    expect(tokens[1].style.backgroundColor).toBe("rgb(255, 0, 0)"); // -2 = min_value
    expect(tokens[2].style.backgroundColor).toBe("rgb(255, 255, 255)"); // 0: the background
    expect(tokens[4].style.backgroundColor).toBe("rgb(0, 0, 255)"); // 8: beyond the end
    tokens[3].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    tokens[3].dispatchEvent(new MouseEvent("mouseenter", { bubbles: true }));
    model.set("selected", { layer: 0, neuron: 1, prompt_index: 1, position: 1 });
    expect(q("readout-text").textContent).toContain('second, token 1 " here" · embed f1: +1.000 · top Features:');
  });

  test("without labels and scale it is the model path's view", async () => {
    const model = activationModel({
      layer_labels: [],
      unit_labels: [],
      prompt_labels: [],
      color_scale: {},
      layer_name: "layer",
      unit_name: "neuron",
    });
    const { q } = mountView(activationWidget, model, "activation-view");
    answer(model, "values", valuesReply(0, 1));
    await tick();
    expect(q("neuron-range").textContent).toBe("of 0..2");
    expect(q("scale").textContent).toBe("colour: −8.000 … +8.000 (max |value| of L0 n1 over all 2 prompts)");
  });
});

function lensReply() {
  const seq = 3;
  const k = 2;
  const parts: Array<[string, number[], number[], "int32" | "float16"]> = [
    ["top_ids", [1, 2, 2, 1, 1, 0], [1, seq, k], "int32"],
    ["top_probs", [0.6, 0.3, 0.5, 0.4, 0.7, 0.2], [1, seq, k], "float16"],
    ["vocab_ids", [0, 1, 2], [3], "int32"],
    ["target_probs", [0.3, 0.4, NaN], [1, seq], "float16"],
    ["target_ranks", [2, 2, 0], [1, seq], "int32"],
    ["target_ids", [2, 1, -1], [1, seq], "int32"],
  ];
  const result: Record<string, unknown> = {
    revision: 1,
    rows: 1,
    seq,
    k,
    vocab: ["t0", "t1", "t2"],
    target_id: null,
    target_token: "the next token",
  };
  const buffers: ArrayBuffer[] = [];
  parts.forEach(([name, values, shape, dtype], i) => {
    const { header, buffer } = encodeArray(values, shape, dtype, { bufferIndex: i });
    result[name] = header;
    buffers.push(buffer);
  });
  return { result, buffers };
}

describe("LogitLens from log probs", () => {
  test("decode keeps a target per cell", () => {
    const r = lensReply();
    const lens = decodeLens({ result: r.result, buffers: r.buffers.map((b) => new DataView(b)) } as never);
    expect([...(lens.targetIds ?? [])]).toEqual([2, 1, -1]);
  });

  test("no target box; the readout names each position's next token; the last has none", async () => {
    const model = new FakeModel({
      n_layers: 0,
      rows: ["output"],
      tokens: ["t0", "t2", "t1"],
      prompt: "",
      k: 2,
      target: null,
      target_id: null,
      target_token: "the next token",
      can_retarget: false,
      revision: 1,
      error: "",
      selected: { layer: null, position: null },
    });
    const { q } = mountView(lensWidget, model, "logit-lens");
    expect(q("target-button").hidden).toBe(true);
    answer(model, "lens", lensReply());
    await tick();
    expect(q("target-info").textContent).toBe("target: the token that came next");
    model.set("selected", { layer: 0, position: 0 });
    expect(q("readout-target").textContent).toBe('next token "t2": 30.0% (rank 2)');
    model.set("selected", { layer: 0, position: 2 });
    expect(q("readout-target").textContent).toBe("no next token here");
  });
});

describe("TopExamples from samples", () => {
  test("units are named by their labels and windows are samples", async () => {
    const model = new FakeModel({
      hook: "Layer x Neuron",
      neurons: [0, 1],
      k: 2,
      n_windows: 2,
      n_tokens: 9,
      unit_labels: ["Layer 0, Neuron 0", "Layer 0, Neuron 1"],
      window_name: "sample",
      status: "done",
      progress: { done: 0, total: 0 },
      error: "",
      revision: 0,
      selected: { neuron: 1 },
    });
    const { q, el } = mountView(topWidget, model, "top-examples");
    expect(q("info").textContent).toContain("2 samples, 9 tokens");
    const acts = encodeArray([0, 1], [1, 2], "float16", { bufferIndex: 0 });
    const values = encodeArray([1], [1], "float32", { bufferIndex: 1 });
    answer(model, "examples", {
      result: {
        revision: 0,
        neuron: 1,
        examples: [{ tokens: ["Another", " example"], max_index: 1, window: 0, position: 1, source: 0 }],
        example_acts: acts.header,
        example_values: values.header,
      },
      buffers: [acts.buffer, values.buffer],
    });
    await tick();
    expect(el.textContent).toContain("Layer 0, Neuron 1: top 1 example");
    expect(el.textContent).toContain("sample 0, token 1");
  });
});
