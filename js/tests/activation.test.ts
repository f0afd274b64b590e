import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { cssColor, divergingColormap } from "../src/lib/colormap";
import { LINE_CHARS, TOKEN_CHARS } from "../src/lib/text";
import { parseUnitId } from "../src/lib/view";
import widget, { formatValue, NEURON_ID, TOP_K, unitLabel } from "../src/views/activation";
import { FakeModel, mountView } from "./helpers";

const TOKENS = [
  ["<bos>", "def", " f", "(x)"],
  ["<bos>", "import", " os"],
];
const D = 32;

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    hook: "mlp.post",
    hooks: ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"],
    layers: [0, 1],
    n_layers: 2,
    d: D,
    tokens: TOKENS,
    has_direction: false,
    revision: 0,
    selected: { layer: 0, neuron: 0, prompt_index: null, position: null },
    ...attrs,
  });
}

/** Value of (layer, neuron) at prompt p, position i: distinct, signed, with the largest |value| known. */
function valueAt(layer: number, neuron: number | null, p: number, i: number): number {
  const base = (neuron ?? 7) / 10 + layer;
  return (p === 0 ? 1 : -1) * (base + i * 0.5);
}

function valuesReply(layer: number, neuron: number | null, revision = 0, tokens = TOKENS) {
  const flat: number[] = [];
  const offsets = [0];
  tokens.forEach((t, p) => {
    for (let i = 0; i < t.length; i++) flat.push(valueAt(layer, neuron, p, i));
    offsets.push(flat.length);
  });
  const range = Math.max(...flat.map(Math.abs));
  const values = encodeArray(flat, [flat.length], "float16", { bufferIndex: 0 });
  const offs = encodeArray(offsets, [offsets.length], "int32", { bufferIndex: 1 });
  return {
    result: { revision, layer, neuron, range, values: values.header, offsets: offs.header },
    buffers: [values.buffer, offs.buffer],
  };
}

function topReply(prompt: number, position: number, layer: number, revision = 0) {
  const indices = Array.from({ length: TOP_K }, (_, i) => (i * 3 + position) % D);
  const vals = indices.map((_, i) => 5 - i * 0.5);
  const a = encodeArray(indices, [TOP_K], "int32", { bufferIndex: 0 });
  const b = encodeArray(vals, [TOP_K], "float16", { bufferIndex: 1 });
  return {
    result: { revision, prompt_index: prompt, position, layer, indices: a.header, values: b.header },
    buffers: [a.buffer, b.buffer],
  };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, method: string, reply: { result: any; buffers: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers);
  return req;
}

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "activation-view");
  const strips = () => [...mounted.el.querySelectorAll<HTMLElement>("[data-testid=token-strip]")];
  const token = (p: number, i: number) => strips()[p].querySelectorAll<HTMLElement>("[data-testid=token]")[i];
  const input = () => mounted.q<HTMLInputElement>("neuron-input");
  const key = (k: string, opts: KeyboardEventInit = {}) =>
    input().dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true, ...opts }));
  const type = (text: string) => {
    input().value = text;
    key("Enter");
  };
  return { ...mounted, strips, token, input, key, type };
}

afterEach(() => document.body.replaceChildren());

describe("activation helpers", () => {
  test("values are signed and fixed width; neuron text is checked against d", () => {
    expect(formatValue(1.23456)).toBe("+1.235");
    expect(formatValue(-0.05)).toBe("−0.050");
    expect(formatValue(0)).toBe("+0.000");
    expect(formatValue(123456)).toBe("+1.23e+5");
    expect(formatValue(NaN)).toBe("NaN");
    expect(formatValue(-Infinity)).toBe("−inf");
    expect(unitLabel(null)).toBe("direction");
    expect(unitLabel(3)).toBe("n3");
    expect(parseUnitId(" 12 ", 32, NEURON_ID)).toEqual({ id: 12 });
    expect(parseUnitId("32", 32, NEURON_ID)).toEqual({ error: "neuron 32 is out of range: 0..31" });
    expect(parseUnitId("-1", 32, NEURON_ID)).toEqual({ error: "neuron -1 is out of range: 0..31" });
    expect(parseUnitId("1.5", 32, NEURON_ID)).toEqual({ error: 'neuron must be a whole number in 0..31, got "1.5"' });
    expect(parseUnitId("", 32, NEURON_ID)).toEqual({ error: "neuron must be a whole number in 0..31" });
  });
});

