import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { cssColor, divergingColormap } from "../src/lib/colormap";
import widget, { activationRange, gridColumns, overviewRange } from "../src/views/top_examples";
import { FakeModel, mountView } from "./helpers";

const NEURONS = [3, 5, 8, 13, 21, 34, 55, 89, 144, 233];

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    hook: "blocks.1.mlp.hook_post",
    neurons: NEURONS,
    k: 3,
    n_windows: 40,
    n_tokens: 5120,
    status: "idle",
    progress: { done: 0, total: 5 },
    error: "",
    revision: 0,
    selected: { neuron: null },
    ...attrs,
  });
}

/** Maxima: neuron at position i has max i / 2, NaN from `nanFrom` on. */
function overviewReply(revision: number, nanFrom = NEURONS.length) {
  const maxima = NEURONS.map((_, i) => (i >= nanFrom ? NaN : i / 2));
  const filled = NEURONS.map((_, i) => (i >= nanFrom ? 0 : 3));
  const a = encodeArray(maxima, [NEURONS.length], "float16", { bufferIndex: 0 });
  const b = encodeArray(filled, [NEURONS.length], "int32", { bufferIndex: 1 });
  return { result: { revision, neurons: NEURONS, maxima: a.header, filled: b.header }, buffers: [a.buffer, b.buffer] };
}

interface Ex {
  tokens: string[];
  acts: number[];
  max: number;
  value: number;
}

function examplesReply(neuron: number, revision: number, examples: Ex[]) {
  const width = Math.max(0, ...examples.map((e) => e.tokens.length));
  const flat: number[] = [];
  for (const e of examples) for (let i = 0; i < width; i++) flat.push(i < e.acts.length ? e.acts[i] : NaN);
  const acts = encodeArray(flat, [examples.length, width], "float16", { bufferIndex: 0 });
  const values = encodeArray(
    examples.map((e) => e.value),
    [examples.length],
    "float32",
    { bufferIndex: 1 },
  );
  return {
    result: {
      revision,
      neuron,
      examples: examples.map((e, i) => ({
        tokens: e.tokens,
        max_index: e.max,
        window: 10 + i,
        position: 40 + i,
        source: 0,
      })),
      example_acts: acts.header,
      example_values: values.header,
    },
    buffers: [acts.buffer, values.buffer],
  };
}

const EXAMPLES: Ex[] = [
  { tokens: ["def", " f", "(", "x", "):"], acts: [-1, 0, 0.5, 4, 1], max: 3, value: 4 },
  { tokens: ["<img src=x onerror=alert(1)>", " y", "\n"], acts: [2, 3, -0.5], max: 1, value: 3 },
];

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, method: string, reply: { result: unknown; buffers?: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers ?? []);
  return req;
}

/** The last request of `method`, to be answered later. */
function answerLater(model: FakeModel, method: string) {
  const req = model.requests(method).at(-1);
  return {
    id: req.id as string,
    params: req.params,
    reply: (r: { result: unknown; buffers?: ArrayBuffer[] }) => model.reply(req.id, r.result, r.buffers ?? []),
  };
}

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "top-examples");
  const key = (k: string, times = 1) => {
    for (let i = 0; i < times; i++)
      mounted.q("overview").dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));
  };
  const strips = () => [...mounted.el.querySelectorAll<HTMLElement>("[data-testid=example-strip]")];
  return { ...mounted, key, strips };
}

afterEach(() => document.body.replaceChildren());

describe("TopExamples helpers", () => {
  test("grid columns: a wide strip, never wider than the neurons", () => {
    expect(gridColumns(3)).toBe(3);
    expect(gridColumns(10)).toBe(8);
    expect(gridColumns(64)).toBe(16);
    expect(gridColumns(3072)).toBe(111);
  });

  test("colour ranges: overview from min(0, lowest) to highest; examples symmetric around 0", () => {
    expect(overviewRange([NaN, 2, 5])).toEqual({ lo: 0, hi: 5 });
    expect(overviewRange([-3, 1])).toEqual({ lo: -3, hi: 1 });
    expect(overviewRange([NaN])).toEqual({ lo: 0, hi: 1 });
    const ex = (a: number[]) => ({
      tokens: [],
      maxIndex: 0,
      value: 0,
      window: 0,
      position: 0,
      source: 0,
      activations: new Float32Array(a),
    });
    expect(activationRange([ex([-5, 1]), ex([2, NaN])])).toBe(5);
    expect(activationRange([])).toBe(1);
  });
});

