import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import widget, { decodeAttribution, selectionLabel, signed, symmetricExtent } from "../src/views/logit_attribution";
import { FakeModel, mountView } from "./helpers";

const L = 2;
const H = 3;
const HEADS = [0.1, -0.4, 0.05, 0.2, 0.0, -0.1]; // L0H1 is the strongest, negative
const ATTN_BIAS = [0.02, -0.01];
const ATTN = [0.1 - 0.4 + 0.05 + 0.02, 0.2 + 0.0 - 0.1 - 0.01];
const MLPS = [0.3, -0.05];
const TERMS = ["embed", "attention biases (b_O)", "ln_final bias", "b_U"];
const TERM_VALUES = [0.25, 0.01, -0.03, 0.0];

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_layers: L,
    n_heads: H,
    has_mlp: true,
    tokens: ["<bos>", "When", " Mary", " to"],
    prompt: "When Mary to",
    position: 3,
    answer_token: " Mary",
    wrong_token: " John",
    answer_id: 7,
    wrong_id: 8,
    total: 0.5,
    revision: 1,
    selected: { layer: null, head: null, component: null },
    ...attrs,
  });
}

function reply(opts: { hasMlp?: boolean; heads?: number[]; shape?: [number, number]; revision?: number } = {}) {
  const arrays: Array<[string, number[], number[]]> = [
    ["heads", opts.heads ?? HEADS, opts.shape ?? [L, H]],
    ["attn", ATTN, [L]],
    ["attn_bias", ATTN_BIAS, [L]],
    ["mlps", opts.hasMlp === false ? [0, 0] : MLPS, [L]],
    ["term_values", TERM_VALUES, [TERM_VALUES.length]],
  ];
  const result: Record<string, unknown> = {
    revision: opts.revision ?? 1,
    n_layers: L,
    n_heads: H,
    has_mlp: opts.hasMlp ?? true,
    total: 0.5,
    terms: TERMS,
  };
  const buffers: ArrayBuffer[] = [];
  arrays.forEach(([name, values, shape], i) => {
    const { header, buffer } = encodeArray(values, shape, "float32", { bufferIndex: i });
    result[name] = header;
    buffers.push(buffer);
  });
  return { result, buffers };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function mount(model: FakeModel, r = reply()) {
  const mounted = mountView(widget, model, "logit-attribution");
  const req = model.requests("attribution").at(-1);
  model.reply(req.id, r.result, r.buffers);
  await tick();
  const key = (target: HTMLElement, k: string, times = 1) => {
    for (let i = 0; i < times; i++) target.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
  };
  return { ...mounted, key };
}

afterEach(() => document.body.replaceChildren());

describe("logit attribution helpers", () => {
  test("signed values use a real minus sign; the colour range is symmetric", () => {
    expect(signed(0.12345)).toBe("+0.1235");
    expect(signed(-2, 2)).toBe("−2.00");
    expect(symmetricExtent([0.1, -0.4], [0.3])).toBe(0.4);
    expect(symmetricExtent([0, NaN])).toBe(1);
    expect(selectionLabel({ layer: 1, head: 2, component: "head" })).toBe("L1H2");
    expect(selectionLabel({ layer: 0, head: null, component: "mlp" })).toBe("L0 mlp");
  });

  test("decode checks shapes", () => {
    const r = reply({ heads: [1, 2, 3], shape: [1, 3] });
    expect(() =>
      decodeAttribution({
        result: r.result,
        buffers: r.buffers.map((b) => new DataView(b)),
      }),
    ).toThrow("heads must have shape [2, 3], got [1, 3]");
  });
});

describe("LogitAttribution view", () => {
  test("with a soft cap the summary says the parts add up to the difference before it, and gives the model's own", async () => {
    const model = makeModel({ softcap: 30, output_total: 0.4 });
    const { q } = await mount(model);
    expect(q("summary").textContent).toBe(
      'logit(" Mary") − logit(" John") at position 3 (after " to") = +0.5000 before the soft cap 30 (the model\'s own, after it: +0.4000)',
    );
  });

  test("shows the total, the terms line, one bar per layer and component, and a hint", async () => {
    const model = makeModel();
    const { root, q, el } = await mount(model);
    expect(q("summary").textContent).toBe('logit(" Mary") − logit(" John") at position 3 (after " to") = +0.5000');
    expect(q("terms").textContent).toBe(
      "embed +0.2500 · attention biases (b_O) +0.0100 · ln_final bias −0.0300 · b_U +0.0000",
    );
    expect(root.dataset.revision).toBe("1");
    expect(root.dataset.loading).toBeUndefined();
    const bars = Array.from(el.querySelectorAll<HTMLButtonElement>(".miw-dla-bar")).map((b) => b.dataset.testid);
    expect(bars).toEqual(["bar-attn-0", "bar-mlp-0", "bar-attn-1", "bar-mlp-1"]);
    expect(q("bar-mlp-0").textContent).toContain("+0.300");
    // the MLP of layer 0 is the largest |bar| (0.3): a full half-width bar to the right of centre
    const fill = q("bar-mlp-0").querySelector<HTMLElement>(".miw-dla-bar-fill")!;
    expect([fill.style.width, fill.style.left]).toEqual(["50.00%", "50%"]);
    const neg = q("bar-mlp-1").querySelector<HTMLElement>(".miw-dla-bar-fill")!;
    expect(neg.style.left).toBe(`${(50 - (0.05 / 0.3) * 50).toFixed(2)}%`);
    expect(q("scale").textContent).toBe('colour: −0.400 … +0.400 (blue: favours " John")');
    expect(q("readout").textContent).toContain("Hover a head or a bar");
  });

  test("heads: keyboard readout with the exact value, Enter selects, Enter again clears", async () => {
    const model = makeModel();
    const { q, key, root } = await mount(model);
    const heatmap = q("heads-heatmap");
    key(heatmap, "ArrowRight"); // (0, 0)
    key(heatmap, "ArrowRight"); // (0, 1)
    expect(q("readout").textContent).toBe(`L0H1: −0.400000 (${((-0.4 / 0.5) * 100).toFixed(1)}% of the total)`);
    key(heatmap, "Enter");
    expect(model.get("selected")).toEqual({ layer: 0, head: 1, component: "head" });
    expect(root.dataset.selected).toBe("L0H1");
    key(heatmap, "Enter");
    expect(model.get("selected")).toEqual({ layer: null, head: null, component: null });
  });

  test("bars: click selects a layer's component, hover and focus read out, arrows move focus", async () => {
    const model = makeModel();
    const { q, key, root } = await mount(model);
    q("bar-attn-1").click();
    expect(model.get("selected")).toEqual({ layer: 1, head: null, component: "attn" });
    expect(root.dataset.selected).toBe("L1 attn");
    expect(q("bar-attn-1").getAttribute("aria-pressed")).toBe("true");
    expect(q("bar-mlp-1").getAttribute("aria-pressed")).toBe("false");
    expect(q("readout").textContent).toContain("L1 attention: +0.090000");
    expect(q("readout").textContent).toContain("= heads +0.100000 + b_O −0.010000");
    q("bar-mlp-0").dispatchEvent(new MouseEvent("mouseenter"));
    expect(q("readout").textContent).toBe(`L0 MLP: +0.300000 (60.0% of the total)`);
    q("bar-mlp-0").dispatchEvent(new MouseEvent("mouseleave"));
    q("bar-attn-0").focus();
    key(q("bar-attn-0"), "ArrowDown");
    expect(document.activeElement).toBe(q("bar-mlp-0"));
    expect(q("readout").textContent).toContain("L0 MLP");
    q("bar-mlp-0").click(); // what Enter or Space on a focused button does in a browser (the e2e test presses it)
    expect(model.get("selected")).toEqual({ layer: 0, head: null, component: "mlp" });
    key(q("bar-mlp-0"), "Escape");
    expect(model.get("selected")).toEqual({ layer: null, head: null, component: null });
  });

  test("selections made in Python show in the heatmap and the bars", async () => {
    const model = makeModel();
    const { q, root } = await mount(model);
    model.set("selected", { layer: 1, head: 2, component: "head" });
    expect(root.dataset.selected).toBe("L1H2");
    expect(q("readout").textContent).toContain("L1H2: −0.100000");
    model.set("selected", { layer: 0, head: null, component: "mlp" });
    expect(root.dataset.selected).toBe("L0 mlp");
    expect(q("bar-mlp-0").classList.contains("miw-dla-bar-selected")).toBe(true);
  });

  test("attention-only models get no MLP bars", async () => {
    const model = makeModel({ has_mlp: false });
    const { el } = await mount(model, reply({ hasMlp: false }));
    expect(Array.from(el.querySelectorAll<HTMLElement>(".miw-dla-bar")).map((b) => b.dataset.testid)).toEqual([
      "bar-attn-0",
      "bar-attn-1",
    ]);
  });

  test("a failed request shows in the banner; a later revision recovers", async () => {
    const model = makeModel();
    const mounted = mountView(widget, model, "logit-attribution");
    const req = model.requests("attribution").at(-1);
    model.replyError(req.id, "RuntimeError", "cannot read W_O");
    await tick();
    expect(mounted.q("error").textContent).toContain("cannot read W_O");
    model.set("revision", 2);
    const again = model.requests("attribution").at(-1);
    const r = reply({ revision: 2 });
    model.reply(again.id, r.result, r.buffers);
    await tick();
    expect(mounted.q("error").textContent).toBe("");
    expect(mounted.root.dataset.revision).toBe("2");
  });

  test("a reply for an old revision is never drawn; the revision change refetches", async () => {
    const model = makeModel();
    const mounted = mountView(widget, model, "logit-attribution");
    const first = model.requests("attribution").at(-1);
    model.set("revision", 2); // a new prompt while the first request is out: it is cancelled and asked again
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === first.id)).toBe(true);
    const second = model.requests("attribution").at(-1);
    expect(second.id).not.toBe(first.id);
    // The first reply arrives anyway (it crossed the cancel): not drawn.
    const old = reply({ heads: [9, 9, 9, 9, 9, 9] });
    model.reply(first.id, old.result, old.buffers);
    await tick();
    expect(mounted.root.dataset.revision).toBeUndefined();
    expect(mounted.root.dataset.loading).toBe("true");
    // Nor is a reply to the new request that was computed for the old revision (the kernel was behind).
    model.reply(second.id, old.result, old.buffers);
    await tick();
    expect(mounted.root.dataset.revision).toBeUndefined();
    expect(mounted.q("summary").textContent).not.toContain("+9.0");
    // A reply for the current revision is drawn.
    model.set("revision", 3);
    const third = model.requests("attribution").at(-1);
    const r = reply({ revision: 3 });
    model.reply(third.id, r.result, r.buffers);
    await tick();
    expect(mounted.root.dataset.revision).toBe("3");
    expect(mounted.root.dataset.loading).toBeUndefined();
    expect(mounted.q("error").textContent).toBe("");
  });

  test("dispose removes the view and its listeners", async () => {
    const model = makeModel();
    const { cleanup, el } = await mount(model);
    expect(model.listenerCount()).toBeGreaterThan(0);
    cleanup();
    expect(el.querySelector("[data-testid=logit-attribution]")).toBeNull();
    expect(model.listenerCount()).toBe(0);
  });
});
