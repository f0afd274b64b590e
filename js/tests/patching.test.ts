import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import widget, {
  type ComponentInfo,
  cellSelection,
  colLabels,
  correlationLine,
  countFinite,
  decodePerPrompt,
  decodeResults,
  disagreementLine,
  formatMetric,
  formatValue,
  parseComponents,
  parseSelected,
  rowLabels,
  selectionCell,
  selectionKey,
  symmetricRange,
  unitLabel,
} from "../src/views/patching";
import { FakeModel, mountView } from "./helpers";

const L = 2;
const H = 3;
const EVIL = "<img src=x onerror=alert(1)>";
const TOKENS = ["<bos>", "When", EVIL, " Mary"];
const S = TOKENS.length;

const RESID: ComponentInfo = {
  name: "resid_pre",
  title: "Residual stream",
  rows: "layer",
  cols: "position",
  n_rows: L,
  n_cols: S,
};
const HEADS: ComponentInfo = {
  name: "head_out",
  title: "Head outputs",
  rows: "layer",
  cols: "head",
  n_rows: L,
  n_cols: H,
};
const HEAD_POS: ComponentInfo = {
  name: "head_out_pos",
  title: "Head outputs by position",
  rows: "layer_head",
  cols: "position",
  n_rows: L * H,
  n_cols: S,
};
const COMPONENTS = [RESID, HEADS, HEAD_POS];

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_layers: L,
    n_heads: H,
    n_prompts: 3,
    tokens: TOKENS,
    components: COMPONENTS,
    method: "exact",
    scale: { low: "corrupted", high: "clean" },
    metric: { clean: 3.25, corrupted: -0.5, name: "logit diff" },
    selected: { component: null, layer: null, head: null, position: null },
    status: "idle",
    progress: { done: 0, total: 0 },
    error: "",
    revision: 0,
    ...attrs,
  });
}

/** Cell i of a component: (i + 1) / 10, NaN from `nanFrom` (flat index) on. */
function grid(info: ComponentInfo, nanFrom = Infinity, scale = 1): number[] {
  return Array.from({ length: info.n_rows * info.n_cols }, (_, i) => (i >= nanFrom ? NaN : ((i + 1) / 10) * scale));
}

interface ReplyOptions {
  nanFrom?: number;
  attribution?: boolean;
  agreement?: Record<string, unknown>;
  values?: Record<string, { values: number[]; shape: number[] }>;
}

function resultsReply(revision: number, opts: ReplyOptions = {}) {
  const buffers: ArrayBuffer[] = [];
  const add = (values: number[], shape: number[]) => {
    const { header, buffer } = encodeArray(values, shape, "float32", { bufferIndex: buffers.length });
    buffers.push(buffer);
    return header;
  };
  const values: Record<string, unknown> = {};
  const attribution: Record<string, unknown> = {};
  for (const c of COMPONENTS) {
    const own = opts.values?.[c.name];
    values[c.name] = own ? add(own.values, own.shape) : add(grid(c, opts.nanFrom), [c.n_rows, c.n_cols]);
    if (opts.attribution) attribution[c.name] = add(grid(c, Infinity, 0.5), [c.n_rows, c.n_cols]);
  }
  const result: Record<string, unknown> = { revision, names: COMPONENTS.map((c) => c.name), values };
  if (opts.attribution) result.attribution = attribution;
  if (opts.agreement) result.agreement = opts.agreement;
  return { result, buffers };
}

function perPromptReply(revision: number, values: number[], prompts: string[], attribution?: number[]) {
  const buffers: ArrayBuffer[] = [];
  const v = encodeArray(values, [values.length], "float32", { bufferIndex: 0 });
  buffers.push(v.buffer);
  const result: Record<string, unknown> = { revision, values: v.header, prompts };
  if (attribution) {
    const a = encodeArray(attribution, [attribution.length], "float32", { bufferIndex: 1 });
    buffers.push(a.buffer);
    result.attribution = a.header;
  }
  return { result, buffers };
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

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "patching");
  const { el } = mounted;
  const heatmap = (component: string, kind = "patching-heatmap") =>
    el.querySelector<HTMLElement>(`[data-testid=${kind}][data-component=${component}]`)!;
  const key = (component: string, ...keys: string[]) => {
    for (const k of keys)
      heatmap(component).dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));
  };
  return { ...mounted, heatmap, key };
}