describe("TopExamples", () => {
  test("renders the scan toolbar, the info line and the overview, and fetches the maxima", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    for (const id of [
      "start-button",
      "stop-button",
      "progress",
      "status",
      "info",
      "overview",
      "readout",
      "examples-title",
      "examples",
      "error",
    ]) {
      expect(q(id), id).not.toBeNull();
    }
    expect(q("info").textContent).toBe("10 neurons of blocks.1.mlp.hook_post · top 3 · 40 windows, 5,120 tokens");
    expect(q("status").textContent).toBe("idle");
    expect(root.dataset.status).toBe("idle");
    expect(model.requests().map((r) => r.method)).toEqual(["overview"]); // nothing selected: no examples request
    answer(model, "overview", overviewReply(2, 6));
    await tick();
    expect(root.dataset.revision).toBe("2");
    expect(q("readout").textContent).toContain("click (or Enter)");
    expect(q("examples-title").textContent).toBe("No neuron selected.");
    expect(q("error").textContent).toBe("");
  });

  test("keyboard: arrows move over the overview, the readout follows, Enter selects the neuron id", async () => {
    const model = makeModel();
    const { root, q, key } = mount(model);
    answer(model, "overview", overviewReply(1, 6));
    await tick();
    key("ArrowRight"); // the cursor appears on the first neuron
    key("ArrowRight", 2);
    expect(q("readout").textContent).toBe("neuron 8: max 1.000 · 3 examples");
    key("ArrowDown"); // 8 columns: row 1, col 2 = position 10, past the last neuron
    key("ArrowUp");
    key("ArrowLeft", 1);
    expect(q("readout").textContent).toBe("neuron 5: max 0.500 · 3 examples");
    key("Enter");
    expect(model.get("selected")).toEqual({ neuron: 5 });
    expect(model.saves).toBe(1);
    expect(root.dataset.selected).toBe("5");
    expect(model.requests("examples").map((r) => r.params)).toEqual([{ neuron: 5 }]);
    key("Escape");
    expect(model.get("selected")).toEqual({ neuron: null });
    expect(q("examples-title").textContent).toBe("No neuron selected.");
  });

  test("a neuron selected in Python shows its examples as token strips coloured by activation", async () => {
    const model = makeModel();
    const { root, q, strips } = mount(model);
    answer(model, "overview", overviewReply(1));
    model.set("selected", { neuron: 13 });
    expect(root.dataset.selected).toBe("13");
    expect(root.dataset.loading).toBe("true");
    expect(q("examples-title").textContent).toBe("neuron 13: loading…");
    expect(model.requests("examples").map((r) => r.params)).toEqual([{ neuron: 13 }]);
    answer(model, "examples", examplesReply(13, 1, EXAMPLES));
    await tick();
    expect(root.dataset.loading).toBeUndefined();
    expect(root.dataset.examples).toBe("13:1:2");
    expect(q("examples-title").textContent).toBe("neuron 13: top 2 examples · colour: activation, −4.000 … 0 … +4.000");
    expect([...root.querySelectorAll("[data-testid=example-value]")].map((v) => v.textContent)).toEqual([
      "4.000",
      "3.000",
    ]);
    const [first, second] = strips();
    const tokens = (s: HTMLElement) => [...s.querySelectorAll<HTMLElement>("[data-testid=token]")];
    expect(tokens(first).map((t) => t.textContent)).toEqual(["def", " f", "(", "x", "):"]);
    expect(tokens(first)[3].classList.contains("miw-token-primary")).toBe(true); // the maximum is outlined
    expect(tokens(first).filter((t) => t.classList.contains("miw-token-primary"))).toHaveLength(1);
    expect(tokens(first)[3].title).toContain("activation 4.000");
    // diverging around 0 on ±4: 0 is (nearly) the background, signs differ in hue
    expect(tokens(first)[1].style.backgroundColor).toBe(cssColor(divergingColormap("light"), 0, -4, 4));
    expect(tokens(first)[1].style.backgroundColor).toMatch(/^rgb\(25\d, 25\d, 25\d\)$/);
    const rgb = (t: HTMLElement) => t.style.backgroundColor.match(/\d+/g)!.map(Number);
    const [r1, , b1] = rgb(tokens(first)[3]);
    const [r0, , b0] = rgb(tokens(first)[0]);
    expect(r1 > b1 && b0 > r0).toBe(true);
    // token text is untrusted: shown as text, never parsed
    expect(tokens(second)[0].textContent).toBe("<img src=x onerror=alert(1)>");
    expect(root.querySelector("img")).toBeNull();
    expect(tokens(second)[2].textContent).toBe("↵");
    // hovering a token reads out its activation
    tokens(second)[2].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(root.querySelectorAll(".miw-topex-where")[1].textContent).toBe('"\\n": activation -0.500');
  });

  test("a revision refetches the overview and the selected neuron's examples; stale replies are dropped", async () => {
    const model = makeModel({ selected: { neuron: 21 } });
    const { root } = mount(model);
    expect(model.requests().map((r) => r.method)).toEqual(["overview", "examples"]);
    answer(model, "overview", overviewReply(3, 2));
    answer(model, "examples", examplesReply(21, 3, EXAMPLES));
    await tick();
    expect(root.dataset.examples).toBe("21:3:2");

    model.set("revision", 4);
    model.set("revision", 5); // folds into the next fetch
    expect(model.requests("overview")).toHaveLength(2);
    expect(model.requests("examples")).toHaveLength(2);
    answer(model, "overview", overviewReply(2)); // older than what is drawn
    answer(model, "examples", examplesReply(21, 2, EXAMPLES.slice(1)));
    await tick();
    expect(root.dataset.revision).toBe("3");
    expect(root.dataset.examples).toBe("21:3:2");
    expect(model.requests("overview")).toHaveLength(3); // the folded bump
    answer(model, "overview", overviewReply(5));
    answer(model, "examples", examplesReply(21, 5, EXAMPLES.slice(1)));
    await tick();
    expect(root.dataset.revision).toBe("5");
    expect(root.dataset.examples).toBe("21:5:1");

    model.set("selected", { neuron: 34 });
    answer(model, "examples", examplesReply(21, 6, EXAMPLES)); // for the neuron that was selected before
    await tick();
    expect(root.dataset.examples).toBeUndefined();
  });

  test("stale policy: a reply computed for the revision before a bump is never drawn, and a new selection drops the old request", async () => {
    const model = makeModel({ selected: { neuron: 21 }, revision: 3 });
    const { root, q } = mount(model);
    answer(model, "overview", overviewReply(3, 2));
    answer(model, "examples", examplesReply(21, 3, EXAMPLES));
    await tick();
    expect(root.dataset.revision).toBe("3");
    expect(root.dataset.examples).toBe("21:3:2");

    model.set("revision", 4);
    // replies the kernel computed for revision 3 (as new as what is drawn, but older than the view's revision)
    answer(model, "overview", overviewReply(3));
    answer(model, "examples", examplesReply(21, 3, EXAMPLES.slice(1)));
    await tick();
    expect(root.dataset.revision).toBe("3");
    expect(root.dataset.examples).toBe("21:3:2");
    expect(q("error").textContent).toBe("");

    // a new selection cancels the request in flight for the old one at once: its reply is never drawn
    model.set("revision", 5);
    const pending = answerLater(model, "examples");
    expect(pending.params).toEqual({ neuron: 21 });
    model.set("selected", { neuron: 34 });
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === pending.id)).toBe(true);
    expect(model.requests("examples").at(-1).params).toEqual({ neuron: 34 });
    pending.reply(examplesReply(21, 5, EXAMPLES));
    await tick();
    expect(root.dataset.examples).toBeUndefined();
    expect(q("examples-title").textContent).toBe("neuron 34: loading…");
    answer(model, "examples", examplesReply(34, 5, EXAMPLES.slice(1)));
    await tick();
    expect(root.dataset.examples).toBe("34:5:1");
  });

  test("Start and Stop go through the shared toolbar", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    q<HTMLButtonElement>("start-button").click();
    expect(model.requests("start")).toHaveLength(1);
    answer(model, "start", { result: {} });
    await tick();
    model.attrs.progress = { done: 2, total: 5 };
    model.set("status", "running");
    expect(q("status").textContent).toBe("running: batch 2/5");
    expect(root.dataset.done).toBe("2");
    expect(q<HTMLButtonElement>("start-button").disabled).toBe(true);
    q<HTMLButtonElement>("stop-button").click();
    expect(model.requests("stop")).toHaveLength(1);
    answer(model, "stop", { result: {} });
    model.set("status", "stopped");
    await tick();
    expect(q("status").textContent).toBe("stopped after 2/5 batches");
  });

  test("errors reach the banner; a broken reply never throws out; dispose cleans up", async () => {
    const model = makeModel({ selected: { neuron: 3 } });
    const { q, el, cleanup } = mount(model);
    model.replyError(model.requests("examples")[0].id, "KeyError", "neuron 3 was not scanned");
    await tick();
    expect(q("error").textContent).toContain("neuron 3 was not scanned");
    const bad = encodeArray([1, 2], [2], "float16");
    answer(model, "overview", {
      result: { revision: 1, neurons: NEURONS, maxima: bad.header, filled: bad.header },
      buffers: [bad.buffer],
    });
    await tick();
    expect(q("error").textContent).toContain("one maximum per neuron (10)");
    model.set("error", "RuntimeError: device lost");
    expect(q("error").textContent).toContain("device lost");
    cleanup();
    expect(el.children).toHaveLength(0);
    expect(model.listenerCount()).toBe(0);
  });

  test("the theme switch recolours the strips", async () => {
    const model = makeModel({ selected: { neuron: 8 } });
    const { strips } = mount(model);
    answer(model, "examples", examplesReply(8, 1, EXAMPLES));
    await tick();
    const token = strips()[0].querySelectorAll<HTMLElement>("[data-testid=token]")[1];
    expect(token.style.backgroundColor).toBe(cssColor(divergingColormap("light"), 0, -4, 4));
    document.body.setAttribute("data-jp-theme-light", "false");
    await tick(20);
    expect(token.style.backgroundColor).toBe(cssColor(divergingColormap("dark"), 0, -4, 4));
    expect(token.style.backgroundColor).not.toBe(cssColor(divergingColormap("light"), 0, -4, 4));
    document.body.removeAttribute("data-jp-theme-light");
  });
});
