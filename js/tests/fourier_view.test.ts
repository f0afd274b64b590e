import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import widget, {
  clusterNeurons,
  decodeGrid,
  decodeLogits,
  decodeSummary,
  type FourierGrid,
  formatPercent,
  gridScale,
  headerText,
  parseSelected,
  rankOf,
} from "../src/views/fourier_view";
import { FakeModel, mountView } from "./helpers";

const P = 11;
const K = 5;
const N_NEURONS = 8;
const N_HEADS = 2;
const EVIL = "<img src=x onerror=alert(1)>";
/** Dominant frequency of each neuron (0 = dead) and the share of its variance it explains. */
const NEURON_FREQ = [3, 3, 1, 0, 3, 2, 1, 3];
const NEURON_FRAC = [0.9, 0.95, 0.8, 0, 0.7, 0.6, 0.85, 0.95];
const CLUSTERS = [
  { frequency: 3, count: 4, mean_fraction: 0.875 },
  { frequency: 1, count: 2, mean_fraction: 0.825 },
  { frequency: 2, count: 1, mean_fraction: 0.6 },
  { frequency: 0, count: 1, mean_fraction: 0 },
];

/** A model whose `selected` starts as `sel` over the default (nothing picked, head 0, pair (2, 5)). */
function makeModel(sel: Record<string, unknown> = {}, attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    p: P,
    n_neurons: N_NEURONS,
    n_heads: N_HEADS,
    key_frequencies: [3, 1],
    key_fraction: 0.7953,
    revision: 1,
    error: "",
    ...attrs,
    selected: { frequency: null, neuron: null, head: 0, a: 2, b: 5, ...sel },
  });
}

/** Python (or another view) changing some keys of `selected`. */
function select(model: FakeModel, change: Record<string, unknown>) {
  model.set("selected", { ...model.get("selected"), ...change });
}

const sel = (model: FakeModel) => model.get("selected");

type Arrays = Array<[string, number[], number[], "float32" | "float16" | "int32"]>;

function withArrays(result: Record<string, unknown>, arrays: Arrays) {
  const buffers: ArrayBuffer[] = [];
  for (const [name, values, shape, dtype] of arrays) {
    const { header, buffer } = encodeArray(values, shape, dtype, { bufferIndex: buffers.length });
    result[name] = header;
    buffers.push(buffer);
  }
  return { result, buffers };
}

function summaryReply(revision = 1, patch: Record<string, unknown> = {}) {
  return withArrays({ revision, p: P, key_frequencies: [3, 1], key_fraction: 0.7953, clusters: CLUSTERS, ...patch }, [
    ["embed_norms", [9, 1, 0.5, 4, 0.25, 0.125], [K + 1], "float32"],
    ["logit_fractions", [0, 0.3, 0.05, 0.5, 0.01, 0.02], [K + 1], "float32"],
    ["neuron_frequency", NEURON_FREQ, [N_NEURONS], "int32"],
    ["neuron_fraction", NEURON_FRAC, [N_NEURONS], "float32"],
  ]);
}

/** Cell (a, b) of a grid holds (a * P + b) / 100 + index (so grids of different units differ). */
function gridReply(kind: string, index: number, revision = 1, label = `${kind} ${index}`) {
  const values = Array.from({ length: P * P }, (_, i) => i / 100 + index);
  return withArrays({ revision, kind, index, min: index, max: (P * P - 1) / 100 + index, label }, [
    ["values", values, [P, P], "float16"],
  ]);
}

function logitsReply(a: number, b: number, revision = 1, correlation: number | null = 0.9871) {
  const answer = (a + b) % P;
  const logits = Array.from({ length: P }, (_, c) => (c === answer ? 10 : c / 10));
  const prediction = Array.from({ length: P }, (_, c) => (c === answer ? 9 : 0));
  return withArrays({ revision, a, b, answer, correlation }, [
    ["logits", logits, [P], "float32"],
    ["prediction", prediction, [P], "float32"],
  ]);
}

const asResponse = (r: { result: any; buffers: ArrayBuffer[] }) => ({
  result: r.result,
  buffers: r.buffers.map((b) => new DataView(b)),
});

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, method: string, reply: { result: unknown; buffers?: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers ?? []);
  return req;
}

/** Answer the newest `grid` request with the grid it asks for. */
function answerGrid(model: FakeModel, revision = 1, label?: string) {
  const req = model.requests("grid").at(-1);
  const { kind, index } = req.params;
  const reply = gridReply(kind, index, revision, label);
  model.reply(req.id, reply.result, reply.buffers);
  return req;
}