afterEach(() => document.body.replaceChildren());

describe("patching helpers", () => {
  test("decode a results reply: one grid per name, shaped as its component", () => {
    const r = decodeResults(asResponse(resultsReply(1, { nanFrom: 3 })), COMPONENTS);
    expect(r.names).toEqual(["resid_pre", "head_out", "head_out_pos"]);
    const resid = r.values.get("resid_pre")!;
    expect([resid.rows, resid.cols]).toEqual([L, S]);
    expect(resid.data[2]).toBeCloseTo(0.3, 6);
    expect(resid.data[3]).toBeNaN();
    expect(r.attribution).toBeNull();
    expect(r.agreement.size).toBe(0);
    expect(r.values.get("head_out_pos")!.rows).toBe(L * H);
  });

  test("decode the attribution estimate and the agreement", () => {
    const agreement = {
      head_out: {
        correlation: 0.93,
        disagree: [{ layer: 1, head: 2, position: null, exact: 0.41, attribution: 0.05 }],
      },
      resid_pre: { correlation: null, disagree: [] },
    };
    const r = decodeResults(asResponse(resultsReply(1, { attribution: true, agreement })), COMPONENTS);
    expect(r.attribution!.get("head_out")!.data[5]).toBeCloseTo(0.3, 6);
    expect(r.agreement.get("head_out")).toEqual({
      correlation: 0.93,
      disagree: [{ layer: 1, head: 2, position: null, exact: 0.41, attribution: 0.05 }],
    });
    expect(r.agreement.get("resid_pre")!.correlation).toBeNull();
  });

  test("decode refuses malformed replies with messages that say what was expected", () => {
    const good = resultsReply(1);
    const bad =
      (patch: Record<string, unknown>, components = COMPONENTS) =>
      () =>
        decodeResults(asResponse({ result: { ...good.result, ...patch }, buffers: good.buffers }), components);
    expect(bad({ names: "resid_pre" })).toThrow("results names must be a list of component names");
    expect(bad({ values: null })).toThrow("results values must map each name to an array");
    expect(bad({ names: ["resid_pre", "mlp_out"] })).toThrow('results has no values for "mlp_out"');
    expect(bad({ values: { ...(good.result.values as object), resid_pre: 3 } })).toThrow(
      "results values[resid_pre] must be an array header, got 3",
    );
    expect(bad({}, [{ ...RESID, n_cols: 5 }])).toThrow("results values[resid_pre] must have shape [2, 5], got [2, 4]");
    const flat = resultsReply(1, { values: { head_out: { values: grid(HEADS), shape: [L * H] } } });
    expect(() => decodeResults(asResponse(flat), [])).toThrow("results values[head_out] must be 2-D, got shape [6]");
    const attr = resultsReply(1, { attribution: true });
    const table = attr.result.attribution as Record<string, any>;
    table.head_out = { ...table.head_out, shape: [H, L] };
    expect(() => decodeResults(asResponse(attr), COMPONENTS)).toThrow(
      "results attribution[head_out] must have shape [2, 3], got [3, 2]",
    );
    expect(bad({ agreement: { head_out: { correlation: "high", disagree: [] } } })).toThrow(
      "results agreement[head_out].correlation must be a number or null",
    );
    expect(
      bad({ agreement: { head_out: { correlation: 0.5, disagree: [{ layer: 1.5, exact: 0, attribution: 0 }] } } }),
    ).toThrow("results agreement[head_out].disagree[0] must be {layer, head, position, exact, attribution}");
    expect(() =>
      decodeResults({ result: good.result, buffers: good.buffers.map((b) => new DataView(b.slice(0, 4))) }, COMPONENTS),
    ).toThrow("buffer holds 4 bytes");
  });

  test("decode a per_prompt reply and refuse one that does not line up", () => {
    const r = decodePerPrompt(asResponse(perPromptReply(1, [0.5, NaN, 1.2], ["a", "b", "c"], [0.4, 0.1, 0.9])), 3);
    expect(Array.from(r.values)).toEqual([0.5, NaN, expect.closeTo(1.2, 6)]);
    expect(r.prompts).toEqual(["a", "b", "c"]);
    expect(r.attribution![2]).toBeCloseTo(0.9, 6);
    expect(decodePerPrompt(asResponse(perPromptReply(1, [0.5], ["a"]))).attribution).toBeNull();
    expect(() => decodePerPrompt(asResponse(perPromptReply(1, [0.5, 0.2], ["a"])))).toThrow(
      "per_prompt prompts must list 2 labels, one per value",
    );
    expect(() => decodePerPrompt(asResponse(perPromptReply(1, [0.5, 0.2], ["a", "b"])), 3)).toThrow(
      "per_prompt values must have one value per prompt (3), got 2",
    );
    expect(() => decodePerPrompt(asResponse(perPromptReply(1, [0.5, 0.2], ["a", "b"], [0.1])))).toThrow(
      "per_prompt attribution must have 2 values, one per prompt, got 1",
    );
    expect(() => decodePerPrompt({ result: { revision: 1, prompts: [] }, buffers: [] })).toThrow(
      "per_prompt values must be an array header",
    );
  });

  test("a cell maps to selected for each row and column kind, and back", () => {
    expect(cellSelection(RESID, { row: 1, col: 2 }, H)).toEqual({
      component: "resid_pre",
      layer: 1,
      head: null,
      position: 2,
    });
    expect(cellSelection(HEADS, { row: 1, col: 2 }, H)).toEqual({
      component: "head_out",
      layer: 1,
      head: 2,
      position: null,
    });
    expect(cellSelection(HEAD_POS, { row: 4, col: 3 }, H)).toEqual({
      component: "head_out_pos",
      layer: 1,
      head: 1,
      position: 3,
    });
    for (const [info, cell] of [
      [RESID, { row: 1, col: 3 }],
      [HEADS, { row: 0, col: 2 }],
      [HEAD_POS, { row: 5, col: 0 }],
    ] as const) {
      expect(selectionCell(info, cellSelection(info, cell, H), H)).toEqual(cell);
    }
    const sel = cellSelection(HEADS, { row: 1, col: 2 }, H);
    expect(selectionCell(RESID, sel, H)).toBeNull(); // another component
    expect(selectionCell(HEADS, { ...sel, head: 7 }, H)).toBeNull(); // out of the grid
    expect(selectionCell(HEAD_POS, { component: "head_out_pos", layer: 1, head: null, position: 2 }, H)).toBeNull();
    expect(selectionKey(sel)).toBe("head_out:1:2:");
    expect(selectionKey(cellSelection(HEAD_POS, { row: 4, col: 3 }, H))).toBe("head_out_pos:1:1:3");
    expect(selectionKey(parseSelected({ component: null, layer: 1 }))).toBe("");
    expect(parseSelected({ component: "x", layer: 1.5, head: 2 })).toEqual({
      component: "x",
      layer: null,
      head: 2,
      position: null,
    });
  });

  test("the colour range is symmetric, at least 1, and ignores NaN and inf", () => {
    expect(symmetricRange([new Float32Array([0.2, NaN, -0.4])])).toBe(1);
    expect(symmetricRange([new Float32Array([0.2, NaN]), [-2.5, 1.2, Infinity]])).toBe(2.5);
    expect(symmetricRange([])).toBe(1);
    expect(countFinite([1, NaN, -Infinity, 0])).toBe(2);
  });

  test("labels", () => {
    expect(rowLabels(RESID, H)).toEqual(["L0", "L1"]);
    expect(rowLabels(HEAD_POS, H)).toEqual(["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]);
    expect(colLabels(HEADS, TOKENS)).toEqual(["H0", "H1", "H2"]);
    expect(colLabels(RESID, ["a", "b\n"])).toEqual(["a", "b↵", "2", "3"]);
    expect(unitLabel({ layer: 3, head: 2, position: null })).toBe("L3H2");
    expect(unitLabel({ layer: 3, head: null, position: 5 })).toBe("L3 pos 5");
    expect(unitLabel({ layer: 0, head: 1, position: 5 })).toBe("L0H1 pos 5");
    expect(disagreementLine({ layer: 3, head: 2, position: null, exact: 0.41, attribution: 0.05 })).toBe(
      "L3H2: exact 0.41, attribution 0.05",
    );
    expect(correlationLine(0.934)).toBe("attribution vs exact: r = 0.93");
    expect(correlationLine(null)).toContain("not known yet");
    expect(formatValue(-0.25)).toBe("−0.25");
    expect(formatValue(-0.001)).toBe("0.00");
    expect(formatValue(NaN)).toBe("—");
    expect(formatMetric(null)).toBe("—");
    expect(formatMetric(-1.5)).toBe("−1.500");
    expect(formatMetric(2e-5)).toBe("2.00e−5");
  });

  test("components are checked", () => {
    expect(parseComponents(undefined)).toEqual([]);
    expect(parseComponents([{ ...HEADS, title: "" }])[0].title).toBe("head_out");
    expect(() => parseComponents([RESID, { ...HEADS, rows: "head" }])).toThrow(
      'components[1] must be {name, title, rows: "layer" | "layer_head"',
    );
  });
});

describe("Patching view", () => {
  test("mounts, fetches results on render, and draws one panel per component", async () => {
    const model = makeModel();
    const { root, q, el, heatmap } = mount(model);
    for (const id of ["start-button", "stop-button", "progress", "status", "error", "metric", "legend", "per-prompt"])
      expect(q(id), id).not.toBeNull();
    expect(root.dataset.status).toBe("idle");
    const panels = [...el.querySelectorAll<HTMLElement>("[data-testid=patching-panel]")];
    expect(panels.map((p) => p.dataset.component)).toEqual(COMPONENTS.map((c) => c.name));
    expect([...el.querySelectorAll(".miw-patch-title")].map((t) => t.textContent)).toEqual(
      COMPONENTS.map((c) => c.title),
    );
    expect(heatmap("resid_pre").tabIndex).toBe(0);
    expect(el.querySelector("[data-testid=attribution-heatmap]")).toBeNull();
    expect(q("metric").textContent).toBe("activation patching · logit diff: clean run 3.250, corrupted run −0.500");
    expect(q("legend-low").textContent).toBe("0 = corrupted");
    expect(q("legend-high").textContent).toBe("1 = clean");
    expect(q("per-prompt").textContent).toContain("Select a cell");

    expect(model.requests("results").map((r) => r.params)).toEqual([{}]);
    expect(model.requests("per_prompt")).toHaveLength(0); // nothing selected
    answer(model, "results", resultsReply(1, { nanFrom: 3 }));
    await tick();
    expect(root.dataset.revision).toBe("1");
    expect(root.dataset.filled).toBe(String(3 * 3)); // three finite cells per component, NaN not counted
    expect(panels.map((p) => p.dataset.filled)).toEqual(["3", "3", "3"]);
    expect(heatmap("head_out_pos").dataset.cellWidth).toBeDefined();
    expect(q("error").textContent).toBe("");
  });

  test("the shared range covers every panel; the legend says where 0 and 1 fall", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    answer(
      model,
      "results",
      resultsReply(1, { values: { head_out: { values: [0, 0, -2.5, 0, 1, NaN], shape: [L, H] } } }),
    );
    await tick();
    expect(root.dataset.range).toBe("2.5");
    expect(q("legend-min").textContent).toBe("−2.50");
    expect(q("legend-max").textContent).toBe("2.50");
    expect(q("legend-low").style.left).toBe("50%");
    expect(q("legend-high").style.left).toBe("70%");
    model.set("scale", { low: "corrupted (IOI-abc)", high: "clean" });
    expect(q("legend-low").textContent).toBe("0 = corrupted (IOI-abc)");
    const bar = q("legend").querySelector<HTMLElement>(".miw-patch-legend-bar")!;
    const light = bar.style.background;
    document.body.setAttribute("data-jp-theme-light", "false");
    await tick(20);
    expect(bar.style.background).not.toBe(light); // the dark theme's diverging map
    document.body.removeAttribute("data-jp-theme-light");
  });

  test("refetches on revision bumps; bumps during a fetch fold into one more", async () => {
    const model = makeModel();
    const { root } = mount(model);
    model.set("revision", 1);
    model.set("revision", 2);
    expect(model.requests("results")).toHaveLength(1);
    answer(model, "results", resultsReply(0, { nanFrom: 1 }));
    await tick();
    expect(root.dataset.filled).toBe("3");
    expect(model.requests("results")).toHaveLength(2);
    answer(model, "results", resultsReply(2, { nanFrom: 5 }));
    await tick();
    expect(root.dataset.revision).toBe("2");
    expect(root.dataset.filled).toBe("15");
    model.set("revision", 3);
    expect(model.requests("results")).toHaveLength(3);
    answer(model, "results", resultsReply(1)); // older than what is drawn: dropped
    await tick();
    expect(root.dataset.revision).toBe("2");
  });

  test("Enter on the keyboard cursor selects; the per-prompt request follows selected", async () => {
    const model = makeModel();
    const { root, key } = mount(model);
    answer(model, "results", resultsReply(1));
    await tick();
    key("head_out", "ArrowDown", "ArrowDown", "ArrowRight", "ArrowRight", "ArrowRight");
    expect(model.saves).toBe(0);
    key("head_out", "Enter");
    expect(model.get("selected")).toEqual({ component: "head_out", layer: 1, head: 2, position: null });
    expect(model.saves).toBe(1);
    expect(root.dataset.selected).toBe("head_out:1:2:");
    expect(model.requests("per_prompt").map((r) => r.params)).toEqual([
      { component: "head_out", layer: 1, head: 2, position: null },
    ]);

    key("head_out_pos", "ArrowDown", "ArrowDown", "ArrowDown", "ArrowDown", "ArrowDown", "End", "Enter");
    expect(model.get("selected")).toEqual({ component: "head_out_pos", layer: 1, head: 1, position: 3 });
    expect(model.requests("per_prompt").at(-1).params).toEqual({
      component: "head_out_pos",
      layer: 1,
      head: 1,
      position: 3,
    });
    expect(root.dataset.selected).toBe("head_out_pos:1:1:3");

    model.set("revision", 2); // the selected component's values move with the scan: asked again once this lands
    expect(model.requests("per_prompt")).toHaveLength(2);
    answer(model, "per_prompt", perPromptReply(1, [0.1, 0.2, 0.3], ["a", "b", "c"]));
    await tick();
    expect(model.requests("per_prompt")).toHaveLength(3);
    expect(model.requests("per_prompt").at(-1).params).toEqual(model.requests("per_prompt").at(-2).params);
    key("head_out_pos", "Escape");
    expect(model.get("selected")).toEqual({ component: null, layer: null, head: null, position: null });
    expect(root.dataset.selected).toBe("");
  });

  test("a mouse click on a cell selects it (placed by the heatmap's data-origin/cell attributes)", async () => {
    const model = makeModel();
    const { heatmap } = mount(model);
    const target = heatmap("resid_pre");
    Object.defineProperty(target, "clientWidth", { configurable: true, get: () => 400 });
    Object.defineProperty(target, "clientHeight", { configurable: true, get: () => 200 });
    answer(model, "results", resultsReply(1));
    await tick();
    const d = target.dataset;
    const w = Number(d.cellWidth);
    expect(w).toBeGreaterThan(2);
    const rect = target.getBoundingClientRect();
    const at = (row: number, col: number) => ({
      clientX: rect.left + Number(d.originX) + (col + 0.5) * w,
      clientY: rect.top + Number(d.originY) + (row + 0.5) * Number(d.cellHeight),
    });
    target.dispatchEvent(new MouseEvent("click", { bubbles: true, ...at(1, 2) }));
    expect(model.get("selected")).toEqual({ component: "resid_pre", layer: 1, head: null, position: 2 });
    expect(model.requests("per_prompt").at(-1).params).toEqual({
      component: "resid_pre",
      layer: 1,
      head: null,
      position: 2,
    });
  });

  test("the per-prompt panel shows prompt labels as text, values and the estimate", async () => {
    const model = makeModel();
    const { q, el, key } = mount(model);
    answer(model, "results", resultsReply(1));
    await tick();
    key("resid_pre", "ArrowDown", "ArrowRight", "ArrowRight", "Enter");
    expect(q("per-prompt").textContent).toContain("Loading");
    answer(model, "per_prompt", perPromptReply(1, [0.5, NaN, -0.25], ["John and Mary", EVIL, "x\ny"], [0.4, 0.2, 0.1]));
    await tick();
    const panel = q("per-prompt");
    expect(panel.dataset.selected).toBe("resid_pre:0::2");
    expect(panel.dataset.count).toBe("3");
    expect(q("per-prompt-title").textContent).toBe(
      "Residual stream · L0 pos 2: effect per prompt (0 = corrupted, 1 = clean)",
    );
    const labels = [...el.querySelectorAll<HTMLElement>("[data-testid=per-prompt-label]")];
    expect(labels.map((l) => l.textContent)).toEqual(["John and Mary", EVIL, "x\ny"]);
    expect(el.querySelector("img")).toBeNull(); // a token that looks like HTML stays text
    const rows = [...el.querySelectorAll<HTMLElement>("[data-testid=per-prompt-row]")];
    expect(rows.map((r) => r.dataset.value)).toEqual(["0.5", "", "-0.25"]);
    expect(Number(rows[0].dataset.attribution)).toBeCloseTo(0.4, 6);
    expect(rows[2].querySelector(".miw-patch-bar-value")!.textContent).toBe("−0.25 · attr 0.10");
    expect(rows[1].querySelector<HTMLElement>(".miw-patch-bar-fill")!.hidden).toBe(true);

    model.set("selected", { component: null, layer: null, head: null, position: null });
    expect(q("per-prompt").textContent).toContain("Select a cell");
  });

  test("attribution mode: the estimate beside each heatmap, r and the top disagreements", async () => {
    const model = makeModel({ method: "attribution" });
    const { q, el, heatmap } = mount(model);
    expect(heatmap("head_out", "attribution-heatmap")).not.toBeNull();
    expect(el.querySelectorAll("[data-testid=attribution-heatmap]")).toHaveLength(COMPONENTS.length);
    const agreement = {
      head_out: {
        correlation: 0.934,
        disagree: [
          { layer: 1, head: 2, position: null, exact: 0.41, attribution: 0.05 },
          { layer: 0, head: 0, position: null, exact: -0.1, attribution: 0.3 },
        ],
      },
    };
    answer(model, "results", resultsReply(1, { attribution: true, agreement }));
    await tick();
    const panel = el.querySelector("[data-testid=patching-panel][data-component=head_out]")!;
    expect(panel.querySelector("[data-testid=agreement]")!.textContent).toBe("attribution vs exact: r = 0.93");
    expect([...panel.querySelectorAll("[data-testid=disagree] li")].map((li) => li.textContent)).toEqual([
      "L1H2: exact 0.41, attribution 0.05",
      "L0H0: exact −0.10, attribution 0.30",
    ]);
    const other = el.querySelector("[data-testid=patching-panel][data-component=resid_pre]")!;
    expect(other.querySelector("[data-testid=agreement]")!.textContent).toContain("not known yet");
    expect(q("metric").textContent).toContain("attribution patching");
  });

  test("errors: a failed request and the error trait show in the banner", async () => {
    const model = makeModel();
    const { q } = mount(model);
    model.replyError(model.requests("results")[0].id, "RuntimeError", "no clean prompts");
    await tick();
    expect(q("error").textContent).toContain("no clean prompts");
    expect(q("error").parentElement!.hidden).toBe(false);
    model.set("error", "CUDA out of memory");
    expect(q("error").textContent).toContain("CUDA out of memory");
  });

  test("a malformed reply shows in the banner; cleanup removes everything", async () => {
    const model = makeModel();
    const { q, el, cleanup } = mount(model);
    answer(model, "results", { result: { revision: 1, names: ["resid_pre"], values: {} } });
    await tick();
    expect(q("error").textContent).toContain('results has no values for "resid_pre"');
    (cleanup as () => void)();
    expect(el.children).toHaveLength(0);
    expect(model.listenerCount()).toBe(0);
  });

  test("a 1024-position prompt draws in one canvas heatmap per component", async () => {
    const seq = 1024;
    const tokens = Array.from({ length: seq }, (_, i) => `t${i}`);
    const info: ComponentInfo = { ...RESID, n_cols: seq, n_rows: 12 };
    const model = makeModel({ tokens, components: [info], n_layers: 12 });
    const { root, heatmap } = mount(model);
    const values = Array.from({ length: 12 * seq }, (_, i) => (i % 7 === 0 ? NaN : Math.sin(i)));
    const { header, buffer } = encodeArray(values, [12, seq], "float32");
    answer(model, "results", {
      result: { revision: 1, names: ["resid_pre"], values: { resid_pre: header } },
      buffers: [buffer],
    });
    await tick();
    expect(root.dataset.filled).toBe(String(values.filter((v) => Number.isFinite(v)).length));
    expect(heatmap("resid_pre").querySelectorAll("*").length).toBeLessThan(5); // no DOM per cell
  });
});
