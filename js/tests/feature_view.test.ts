import { afterEach, describe, expect, test, vi } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { cssColor, sequentialColormap } from "../src/lib/colormap";
import { parseUnitId } from "../src/lib/view";
import widget, { colorScale, drawHistogram, FEATURE_ID, formatPercent } from "../src/views/feature_view";
import { FakeModel, mountView } from "./helpers";

const K = 8;
const TOKENS = ["<bos>", "The", " cat", " sat"];

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    hook: "blocks.1.hook_resid_post",
    d_sae: 1024,
    k: 4,
    n_windows: 100,
    n_tokens: 51200,
    prompts: ["The cat sat"],
    prompt_index: 0,
    selected: { feature: null },
    status: "idle",
    progress: { done: 0, total: 10 },
    error: "",
    revision: 0,
    ...attrs,
  });
}

/** Per token, its (feature, value) pairs strongest first; the rest of the K slots are empty (-1). */
function promptReply(promptIndex: number, tokens: string[], rows: Array<Array<[number, number]>>) {
  const ids: number[] = [];
  const values: number[] = [];
  for (const row of rows) {
    for (let j = 0; j < K; j++) {
      ids.push(j < row.length ? row[j][0] : -1);
      values.push(j < row.length ? row[j][1] : 0);
    }
  }
  const a = encodeArray(ids, [tokens.length, K], "int32", { bufferIndex: 0 });
  const b = encodeArray(values, [tokens.length, K], "float32", { bufferIndex: 1 });
  return {
    result: { revision: 0, prompt_index: promptIndex, tokens, top_ids: a.header, top_values: b.header }, // the kernel stamps every reply
    buffers: [a.buffer, b.buffer],
  };
}

const ROWS: Array<Array<[number, number]>> = [
  [],
  [[7, 0.5]],
  [
    [123, 2.31],
    [7, 1.5],
    [900, 0.25],
  ],
  [[123, 5]],
];

interface Ex {
  tokens: string[];
  acts: number[];
  max: number;
  value: number;
}

const EXAMPLES: Ex[] = [
  { tokens: ["a", " cat", " on", " mat"], acts: [0, 5.21, 1, 0], max: 1, value: 5.21 },
  { tokens: ["<img src=x onerror=alert(1)>", " cats"], acts: [0, 3], max: 1, value: 3 },
];

function featureReply(
  feature: number,
  revision: number,
  opts: {
    fires?: number;
    density?: number;
    max?: number | null;
    promptActs?: number[];
    counts?: number[];
    examples?: Ex[];
  } = {},
) {
  const examples = opts.examples ?? EXAMPLES;
  const promptActs = opts.promptActs ?? [0, 0, 2.31, 5];
  const counts = opts.counts ?? [5, 0, 3, 1];
  const width = Math.max(0, ...examples.map((e) => e.tokens.length));
  const flat: number[] = [];
  for (const e of examples) for (let i = 0; i < width; i++) flat.push(i < e.acts.length ? e.acts[i] : NaN);
  const p = encodeArray(promptActs, [promptActs.length], "float32", { bufferIndex: 0 });
  const c = encodeArray(counts, [counts.length], "int32", { bufferIndex: 1 });
  const x = encodeArray(flat, [examples.length, width], "float16", { bufferIndex: 2 });
  const v = encodeArray(
    examples.map((e) => e.value),
    [examples.length],
    "float32",
    { bufferIndex: 3 },
  );
  return {
    result: {
      revision,
      feature,
      fires: opts.fires ?? 215,
      density: opts.density ?? 215 / 51200,
      max: opts.max === undefined ? 5.21 : opts.max,
      prompt_acts: p.header,
      histogram: { counts: c.header, lo: 0.01, hi: 5.21 },
      promoted: [
        { token: " cat", value: 1.234 },
        { token: "\n", value: 0.5 },
      ],
      suppressed: [{ token: " dog", value: -0.75 }],
      examples: examples.map((e, i) => ({
        tokens: e.tokens,
        max_index: e.max,
        window: 20 + i,
        position: 7,
        source: 1,
      })),
      example_acts: x.header,
      example_values: v.header,
    },
    buffers: [p.buffer, c.buffer, x.buffer, v.buffer],
  };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, method: string, reply: { result: unknown; buffers?: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers ?? []);
  return req;
}

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "feature-view");
  const tokens = (within: HTMLElement = mounted.q("prompt-tokens")) => [
    ...within.querySelectorAll<HTMLElement>("[data-testid=token]"),
  ];
  const chips = () => [...mounted.el.querySelectorAll<HTMLButtonElement>("[data-testid=feature-chip]")];
  const hover = (i: number) => tokens()[i].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
  const keydown = (id: string, key: string) =>
    mounted.q(id).dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true }));
  return { ...mounted, tokens, chips, hover, keydown };
}