const keydown = (target: Element, key: string) => {
  const ev = new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true });
  target.dispatchEvent(ev);
  return ev;
};

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "fourier");
  const all = (id: string) => [...mounted.el.querySelectorAll<HTMLElement>(`[data-testid=${id}]`)];
  const pressed = (id: string) => all(id).filter((b) => b.getAttribute("aria-pressed") === "true");
  return { ...mounted, all, pressed };
}

/** Mount and answer the first summary, grid(s) and logits. */
async function loaded(selected: Record<string, unknown> = {}) {
  const model = makeModel(selected);
  const m = mount(model);
  answer(model, "summary", summaryReply());
  // Each grid reply, once drawn, asks for the next wanted grid.
  for (let answered = 0; model.requests("grid").length > answered; answered++) {
    answerGrid(model);
    await tick();
  }
  const { a, b } = model.get("selected");
  answer(model, "logits", logitsReply(a, b));
  await tick();
  return { model, ...m };
}

afterEach(() => document.body.replaceChildren());

describe("fourier helpers", () => {
  test("decodeSummary reads every array and checks the shapes against p", () => {
    const s = decodeSummary(asResponse(summaryReply()));
    expect(s.p).toBe(P);
    expect(Array.from(s.embedNorms)).toEqual([9, 1, 0.5, 4, 0.25, 0.125]);
    expect(s.logitFractions[3]).toBeCloseTo(0.5);
    expect(Array.from(s.neuronFrequency)).toEqual(NEURON_FREQ);
    expect(s.neuronFraction[1]).toBeCloseTo(0.95);
    expect(s.keyFrequencies).toEqual([3, 1]);
    expect(s.keyFraction).toBeCloseTo(0.7953);
    expect(s.clusters).toEqual(CLUSTERS);
  });

  test("decodeSummary refuses malformed replies with messages that say what was expected", () => {
    const bad = (patch: Record<string, unknown>) => () => decodeSummary(asResponse(summaryReply(1, patch)));
    expect(bad({ p: 1.5 })).toThrow("summary p must be a whole number of at least 3, got 1.5");
    expect(bad({ p: 13 })).toThrow("summary embed_norms must have shape [7], got shape [6]");
    expect(bad({ key_frequencies: "21" })).toThrow("summary key_frequencies must be a list of whole numbers");
    expect(bad({ clusters: [{ frequency: 3 }] })).toThrow(
      "summary clusters[0] must be {frequency, count, mean_fraction}",
    );
    const short = summaryReply();
    const two = encodeArray([1, 2], [2], "float32", { bufferIndex: short.buffers.length });
    short.result.neuron_fraction = two.header;
    short.buffers.push(two.buffer);
    expect(() => decodeSummary(asResponse(short))).toThrow(
      "summary neuron_fraction must have shape [8], got shape [2]",
    );
    const missing = summaryReply();
    missing.result.embed_norms = null;
    expect(() => decodeSummary(asResponse(missing))).toThrow("summary embed_norms must be an array header, got null");
  });

  test("decodeGrid reads a square float16 grid and checks what was asked for", () => {
    const g = decodeGrid(asResponse(gridReply("neuron", 4)), { kind: "neuron", index: 4 });
    expect([g.kind, g.index, g.p, g.label]).toEqual(["neuron", 4, P, "neuron 4"]);
    expect(g.values[P + 2]).toBeCloseTo(4 + 13 / 100, 2);
    expect(() => decodeGrid(asResponse(gridReply("neuron", 4)), { kind: "neuron", index: 5 })).toThrow(
      "grid reply is for neuron 4, but neuron 5 was asked for",
    );
    expect(() => decodeGrid(asResponse(gridReply("mlp", 4)))).toThrow('grid kind must be "neuron" or "attention"');
    const flat = withArrays({ kind: "attention", index: 0, min: 0, max: 1, label: "" }, [
      ["values", [1, 2, 3, 4, 5, 6], [2, 3], "float32"],
    ]);
    expect(() => decodeGrid(asResponse(flat))).toThrow("grid values must have shape [p, p], got [2, 3]");
  });

  test("decodeLogits reads logits and prediction; a non-finite correlation is not known", () => {
    const l = decodeLogits(asResponse(logitsReply(7, 8)), P);
    expect([l.a, l.b, l.answer]).toEqual([7, 8, 4]);
    expect(l.logits[4]).toBe(10);
    expect(l.prediction[4]).toBe(9);
    expect(l.correlation).toBeCloseTo(0.9871);
    expect(decodeLogits(asResponse(logitsReply(7, 8, 1, null))).correlation).toBeNull();
    expect(() => decodeLogits(asResponse(logitsReply(7, 8)), 13)).toThrow(
      "logits logits must have shape [13], got shape [11]",
    );
    const bad = logitsReply(7, 8);
    bad.result.answer = "4";
    expect(() => decodeLogits(asResponse(bad))).toThrow("logits a, b and answer must be whole numbers");
  });

  test("header, percentages, pairs, ranks", () => {
    expect(headerText(113, [21, 20, 7, 5, 42], 0.7953)).toBe(
      "P = 113 · key frequencies 21, 20, 7, 5, 42 · they explain 79.5% of the logits",
    );
    expect(headerText(113, [], NaN)).toBe("P = 113 · no key frequencies yet");
    expect(headerText(null, [3], NaN)).toBe("P = ? · key frequencies 3");
    expect(formatPercent(0.5)).toBe("50.0%");
    expect(formatPercent(0.876, 0)).toBe("88%");
    expect(formatPercent(NaN)).toBe("—");
    const lim = { k: 5, neurons: 8, heads: 2, p: 11 };
    expect(parseSelected({ frequency: 3, neuron: 7, head: 1, a: 2, b: 5 }, lim)).toEqual({
      frequency: 3,
      neuron: 7,
      head: 1,
      pair: [2, 5],
    });
    expect(parseSelected({ frequency: 5, neuron: 0, head: 0, a: 10, b: 0 }, lim)).toEqual({
      frequency: 5,
      neuron: 0,
      head: 0,
      pair: [10, 0],
    });
    // Out of range, none, or not whole numbers: read as none, each key on its own.
    expect(parseSelected({ frequency: 6, neuron: 8, head: 2, a: 11, b: 0 }, lim)).toEqual({
      frequency: null,
      neuron: null,
      head: null,
      pair: null,
    });
    expect(parseSelected({ frequency: 0, neuron: null, head: 1, a: 1.5, b: 2 }, lim)).toEqual({
      frequency: null,
      neuron: null,
      head: 1,
      pair: null,
    });
    expect(parseSelected({ frequency: 40, neuron: 300, head: 9, a: 100, b: 7 })).toEqual({
      frequency: 40,
      neuron: 300,
      head: 9,
      pair: [100, 7],
    }); // no limits known yet
    expect(parseSelected(null)).toEqual({ frequency: null, neuron: null, head: null, pair: null });
    expect(rankOf([1, 5, 3, 5], 2)).toBe(3);
    expect(rankOf([1, 5, 3, 5], 1)).toBe(1);
  });

  test("clusterNeurons lists a frequency's neurons best first, ties by index, capped", () => {
    expect(clusterNeurons(NEURON_FREQ, NEURON_FRAC, 3)).toEqual({ neurons: [1, 7, 0, 4], total: 4 });
    expect(clusterNeurons(NEURON_FREQ, NEURON_FRAC, 3, 2)).toEqual({ neurons: [1, 7], total: 4 });
    expect(clusterNeurons(NEURON_FREQ, NEURON_FRAC, 4)).toEqual({ neurons: [], total: 0 });
    expect(clusterNeurons([1, 1], [NaN, 0.1], 1).neurons).toEqual([1, 0]);
  });

  test("gridScale: sequential from the reply's range, symmetric diverging across 0, attention from 0", () => {
    const g = (kind: "neuron" | "attention", min: number, max: number, values = [0]): FourierGrid => ({
      kind,
      index: 0,
      p: 1,
      values: Float32Array.from(values),
      min,
      max,
      label: "",
    });
    expect(gridScale(g("neuron", 0.5, 2))).toEqual({ diverging: false, lo: 0.5, hi: 2 });
    expect(gridScale(g("neuron", -1, 3))).toEqual({ diverging: true, lo: -3, hi: 3 });
    expect(gridScale(g("attention", 0.2, 0.9))).toEqual({ diverging: false, lo: 0, hi: 0.9 });
    expect(gridScale(g("neuron", 2, 2))).toEqual({ diverging: false, lo: 2, hi: 3 });
    expect(gridScale(g("neuron", NaN, NaN, [1, NaN, 4]))).toEqual({ diverging: false, lo: 1, hi: 4 });
  });
});