describe("ActivationView", () => {
  test("one TokenStrip per prompt, coloured on a symmetric diverging scale from the values reply", async () => {
    const model = makeModel();
    const { root, q, strips, token } = mount(model);
    expect(strips()).toHaveLength(2);
    expect(strips().map((s) => [...s.querySelectorAll("[data-testid=token]")].map((t) => t.textContent))).toEqual(
      TOKENS,
    );
    expect(model.requests("values").map((r) => r.params)).toEqual([{ layer: 0, neuron: 0 }]);
    expect(root.dataset.state).toBe("loading");
    answer(model, "values", valuesReply(0, 0));
    await tick();
    expect(root.dataset.state).toBe("ready");
    expect(root.dataset.painted).toBe("0:0:0");
    const range = 1.5; // |valueAt(0, 0, p, 3)|
    const cmap = divergingColormap("light");
    expect(token(0, 3).style.backgroundColor).toBe(cssColor(cmap, 1.5, -range, range)); // the reddest
    expect(token(1, 2).style.backgroundColor).toBe(cssColor(cmap, -1, -range, range)); // blue side
    expect(token(0, 0).style.backgroundColor).toBe(cssColor(cmap, 0, -range, range)); // zero: the centre
    const zero = token(0, 0).style.backgroundColor.match(/\d+/g)!.map(Number);
    expect(Math.min(...zero)).toBeGreaterThanOrEqual(250); // about the background (a 256-step map has no exact middle)
    expect(token(0, 2).title).toContain("+1.000");
    expect(q("scale").textContent).toBe("colour: −1.500 … +1.500 (max |value| of L0 n0 over all 2 prompts)");
    expect(q("readout-text").textContent).toContain("Hover a token");
    expect(q("error").textContent).toBe("");
  });

  test("layer select and Python-side selection changes refetch; cached units come back without a request", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    answer(model, "values", valuesReply(0, 0));
    await tick();
    const select = q<HTMLSelectElement>("layer-select");
    expect(select.hidden).toBe(false);
    expect([...select.options].map((o) => [o.value, o.textContent, o.title])).toEqual([
      ["0", "L0", "blocks.0.mlp.hook_post"],
      ["1", "L1", "blocks.1.mlp.hook_post"],
    ]);
    select.value = "1";
    select.dispatchEvent(new Event("change"));
    expect(model.get("selected")).toEqual({ layer: 1, neuron: 0, prompt_index: null, position: null });
    expect(model.saves).toBe(1);
    expect(model.requests("values").at(-1).params).toEqual({ layer: 1, neuron: 0 });
    answer(model, "values", valuesReply(1, 0));
    await tick();
    expect(root.dataset.painted).toBe("0:1:0");
    model.set("selected", { layer: 0, neuron: 0, prompt_index: null, position: null }); // from Python
    expect(select.value).toBe("0");
    expect(root.dataset.painted).toBe("0:0:0");
    expect(model.requests("values")).toHaveLength(2);
  });

  test("a single layer shows a label instead of a picker", () => {
    const model = makeModel({
      layers: [1],
      hooks: ["blocks.1.hook_resid_post"],
      n_layers: 1,
      selected: { layer: 1, neuron: 0, prompt_index: null, position: null },
    });
    const { q } = mount(model);
    expect(q<HTMLSelectElement>("layer-select").hidden).toBe(true);
    expect(q("layer-label").textContent).toBe("L1 blocks.1.hook_resid_post");
    expect(model.requests("values")[0].params).toEqual({ layer: 1, neuron: 0 });
  });

  test("the neuron box: Enter selects, arrows step, bad input shows a message and changes nothing", async () => {
    const model = makeModel();
    const { q, input, key, type, root } = mount(model);
    answer(model, "values", valuesReply(0, 0));
    type("7");
    expect(model.get("selected").neuron).toBe(7);
    expect(model.requests("values").at(-1).params).toEqual({ layer: 0, neuron: 7 });
    key("ArrowUp");
    expect(model.get("selected").neuron).toBe(8);
    key("ArrowUp", { shiftKey: true });
    expect(model.get("selected").neuron).toBe(18);
    key("ArrowDown", { shiftKey: true });
    key("ArrowDown", { shiftKey: true });
    key("ArrowDown");
    expect(model.get("selected").neuron).toBe(0); // clamped at 0
    expect(input().getAttribute("aria-valuenow")).toBe("0");
    const saves = model.saves;
    type("999");
    expect(q("neuron-message").textContent).toBe("neuron 999 is out of range: 0..31");
    expect(input().getAttribute("aria-invalid")).toBe("true");
    expect(root.dataset.neuronError).toBe("true");
    type("abc");
    expect(q("neuron-message").textContent).toBe('neuron must be a whole number in 0..31, got "abc"');
    expect(model.get("selected").neuron).toBe(0);
    expect(model.saves).toBe(saves);
    expect(q("error").textContent).toBe(""); // a message, not an error
    key("Escape");
    expect(input().value).toBe("0");
    expect(q("neuron-message").textContent).toBe("");
    input().value = "31";
    input().dispatchEvent(new Event("change")); // blur after typing
    expect(model.get("selected").neuron).toBe(31);
    key("ArrowUp");
    expect(model.get("selected").neuron).toBe(31); // clamped at d - 1
    // keys typed into the box do not reach the notebook
    let reached = 0;
    document.body.addEventListener("keydown", () => reached++);
    key("1");
    expect(reached).toBe(0);
  });

  test("hovering a token shows its value and its top neurons; clicking one selects that neuron", async () => {
    const model = makeModel();
    const { q, token, strips, root } = mount(model);
    answer(model, "values", valuesReply(0, 0));
    await tick();
    token(0, 2).dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(q("readout-text").textContent).toBe('prompt 0, token 2 " f" · L0 n0: +1.000 · top neurons:');
    expect(model.requests("top").map((r) => r.params)).toEqual([{ prompt_index: 0, position: 2, layer: 0, k: TOP_K }]);
    answer(model, "top", topReply(0, 2, 0));
    await tick();
    const buttons = () => [...q("top-list").querySelectorAll<HTMLButtonElement>("[data-testid=top-neuron]")];
    expect(buttons()).toHaveLength(TOP_K);
    expect(buttons()[0].textContent).toBe("n2+5.000");
    expect(buttons()[1].dataset.neuron).toBe("5");
    // leaving the strip keeps the readout (nothing is selected), so the list stays clickable
    strips()[0].dispatchEvent(new MouseEvent("mouseleave"));
    expect(root.dataset.focus).toBe("0:2");
    buttons()[1].click();
    expect(model.get("selected")).toEqual({ layer: 0, neuron: 5, prompt_index: null, position: null });
    expect(model.requests("values").at(-1).params).toEqual({ layer: 0, neuron: 5 });
    expect(
      buttons()
        .find((b) => b.dataset.neuron === "5")!
        .getAttribute("aria-pressed"),
    ).toBe("true");
    // the same token again comes from the cache
    token(0, 2).dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(model.requests("top")).toHaveLength(1);
    expect(q("readout-text").textContent).toContain("L0 n5: …"); // values of n5 not here yet
    answer(model, "values", valuesReply(0, 5));
    await tick();
    expect(q("readout-text").textContent).toContain(`L0 n5: ${formatValue(valueAt(0, 5, 0, 2))}`);
  });

  test("hovering a 10,000-character token: one short readout line, the whole token in its title", async () => {
    const long = "y".repeat(10_000);
    const tokens = [["<bos>", "def", long, "(x)"], TOKENS[1]];
    const model = makeModel({ tokens });
    const { q, token } = mount(model);
    answer(model, "values", valuesReply(0, 0, 0, tokens));
    await tick();
    const readout = q("readout-text");
    expect(readout.classList.contains("miw-line")).toBe(true);
    expect(token(0, 2).textContent).toBe(`${"y".repeat(TOKEN_CHARS - 1)}…`);
    token(0, 2).dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(readout.textContent).toBe(
      `prompt 0, token 2 "${"y".repeat(TOKEN_CHARS - 1)}…" · L0 n0: +1.000 · top neurons:`,
    );
    expect(readout.textContent!.length).toBeLessThanOrEqual(LINE_CHARS);
    expect(readout.title).toBe(`prompt 0, token 2 "${long}" · L0 n0: +1.000 · top neurons:`);
  });

  test("clicking a token selects {prompt_index, position}; again or Escape clears; keyboard works on the strip", async () => {
    const model = makeModel();
    const { token, root, strips, q } = mount(model);
    token(1, 2).click();
    expect(model.get("selected")).toEqual({ layer: 0, neuron: 0, prompt_index: 1, position: 2 });
    expect(root.dataset.selected).toBe("1:2");
    expect(token(1, 2).classList.contains("miw-token-locked")).toBe(true);
    token(1, 2).click();
    expect(model.get("selected")).toEqual({ layer: 0, neuron: 0, prompt_index: null, position: null });
    expect(token(1, 2).classList.contains("miw-token-locked")).toBe(false);
    // keyboard: focus a token, move right, Enter selects
    token(0, 0).focus();
    const press = (k: string) =>
      document.activeElement!.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
    press("ArrowRight");
    expect(root.dataset.focus).toBe("0:1");
    press("Enter");
    expect(model.get("selected")).toEqual({ layer: 0, neuron: 0, prompt_index: 0, position: 1 });
    expect(q("readout-text").textContent).toContain('prompt 0, token 1 "def"');
    press("Escape");
    expect(model.get("selected")).toEqual({ layer: 0, neuron: 0, prompt_index: null, position: null });
    // a selection from Python locks the token in its strip
    model.set("selected", { layer: 0, neuron: 0, prompt_index: 1, position: 0 });
    expect(token(1, 0).getAttribute("aria-selected")).toBe("true");
    expect(strips()[0].querySelector(".miw-token-locked")).toBeNull();
  });

  test("a direction: button colours by it (neuron null), a top neuron switches back", async () => {
    const model = makeModel({
      has_direction: true,
      selected: { layer: 1, neuron: null, prompt_index: null, position: null },
    });
    const { q, root, token, input } = mount(model);
    expect(model.requests("values")[0].params).toEqual({ layer: 1, neuron: null });
    expect(q("direction-button").hidden).toBe(false);
    expect(q("direction-button").getAttribute("aria-pressed")).toBe("true");
    expect(input().value).toBe("");
    expect(input().placeholder).toBe("direction");
    answer(model, "values", valuesReply(1, null));
    await tick();
    expect(root.dataset.painted).toBe("0:1:direction");
    expect(q("scale").textContent).toContain("L1 direction");
    token(0, 1).click();
    answer(model, "top", topReply(0, 1, 1));
    await tick();
    q("top-list").querySelector<HTMLButtonElement>("[data-neuron='4']")!.click();
    expect(model.get("selected").neuron).toBe(4);
    expect(q("direction-button").getAttribute("aria-pressed")).toBe("false");
    q("direction-button").click();
    expect(model.get("selected").neuron).toBeNull();
    expect(root.dataset.painted).toBe("0:1:direction"); // from the cache
  });

  test("the direction button is hidden without a direction", () => {
    const { q } = mount(makeModel());
    expect(q("direction-button").hidden).toBe(true);
  });

  test("failed and malformed replies go to the banner; stale revisions are dropped; the view keeps working", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    model.replyError(model.requests("values")[0].id, "IndexError", "neuron must be in 0..31, got 40");
    await tick();
    expect(q("error").textContent).toContain("neuron must be in 0..31, got 40");
    expect(root.dataset.state).toBe("error");
    model.set("selected", { layer: 0, neuron: 3, prompt_index: null, position: null });
    answer(model, "values", valuesReply(0, 3, 0, [["a"], ["b"]])); // lengths do not match the prompts
    await tick();
    expect(q("error").textContent).toContain("values reply has 1 values for prompt 0, which has 4 tokens");
    model.set("revision", 1); // e.g. a new direction: refetch, drop what was computed before
    const stale = model.requests("values").at(-1);
    expect(stale.params).toEqual({ layer: 0, neuron: 3 });
    model.reply(stale.id, valuesReply(0, 3, 0).result, valuesReply(0, 3, 0).buffers);
    await tick();
    expect(root.dataset.painted).toBeUndefined();
    model.set("selected", { layer: 0, neuron: 4, prompt_index: null, position: null });
    answer(model, "values", valuesReply(0, 4, 1));
    await tick();
    expect(root.dataset.painted).toBe("1:0:4");
    expect(q("error").textContent).toBe("");
    q("error-dismiss").click();
    expect(q("error").parentElement!.hidden).toBe(true);
  });

  test("a reply for an old revision is never drawn; the revision change refetches values and top neurons", async () => {
    const model = makeModel();
    const { q, root, token } = mount(model);
    answer(model, "values", valuesReply(0, 0));
    token(0, 2).click(); // select a token: its top neurons are asked for
    answer(model, "top", topReply(0, 2, 0));
    await tick();
    expect(root.dataset.painted).toBe("0:0:0");
    expect(q("top-list").dataset.state).toBe("ready");
    model.set("selected", { layer: 0, neuron: 5, prompt_index: 0, position: 2 });
    const first = model.requests("values").at(-1);
    model.set("revision", 1); // e.g. a new direction while n5 is out: cancelled and asked again
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === first.id)).toBe(true);
    const second = model.requests("values").at(-1);
    expect(second.id).not.toBe(first.id);
    expect(second.params).toEqual({ layer: 0, neuron: 5 });
    expect(root.dataset.state).toBe("loading");
    // the top neurons of revision 0 are not shown for revision 1: asked again
    expect(model.requests("top")).toHaveLength(2);
    expect(q("top-list").dataset.state).toBe("loading");
    expect(q("top-list").children).toHaveLength(0);
    // The first reply arrives anyway (it crossed the cancel), then one for the new request computed
    // for the old revision (the kernel was behind): neither is drawn.
    model.reply(first.id, valuesReply(0, 5, 0).result, valuesReply(0, 5, 0).buffers);
    await tick();
    expect(root.dataset.state).toBe("loading");
    model.reply(second.id, valuesReply(0, 5, 0).result, valuesReply(0, 5, 0).buffers);
    answer(model, "top", topReply(0, 2, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("0:0:0");
    expect(q("readout-text").textContent).toContain("L0 n5: …");
    expect(q("top-list").dataset.state).toBe("loading");
    // n0 was cached for revision 0 only: asked again, not drawn from the cache
    model.set("selected", { layer: 0, neuron: 0, prompt_index: 0, position: 2 });
    expect(model.requests("values").at(-1).params).toEqual({ layer: 0, neuron: 0 });
    expect(root.dataset.painted).toBe("0:0:0");
    answer(model, "values", valuesReply(0, 0, 1));
    await tick();
    expect(root.dataset.painted).toBe("1:0:0");
    expect(root.dataset.state).toBe("ready");
    expect(q("readout-text").textContent).toContain(`L0 n0: ${formatValue(valueAt(0, 0, 0, 2))}`);
    answer(model, "top", topReply(0, 2, 0, 1));
    await tick();
    expect(q("top-list").dataset.state).toBe("ready");
    expect(root.dataset.loading).toBeUndefined();
    expect(q("error").textContent).toBe("");
  });

  test("tokens replaced from Python (set_trait): strips rebuilt, the values asked for again and drawn", async () => {
    const model = makeModel();
    const { root, strips, token } = mount(model);
    answer(model, "values", valuesReply(0, 0));
    await tick();
    expect(root.dataset.painted).toBe("0:0:0");
    const tokens = [["<bos>", "def", " g", "(x)"], TOKENS[1]];
    model.set("tokens", tokens);
    expect(token(0, 2).textContent).toBe(" g");
    expect(strips()).toHaveLength(2);
    expect(root.dataset.painted).toBeUndefined(); // drawn for the old tokens
    expect(model.requests("values").map((r) => r.params)).toEqual([
      { layer: 0, neuron: 0 },
      { layer: 0, neuron: 0 },
    ]);
    answer(model, "values", valuesReply(0, 0, 0, tokens));
    await tick();
    expect(root.dataset.painted).toBe("0:0:0");
    expect(root.dataset.state).toBe("ready");
  });

  test("a top request error shows in the banner", async () => {
    const model = makeModel();
    const { q, token } = mount(model);
    token(0, 1).dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    model.replyError(model.requests("top")[0].id, "IndexError", "position must be in 0..3");
    await tick();
    expect(q("error").textContent).toContain("position must be in 0..3");
  });

  test("dispose removes the view and its listeners", () => {
    const model = makeModel();
    const { cleanup, el } = mount(model);
    expect(model.listenerCount()).toBeGreaterThan(0);
    cleanup();
    expect(el.querySelector("[data-testid=activation-view]")).toBeNull();
    expect(model.listenerCount()).toBe(0);
  });
});