/** Mount with the prompt drawn. */
async function mountWithPrompt(model: FakeModel) {
  const m = mount(model);
  answer(model, "prompt", promptReply(0, TOKENS, ROWS));
  await tick();
  return m;
}

afterEach(() => document.body.replaceChildren());

describe("FeatureView helpers", () => {
  test("feature ids: parseUnitId accepts ids in range and says what is wrong otherwise", () => {
    expect(parseUnitId(" 12 ", 100, FEATURE_ID)).toEqual({ id: 12 });
    expect(parseUnitId("100", 100, FEATURE_ID)).toEqual({ error: "feature 100 is out of range: 0..99" });
    expect(parseUnitId("-1", 100, FEATURE_ID)).toEqual({ error: 'feature must be a whole number in 0..99, got "-1"' });
    expect(parseUnitId("", 100, FEATURE_ID)).toEqual({ error: "feature must be a whole number in 0..99" });
    expect(parseUnitId("3", 0, FEATURE_ID)).toEqual({ error: "this SAE has no features" });
  });

  test("formatPercent: two decimals, two significant digits when tiny", () => {
    expect(formatPercent(0.0042)).toBe("0.42%");
    expect(formatPercent(1)).toBe("100.00%");
    expect(formatPercent(0)).toBe("0.00%");
    expect(formatPercent(0.0000012)).toBe("0.00012%");
  });

  test("colorScale: the largest finite value shown, 1 when nothing is positive", () => {
    const ex = (a: number[]) => ({ tokens: [], maxIndex: 0, value: 0, activations: new Float32Array(a) });
    expect(colorScale({ max: 2, promptActs: new Float32Array([3, NaN]), examples: [ex([1, 7])] })).toBe(7);
    expect(colorScale({ max: null, promptActs: new Float32Array([0]), examples: [] })).toBe(1);
  });

  test("drawHistogram: one bar per nonzero bin, the axis ends labelled", () => {
    const calls: Array<{ name: string; args: any[] }> = [];
    const ctx = new Proxy({} as Record<string | symbol, unknown>, {
      get: (t, prop) => (prop in t ? t[prop] : (...args: any[]) => calls.push({ name: String(prop), args })),
      set: (t, prop, v) => {
        t[prop] = v;
        return true;
      },
    }) as unknown as CanvasRenderingContext2D;
    const colors = { bar: "blue", text: "grey", axis: "black", font: "10px sans-serif" };
    drawHistogram(ctx, { counts: [4, 0, 2, 1], lo: 0.01, hi: 5.21 }, { width: 360, height: 120 }, colors);
    const rects = calls.filter((c) => c.name === "fillRect");
    expect(rects).toHaveLength(4); // three bars and the axis
    expect(rects[0].args[3]).toBeCloseTo(2 * rects[1].args[3]); // 4 vs 2 counts: twice as tall
    expect(calls.filter((c) => c.name === "fillText").map((c) => c.args[0])).toEqual(["0.01", "5.21", "4 per bin"]);
    calls.length = 0;
    drawHistogram(ctx, { counts: [0, 0], lo: 0, hi: 0 }, { width: 360, height: 120 }, colors);
    expect(calls.filter((c) => c.name === "fillText").map((c) => c.args[0])).toEqual(["no activations yet"]);
  });
});