describe("FourierView", () => {
  test("renders its parts with their testids and asks for the summary, the head's grid and the pair's logits", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    for (const id of [
      "fourier-header",
      "fourier-embed-bars",
      "fourier-logit-bars",
      "fourier-clusters",
      "fourier-neurons",
      "fourier-neuron-grid",
      "fourier-attention-grid",
      "fourier-heads",
      "fourier-logits-chart",
      "fourier-correlation",
      "error",
    ])
      expect(q(id), id).not.toBeNull();
    expect(q("fourier-header").textContent).toBe("P = 11 · key frequencies 3, 1 · they explain 79.5% of the logits");
    expect(model.requests("summary")).toHaveLength(1);
    expect(model.requests("grid").map((r) => r.params)).toEqual([{ kind: "attention", index: 0 }]); // no neuron yet
    expect(model.requests("logits").map((r) => r.params)).toEqual([{ a: 2, b: 5 }]);
    expect(root.dataset.pair).toBe("2,5");
    expect(root.dataset.neuron).toBe("-1");
    expect(q("fourier-neuron-readout").textContent).toBe("Pick a neuron (a cluster, then a neuron button).");
    await tick();
    expect(root.dataset.loading).toBe("true");
  });

  test("the summary draws the bars (constant left out, keys highlighted) and the clusters", async () => {
    const { q, all, root } = await loaded();
    const embed = q("fourier-embed-bars");
    expect(embed.dataset.count).toBe(String(K));
    expect(embed.dataset.highlight).toBe("0,2"); // frequencies 1 and 3
    expect(q("fourier-logit-bars").dataset.count).toBe(String(K));
    expect(q("fourier-embed-bars-readout").textContent).toBe("largest k 3: 4 (key)");
    expect(q("fourier-logit-bars-readout").textContent).toBe("largest k 3: 50.0% (key)");
    const clusters = all("fourier-cluster");
    expect(clusters.map((b) => b.dataset.frequency)).toEqual(["3", "1", "2"]);
    expect(clusters[0].textContent).toBe("k 3 · 4 neurons · 88%");
    expect(q("fourier-clusters").textContent).toContain("dead · 1 neuron");
    expect(root.dataset.revision).toBe("1");
    expect(root.dataset.loading).toBeUndefined();
  });

  test("a cluster click selects its frequency; its neurons become buttons that select a neuron", async () => {
    const { model, q, all, pressed } = await loaded();
    expect(all("fourier-neuron")).toHaveLength(0);
    expect(q("fourier-neurons-caption").textContent).toBe("Pick a frequency (a bar or a cluster) to list its neurons.");
    all("fourier-cluster")[0].click();
    expect(sel(model)).toEqual({ frequency: 3, neuron: null, head: 0, a: 2, b: 5 }); // the whole dict
    expect(model.saves).toBe(1);
    expect(pressed("fourier-cluster").map((b) => b.dataset.frequency)).toEqual(["3"]);
    expect(q("fourier-embed-bars").dataset.selected).toBe("2");
    expect(q("fourier-logit-bars").dataset.selected).toBe("2");
    expect(all("fourier-neuron").map((b) => b.dataset.neuron)).toEqual(["1", "7", "0", "4"]);
    expect(all("fourier-neuron")[0].textContent).toBe("#1 95%");
    expect(q("fourier-neurons-caption").textContent).toContain("Neurons of frequency 3: 4");
    all("fourier-neuron")[1].click();
    expect(sel(model).neuron).toBe(7);
    expect(pressed("fourier-neuron").map((b) => b.dataset.neuron)).toEqual(["7"]);
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "neuron", index: 7 });
  });

  test("bars: arrows and Enter select a frequency, Escape clears it", async () => {
    const { model, q } = await loaded();
    const canvas = q("fourier-logit-bars-canvas");
    expect(canvas.tabIndex).toBe(0);
    expect(keydown(canvas, "ArrowRight").defaultPrevented).toBe(true);
    expect(sel(model).frequency).toBe(1); // nothing selected: the first bar
    keydown(canvas, "ArrowRight");
    keydown(canvas, "ArrowRight");
    expect(sel(model).frequency).toBe(3);
    keydown(q("fourier-embed-bars-canvas"), "End");
    expect(sel(model).frequency).toBe(K);
    keydown(canvas, "Escape");
    expect(sel(model).frequency).toBeNull();
    expect(q("fourier-embed-bars").dataset.selected).toBe("");
  });

  test("one grid resource serves both maps: the neuron's first, then the head's, then nothing", async () => {
    const model = makeModel({ neuron: 1, frequency: 3 });
    const { q } = mount(model);
    answer(model, "summary", summaryReply());
    expect(model.requests("grid").map((r) => r.params)).toEqual([{ kind: "neuron", index: 1 }]);
    select(model, { head: 1 }); // while the neuron's is out: folded, asked for after it
    expect(model.requests("grid")).toHaveLength(1);
    answerGrid(model);
    await tick();
    expect(q("fourier-neuron-panel").dataset.index).toBe("1");
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "attention", index: 1 });
    answerGrid(model);
    await tick();
    expect(q("fourier-attention-panel").dataset.index).toBe("1");
    expect(model.requests("grid")).toHaveLength(2);
    // Back to head 0: asked for; head 1 stays drawn, dimmed, until it comes.
    select(model, { head: 0 });
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "attention", index: 0 });
    expect(q("fourier-attention-panel").dataset.stale).toBe("true");
    answerGrid(model);
    await tick();
    expect(q("fourier-attention-panel").dataset.stale).toBe("false");
    expect(q("fourier-attention-panel").dataset.index).toBe("0");
    select(model, { head: 1 }); // cached for this revision: drawn without asking
    expect(model.requests("grid")).toHaveLength(3);
    expect(q("fourier-attention-panel").dataset.index).toBe("1");
    // A new revision asks for both again, neuron first.
    model.set("revision", 2);
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "neuron", index: 1 });
    answerGrid(model, 2);
    await tick();
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "attention", index: 1 });
    answerGrid(model, 2);
    await tick();
    expect(q("fourier-neuron-panel").dataset.revision).toBe("2");
    expect(q("fourier-attention-panel").dataset.revision).toBe("2");
    expect(model.requests("grid")).toHaveLength(5);
    select(model, { neuron: null }); // no neuron: its map empties, nothing is asked
    expect(model.requests("grid")).toHaveLength(5);
    expect(q("fourier-neuron-panel").dataset.index).toBe("");
  });

  test("heads: one button per head sets selected.head; arrows move between the buttons", async () => {
    const { model, all, pressed } = await loaded();
    const heads = all("fourier-head");
    expect(heads.map((b) => b.textContent)).toEqual(["H0", "H1"]);
    expect(pressed("fourier-head").map((b) => b.dataset.head)).toEqual(["0"]);
    heads[0].focus();
    expect(keydown(heads[0], "ArrowRight").defaultPrevented).toBe(true);
    expect(document.activeElement).toBe(heads[1]);
    (document.activeElement as HTMLElement).click();
    expect(sel(model).head).toBe(1);
    expect(pressed("fourier-head").map((b) => b.dataset.head)).toEqual(["1"]);
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "attention", index: 1 });
    model.set("n_heads", 4);
    expect(all("fourier-head")).toHaveLength(4);
  });

  test("maps: the keyboard cursor reads 'a, b: value' on both maps; Enter selects the pair", async () => {
    const { model, q, root } = await loaded({ neuron: 2 });
    expect(q("fourier-neuron-readout").textContent).toBe("neuron 2 · a 2, b 5: 2.27"); // the selected pair
    const grid = q("fourier-attention-grid");
    keydown(grid, "ArrowDown"); // from the locked pair (2, 5)
    expect(q("fourier-attention-readout").textContent).toBe("attention 0 · a 3, b 5: 0.38");
    expect(q("fourier-neuron-readout").textContent).toBe("neuron 2 · a 3, b 5: 2.38");
    keydown(grid, "Enter");
    expect([sel(model).a, sel(model).b]).toEqual([3, 5]);
    expect(root.dataset.pair).toBe("3,5");
    expect(model.requests("logits").at(-1).params).toEqual({ a: 3, b: 5 });
    expect(q("fourier-logits-caption").textContent).toContain("loading the new pair");
    answer(model, "logits", logitsReply(3, 5));
    await tick();
    expect(q("fourier-logits-caption").textContent).toBe(
      "3 + 5 mod 11 = 8 · its logit 10 (rank 1 of 11) · prediction 9",
    );
  });

  test("logits: caption with the answer, the correlation as text, both series on the chart", async () => {
    const { q } = await loaded();
    expect(q("fourier-logits-caption").textContent).toBe(
      "2 + 5 mod 11 = 7 · its logit 10 (rank 1 of 11) · prediction 9",
    );
    expect(q("fourier-logits-caption").dataset.answer).toBe("7");
    expect(q("fourier-correlation").textContent).toBe(
      "prediction vs logits: r = 0.987 over all pairs (a, b) and answers c",
    );
    expect(q("fourier-correlation").dataset.r).toBe("0.9871");
    const chart = q("fourier-logits-chart");
    expect(chart.querySelector(".miw-line-chart-title")!.textContent).toBe("Logits over c for a = 2, b = 5");
    expect(q("fourier-logits-chart-readout").textContent).toBe("c 10 · logits 1 · key-frequency prediction 0");
  });

  test("Python setting the selection traits redraws everything that shows them", async () => {
    const { model, q, all, pressed, root } = await loaded();
    select(model, { frequency: 1 });
    expect(q("fourier-embed-bars").dataset.selected).toBe("0");
    expect(pressed("fourier-cluster").map((b) => b.dataset.frequency)).toEqual(["1"]);
    expect(all("fourier-neuron").map((b) => b.dataset.neuron)).toEqual(["6", "2"]);
    select(model, { neuron: 6 });
    expect(pressed("fourier-neuron").map((b) => b.dataset.neuron)).toEqual(["6"]);
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "neuron", index: 6 });
    select(model, { a: 10, b: 0 });
    expect(root.dataset.pair).toBe("10,0");
    expect(model.requests("logits").at(-1).params).toEqual({ a: 10, b: 0 });
    model.set("key_frequencies", [2]);
    expect(q("fourier-embed-bars").dataset.highlight).toBe("1");
    expect(q("fourier-header").textContent).toBe("P = 11 · key frequencies 2 · they explain 79.5% of the logits");
    select(model, { frequency: 99 }); // out of range: read as none
    expect(q("fourier-embed-bars").dataset.selected).toBe("");
    expect(root.dataset.frequency).toBe("0");
    expect(model.saves).toBe(0); // the view never wrote back what Python set
  });

  test("a failed grid shows in the banner; the other map still loads and the next success clears it", async () => {
    const model = makeModel({ neuron: 0 });
    const { q } = mount(model);
    answer(model, "summary", summaryReply());
    const req = model.requests("grid").at(-1);
    expect(req.params).toEqual({ kind: "neuron", index: 0 });
    model.replyError(req.id, "ValueError", "neuron 0 is out of range");
    await tick();
    expect(q("error").textContent).toContain("neuron 0 is out of range");
    expect(q("fourier-embed-bars").dataset.count).toBe(String(K));
    // The failed neuron is skipped: the head's grid is asked for and drawn.
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "attention", index: 0 });
    answerGrid(model);
    await tick();
    expect(q("fourier-attention-panel").dataset.index).toBe("0");
    expect(model.requests("grid")).toHaveLength(2); // not asked again by itself
    answer(model, "logits", logitsReply(2, 5));
    await tick();
    expect(q("fourier-correlation").dataset.r).toBe("0.9871");
    select(model, { neuron: 1 });
    expect(model.requests("grid").at(-1).params).toEqual({ kind: "neuron", index: 1 });
    answerGrid(model);
    await tick();
    expect(q("error").textContent).toBe("");
    expect(q("fourier-neuron-panel").dataset.index).toBe("1");
  });

  test("a malformed summary is an error in the banner, not a broken view", async () => {
    const model = makeModel();
    const { q, all } = mount(model);
    answer(model, "summary", summaryReply(1, { clusters: "many" }));
    await tick();
    expect(q("error").textContent).toContain("summary clusters must be a list");
    expect(all("fourier-head")).toHaveLength(N_HEADS);
  });

  test("untrusted labels stay text", async () => {
    const model = makeModel({ neuron: 0 });
    const { q, el } = mount(model);
    answer(model, "summary", summaryReply());
    answerGrid(model, 1, EVIL);
    await tick();
    expect(q("fourier-neuron-readout").textContent).toContain(EVIL);
    expect(el.querySelector("img")).toBeNull();
  });

  test("dispose removes the view and every listener", async () => {
    const { model, cleanup, el } = await loaded();
    expect(model.listenerCount()).toBeGreaterThan(0);
    cleanup();
    expect(el.querySelector("[data-testid=fourier]")).toBeNull();
    expect(model.listenerCount()).toBe(0);
  });
});