describe("FeatureView", () => {
  test("the prompt reply renders tokens; a hovered token shows its features as chips", async () => {
    const model = makeModel();
    const { root, q, tokens, chips, hover } = mount(model);
    for (const id of [
      "start-button",
      "stop-button",
      "status",
      "info",
      "prompt-select",
      "prompt-input",
      "feature-input",
      "prompt-tokens",
      "token-features",
      "dashboard",
      "error",
    ]) {
      expect(q(id), id).not.toBeNull();
    }
    expect(q("info").textContent).toBe(
      "blocks.1.hook_resid_post · 1,024 features · top 4 examples · 100 windows, 51,200 tokens",
    );
    expect(q("prompt-select").hidden).toBe(true); // one prompt
    expect(q("dashboard").hidden).toBe(true); // nothing selected
    expect(model.requests().map((r) => [r.method, r.params])).toEqual([["prompt", { prompt_index: 0 }]]);
    answer(model, "prompt", promptReply(0, TOKENS, ROWS));
    await tick();
    expect(root.dataset.prompt).toBe("0");
    expect(tokens().map((t) => t.textContent)).toEqual(TOKENS);
    expect(chips()).toHaveLength(0);
    hover(2);
    expect(chips().map((c) => c.textContent)).toEqual(["#123 2.31", "#7 1.50", "#900 0.25"]);
    expect(chips().map((c) => c.dataset.feature)).toEqual(["123", "7", "900"]);
    expect(q("token-features").dataset.position).toBe("2");
    expect(q("token-caption").textContent).toContain('token 2 " cat"');
    hover(0); // empty slots (-1) are not chips
    expect(chips()).toHaveLength(0);
    expect(q("token-caption").textContent).toBe('token 0 "<bos>": no feature fires here.');
    // keyboard focus shows a token's features too; leaving the strip keeps them clickable
    tokens()[3].dispatchEvent(new FocusEvent("focusin", { bubbles: true }));
    expect(chips().map((c) => c.textContent)).toEqual(["#123 5.00"]);
    q("prompt-tokens").dispatchEvent(new MouseEvent("mouseleave"));
    expect(chips()).toHaveLength(1);
  });

  test("a click locks a token; clicking a chip selects its feature and fetches it", async () => {
    const model = makeModel();
    const { q, tokens, chips, hover } = await mountWithPrompt(model);
    tokens()[2].click();
    hover(1);
    expect(chips().map((c) => c.dataset.feature)).toEqual(["7"]);
    q("prompt-tokens").dispatchEvent(new MouseEvent("mouseleave")); // back to the locked token
    expect(chips().map((c) => c.dataset.feature)).toEqual(["123", "7", "900"]);
    const chip = chips()[0];
    chip.focus();
    chip.click();
    expect(chips()[0]).toBe(chip); // marked in place: the keyboard focus stays on it
    expect(document.activeElement).toBe(chip);
    expect(model.get("selected")).toEqual({ feature: 123 });
    expect(model.saves).toBe(1);
    expect(q<HTMLInputElement>("feature-input").value).toBe("123");
    expect(chips()[0].getAttribute("aria-pressed")).toBe("true");
    expect(q("dashboard").hidden).toBe(false);
    expect(q("feature-header").textContent).toBe("Feature 123 · loading…");
    await tick();
    expect(model.requests("feature").map((r) => r.params)).toEqual([{ feature: 123, prompt_index: 0 }]);
  });

  test("a feature selected in Python is fetched and drawn: header, histogram, lists, examples, prompt colours", async () => {
    const model = makeModel();
    const { root, q, tokens } = await mountWithPrompt(model);
    model.set("selected", { feature: 123 });
    await tick();
    expect(model.requests("feature").map((r) => r.params)).toEqual([{ feature: 123, prompt_index: 0 }]);
    expect(q("dashboard").dataset.feature).toBeUndefined();
    answer(model, "feature", featureReply(123, 2));
    await tick();
    const dash = q("dashboard");
    expect(dash.dataset.feature).toBe("123");
    expect(dash.dataset.revision).toBe("2");
    expect(q("feature-header").textContent).toBe("Feature 123 · fires on 0.42% of 51,200 tokens · max 5.21");
    expect(q("histogram").dataset.bins).toBe("4");
    expect(q("histogram").dataset.total).toBe("9");
    expect(q("histogram-caption").textContent).toBe("activation histogram: 9 nonzero activations, 0.01 … 5.21");
    const items = (id: string) =>
      [...q(id).querySelectorAll("li")].map((li) => [...li.children].map((c) => c.textContent));
    expect(items("promoted")).toEqual([
      [" cat", "+1.23"],
      ["↵", "+0.50"],
    ]);
    expect(items("suppressed")).toEqual([[" dog", "−0.75"]]);
    const rows = [...q("examples").querySelectorAll<HTMLElement>("[data-testid=example]")];
    expect(rows).toHaveLength(2);
    expect(rows.map((r) => r.querySelector("[data-testid=example-value]")!.textContent)).toEqual(["5.21", "3.00"]);
    const first = tokens(rows[0]);
    expect(first.map((t) => t.textContent)).toEqual(["a", " cat", " on", " mat"]);
    expect(first.filter((t) => t.classList.contains("miw-token-primary")).map((t) => t.dataset.index)).toEqual(["1"]);
    expect(tokens(rows[1])[0].textContent).toBe("<img src=x onerror=alert(1)>"); // text, never HTML
    expect(root.querySelector("img")).toBeNull();
    // one sequential scale (0 .. 5.21) for the prompt and the examples; 0 is the background
    const cmap = sequentialColormap("light");
    expect(tokens()[0].style.backgroundColor).toBe(cssColor(cmap, 0, 0, 5.21));
    expect(tokens()[0].style.backgroundColor).toBe("rgb(255, 255, 255)");
    expect(tokens()[3].style.backgroundColor).toBe(cssColor(cmap, 5, 0, 5.21));
    expect(first[1].style.backgroundColor).toBe(cssColor(cmap, 5.21, 0, 5.21));
    expect(tokens()[3].title).toContain("feature 123: 5.000");
    expect(root.dataset.painted).toBe("123:2");
    expect(q("scale").textContent).toBe("colour: feature 123, 0 … 5.21");
  });

  test("a feature the scan has not found firing says so", async () => {
    const model = makeModel();
    const { q } = await mountWithPrompt(model);
    model.set("selected", { feature: 5 });
    await tick();
    answer(
      model,
      "feature",
      featureReply(5, 0, { fires: 0, density: 0, max: null, promptActs: [0, 0, 0, 0], counts: [0, 0], examples: [] }),
    );
    await tick();
    expect(q("feature-header").textContent).toBe("Feature 5 · not seen firing yet: start the corpus scan");
    expect(q("no-examples").textContent).toContain("No examples yet");
    expect(q("histogram-caption").textContent).toBe("activation histogram: no activations yet");
    expect(q("promoted").querySelectorAll("li")).toHaveLength(2); // the weights are known before any scan
    model.set("status", "done");
    expect(q("feature-header").textContent).toBe("Feature 5 · never fires on the 51,200 corpus tokens");
  });

  test("typing a prompt and Enter appends it, shows it, and asks for it after the state is saved", async () => {
    const model = makeModel();
    const { q, root, keydown } = await mountWithPrompt(model);
    const input = q<HTMLInputElement>("prompt-input");
    input.value = "   ";
    keydown("prompt-input", "Enter");
    expect(model.saves).toBe(0); // blank: nothing to add
    input.value = "A dog ran";
    keydown("prompt-input", "Enter");
    expect(model.get("prompts")).toEqual(["The cat sat", "A dog ran"]);
    expect(model.get("prompt_index")).toBe(1);
    expect(model.saves).toBe(1);
    expect(input.value).toBe("");
    expect(model.requests("prompt")).toHaveLength(1); // not before save_changes went out
    await tick();
    expect(model.requests("prompt").map((r) => r.params)).toEqual([{ prompt_index: 0 }, { prompt_index: 1 }]);
    expect(model.requests("feature")).toHaveLength(0); // nothing selected
    const select = q<HTMLSelectElement>("prompt-select");
    expect(select.hidden).toBe(false);
    expect([...select.options].map((o) => o.textContent)).toEqual(["0: The cat sat", "1: A dog ran"]);
    expect(select.value).toBe("1");
    // the select switches back
    select.value = "0";
    select.dispatchEvent(new Event("change"));
    expect(model.get("prompt_index")).toBe(0);
    expect(model.saves).toBe(2);
    await tick();
    // Back to the prompt that is drawn before prompt 1 came: its request is dropped and prompt 0 is
    // drawn again without asking (resource.ts).
    const [, for1] = model.requests("prompt");
    expect(model.requests("prompt")).toHaveLength(2);
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === for1.id)).toBe(true);
    expect(root.dataset.prompt).toBe("0");
  });

  test("feature-input: Enter selects a valid id, an invalid one says why", async () => {
    const model = makeModel();
    const { q, keydown } = await mountWithPrompt(model);
    const input = q<HTMLInputElement>("feature-input");
    input.value = "5000";
    keydown("feature-input", "Enter");
    expect(q("feature-message").textContent).toBe("feature 5000 is out of range: 0..1023");
    expect(input.getAttribute("aria-invalid")).toBe("true");
    expect(model.saves).toBe(0);
    input.value = "42";
    keydown("feature-input", "Enter");
    expect(model.get("selected")).toEqual({ feature: 42 });
    expect(model.saves).toBe(1);
    expect(q("feature-message").textContent).toBe("");
    await tick();
    expect(model.requests("feature").map((r) => r.params)).toEqual([{ feature: 42, prompt_index: 0 }]);
  });

  test("stale replies are dropped: older revisions, other features, other prompts", async () => {
    const model = makeModel({ selected: { feature: 123 } });
    const { q } = mount(model);
    expect(model.requests().map((r) => r.method)).toEqual(["prompt", "feature"]);
    answer(model, "prompt", promptReply(0, TOKENS, ROWS));
    answer(model, "feature", featureReply(123, 3));
    await tick();
    expect(q("dashboard").dataset.revision).toBe("3");

    model.set("revision", 4);
    answer(model, "feature", featureReply(123, 2, { examples: EXAMPLES.slice(1) })); // older than what is drawn
    await tick();
    expect(q("dashboard").dataset.revision).toBe("3");
    expect(q("examples").querySelectorAll("[data-testid=example]")).toHaveLength(2);

    model.set("selected", { feature: 7 });
    await tick();
    const old = model.requests("feature").at(-2); // asked for 123; superseded by the request for 7
    model.reply(old.id, featureReply(123, 5).result, featureReply(123, 5).buffers);
    await tick();
    expect(q("dashboard").dataset.feature).toBeUndefined();
    expect(q("feature-header").textContent).toBe("Feature 7 · loading…");
    answer(model, "feature", featureReply(123, 5)); // a reply naming another feature
    await tick();
    expect(q("dashboard").dataset.feature).toBeUndefined();

    model.set("prompts", ["The cat sat", "A dog ran"]);
    model.set("prompt_index", 1);
    await tick();
    const featureFor1 = model.requests("feature").at(-1);
    expect(featureFor1.params).toEqual({ feature: 7, prompt_index: 1 });
    model.set("prompt_index", 0); // back before the replies arrive
    await tick();
    model.reply(featureFor1.id, featureReply(7, 6).result, featureReply(7, 6).buffers); // superseded by the fetch for prompt 0
    await tick();
    expect(q("dashboard").dataset.feature).toBeUndefined();
    answer(model, "prompt", promptReply(0, TOKENS, ROWS));
    answer(model, "feature", featureReply(7, 6));
    await tick();
    expect(q("dashboard").dataset.feature).toBe("7");
  });

  test("stale policy: a feature reply computed for the revision before a bump is never drawn", async () => {
    const model = makeModel({ selected: { feature: 123 }, revision: 3 });
    const { q } = mount(model);
    answer(model, "prompt", promptReply(0, TOKENS, ROWS));
    answer(model, "feature", featureReply(123, 3));
    await tick();
    expect(q("dashboard").dataset.revision).toBe("3");

    model.set("revision", 4);
    expect(model.requests("feature")).toHaveLength(2);
    // computed for revision 3: as new as what is drawn, but older than the revision the view asked at
    answer(model, "feature", featureReply(123, 3, { fires: 1, examples: EXAMPLES.slice(1) }));
    await tick();
    expect(q("dashboard").dataset.revision).toBe("3");
    expect(q("examples").querySelectorAll("[data-testid=example]")).toHaveLength(2);
    expect(q("error").textContent).toBe("");
    model.set("revision", 5);
    answer(model, "feature", featureReply(123, 5, { examples: EXAMPLES.slice(1) }));
    await tick();
    expect(q("dashboard").dataset.revision).toBe("5");
    expect(q("examples").querySelectorAll("[data-testid=example]")).toHaveLength(1);
    expect(model.requests("prompt")).toHaveLength(1); // the prompt does not follow the scan
  });

  test("a prompt replaced under the same index is asked for again, with the feature on it", async () => {
    const model = makeModel({ selected: { feature: 123 } });
    const { root, tokens } = mount(model);
    answer(model, "prompt", promptReply(0, TOKENS, ROWS));
    answer(model, "feature", featureReply(123, 1));
    await tick();
    expect(root.dataset.painted).toBe("123:1");
    model.set("prompts", ["The cat sat"]); // the same text: nothing to ask
    await tick();
    expect(model.requests("prompt")).toHaveLength(1);
    model.set("prompts", ["A dog"]);
    await tick();
    expect(model.requests("prompt").map((r) => r.params)).toEqual([{ prompt_index: 0 }, { prompt_index: 0 }]);
    expect(model.requests("feature").at(-1).params).toEqual({ feature: 123, prompt_index: 0 });
    answer(model, "prompt", promptReply(0, ["<bos>", "A", " dog"], [[], [[123, 1]], []]));
    await tick();
    expect(tokens().map((t) => t.textContent)).toEqual(["<bos>", "A", " dog"]);
    expect(root.dataset.painted).toBeUndefined(); // the drawn values belong to the old prompt
    answer(model, "feature", featureReply(123, 1, { promptActs: [0, 1, 0] }));
    await tick();
    expect(root.dataset.painted).toBe("123:1");
  });

  test("a revision refetches the selected feature, coalesced", async () => {
    const model = makeModel({ selected: { feature: 123 } });
    const { q } = mount(model);
    answer(model, "prompt", promptReply(0, TOKENS, ROWS));
    answer(model, "feature", featureReply(123, 1));
    await tick();
    model.set("revision", 2);
    model.set("revision", 3); // folds into one more fetch
    expect(model.requests("feature")).toHaveLength(2);
    answer(model, "feature", featureReply(123, 2));
    await tick();
    expect(q("dashboard").dataset.revision).toBe("2");
    expect(model.requests("feature")).toHaveLength(3);
    answer(model, "feature", featureReply(123, 3, { fires: 512, density: 512 / 25600 }));
    await tick();
    expect(q("dashboard").dataset.revision).toBe("3");
    expect(q("feature-header").textContent).toBe("Feature 123 · fires on 2.00% of 25,600 tokens · max 5.21");
    expect(model.requests("prompt")).toHaveLength(1); // the prompt does not follow the scan
  });

  test("Start and Stop go through the shared toolbar", async () => {
    const model = makeModel();
    const { q, root } = mount(model);
    q<HTMLButtonElement>("start-button").click();
    expect(model.requests("start")).toHaveLength(1);
    answer(model, "start", { result: {} });
    model.attrs.progress = { done: 3, total: 10 };
    model.set("status", "running");
    await tick();
    expect(q("status").textContent).toBe("running: batch 3/10");
    expect(root.dataset.status).toBe("running");
  });

  test("errors reach the banner; a broken reply never throws out", async () => {
    const model = makeModel({ selected: { feature: 3 } });
    const { q } = mount(model);
    model.replyError(model.requests("feature")[0].id, "KeyError", "feature 3 is dead");
    await tick();
    expect(q("error").textContent).toContain("KeyError: feature 3 is dead");
    const bad = encodeArray([1, 2], [2], "int32");
    answer(model, "prompt", {
      result: { revision: 0, prompt_index: 0, tokens: TOKENS, top_ids: bad.header, top_values: bad.header },
      buffers: [bad.buffer],
    });
    await tick();
    expect(q("error").textContent).toContain("prompt reply needs int32 top_ids and top_values of shape [4, K]");
    model.set("error", "RuntimeError: device lost");
    expect(q("error").textContent).toContain("device lost");
    model.set("revision", 1);
    answer(model, "feature", featureReply(3, 1));
    await tick();
    expect(q("error").textContent).not.toContain("feature 3 is dead"); // cleared by the next success
  });

  test("the theme switch recolours the prompt and the examples", async () => {
    const model = makeModel({ selected: { feature: 123 } });
    const { q, tokens } = mount(model);
    answer(model, "prompt", promptReply(0, TOKENS, ROWS));
    answer(model, "feature", featureReply(123, 1));
    await tick();
    const example = tokens(q("examples"))[1];
    expect(tokens()[3].style.backgroundColor).toBe(cssColor(sequentialColormap("light"), 5, 0, 5.21));
    document.body.setAttribute("data-jp-theme-light", "false");
    await tick(20);
    expect(tokens()[3].style.backgroundColor).toBe(cssColor(sequentialColormap("dark"), 5, 0, 5.21));
    expect(example.style.backgroundColor).toBe(cssColor(sequentialColormap("dark"), 5.21, 0, 5.21));
    document.body.removeAttribute("data-jp-theme-light");
  });

  test("dispose removes the view and every listener, and sends nothing later", async () => {
    const model = makeModel({ selected: { feature: 3 } });
    const { el, cleanup } = mount(model);
    model.set("selected", { feature: 4 }); // a fetch scheduled for the next microtask
    cleanup();
    await tick();
    expect(el.children).toHaveLength(0);
    expect(model.listenerCount()).toBe(0);
    expect(model.requests("feature")).toHaveLength(1);
  });

  test("the histogram is drawn on the canvas in the theme's colours", async () => {
    const calls: Array<{ name: string; args: any[]; fillStyle: unknown }> = [];
    const state: Record<string | symbol, unknown> = {};
    const ctx = new Proxy(state, {
      get: (t, prop) =>
        prop in t ? t[prop] : (...args: any[]) => calls.push({ name: String(prop), args, fillStyle: t.fillStyle }),
      set: (t, prop, v) => {
        t[prop] = v;
        return true;
      },
    });
    const spy = vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(() => ctx as any);
    try {
      const model = makeModel({ selected: { feature: 123 } });
      const { root } = mount(model);
      root.style.setProperty("--miw-accent", "rgb(1, 2, 3)");
      answer(model, "prompt", promptReply(0, TOKENS, ROWS));
      answer(model, "feature", featureReply(123, 1));
      await tick();
      await tick(20); // the theme check a frame after mounting redraws it
      const last = calls.slice(calls.map((c) => c.name).lastIndexOf("clearRect"));
      const bars = last.filter((c) => c.name === "fillRect" && c.fillStyle === "rgb(1, 2, 3)");
      expect(bars).toHaveLength(3); // bins 5, 0, 3, 1
      expect(last.filter((c) => c.name === "fillText").map((c) => c.args[0])).toEqual(["0.01", "5.21", "5 per bin"]);
    } finally {
      spy.mockRestore();
    }
  });
});
