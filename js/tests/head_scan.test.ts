import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import widget from "../src/views/head_scan";
import { FakeModel, mountView } from "./helpers";

const NAMES = ["previous_token", "duplicate_token", "induction"];
const L = 2;
const H = 3;

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_layers: L,
    n_heads: H,
    score_names: NAMES,
    status: "idle",
    progress: { done: 0, total: 0 },
    error: "",
    revision: 0,
    selected: { score: "induction", layer: null, head: null },
    ...attrs,
  });
}

/** Scores where value = (score*100 + layer*10 + head) / 1000, NaN from `nanFrom` (flat index per score) on. */
function scoresReply(revision: number, nanFrom = L * H) {
  const values: number[] = [];
  for (let k = 0; k < NAMES.length; k++) {
    for (let i = 0; i < L * H; i++)
      values.push(i >= nanFrom ? NaN : (k * 100 + Math.floor(i / H) * 10 + (i % H)) / 1000);
  }
  const { header, buffer } = encodeArray(values, [NAMES.length, L, H], "float32");
  return { result: { revision, names: NAMES, scores: header }, buffers: [buffer] };
}

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "head-scan");
  const { el } = mounted;
  const cell = (score: string, layer: number, head: number) =>
    el.querySelector<HTMLButtonElement>(
      `[data-testid=score-heatmap][data-score=${score}] [data-testid=score-cell][data-layer='${layer}'][data-head='${head}']`,
    )!;
  return { ...mounted, cell };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, method: string, reply: { result: unknown; buffers?: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers ?? []);
  return req;
}

afterEach(() => document.body.replaceChildren());

describe("HeadScan", () => {
  test("renders one titled heatmap per score and draws the fetched values", async () => {
    const model = makeModel();
    const { root, q, cell, el } = mount(model);
    expect(root.dataset.status).toBe("idle");
    for (const id of ["start-button", "stop-button", "progress", "status", "error"]) expect(q(id), id).not.toBeNull();
    const maps = [...el.querySelectorAll<HTMLElement>("[data-testid=score-heatmap]")];
    expect(maps.map((m) => m.dataset.score)).toEqual(NAMES);
    expect(maps.every((m) => m.tabIndex === 0)).toBe(true);
    expect([...el.querySelectorAll(".miw-scan-title")].map((t) => t.textContent)).toEqual([
      "previous token",
      "duplicate token",
      "induction",
    ]);
    expect(el.querySelectorAll("[data-testid=score-cell]")).toHaveLength(NAMES.length * L * H);
    expect(cell("induction", 1, 2).dataset.value).toBe(""); // nothing known yet

    expect(model.requests("scores").map((r) => r.params)).toEqual([{}]);
    answer(model, "scores", scoresReply(1));
    await tick();
    expect(root.dataset.revision).toBe("1");
    const c = cell("induction", 1, 2);
    expect(Number(c.dataset.value)).toBeCloseTo(0.212, 6);
    expect(c.textContent).toBe("0.21");
    expect(c.style.background).not.toBe("");
    expect(c.classList.contains("miw-scan-nan")).toBe(false);
    expect(q("error").textContent).toBe("");
  });

  test("NaN cells are marked as not scored yet", async () => {
    const model = makeModel();
    const { cell } = mount(model);
    answer(model, "scores", scoresReply(1, 4)); // layer 1, heads 1-2 unknown
    await tick();
    const known = cell("duplicate_token", 1, 0);
    const unknown = cell("duplicate_token", 1, 1);
    expect(Number(known.dataset.value)).toBeCloseTo(0.11, 6);
    expect(unknown.dataset.value).toBe("");
    expect(unknown.textContent).toBe("");
    expect(unknown.classList.contains("miw-scan-nan")).toBe(true);
    expect(unknown.title).toContain("not scored yet");
  });

  test("refetches on revision change and drops stale results", async () => {
    const model = makeModel();
    const { root, cell } = mount(model);
    answer(model, "scores", scoresReply(2, 2));
    await tick();
    expect(root.dataset.revision).toBe("2");

    model.set("revision", 3);
    expect(model.requests("scores")).toHaveLength(2);
    answer(model, "scores", scoresReply(1)); // older than what is drawn: dropped
    await tick();
    expect(root.dataset.revision).toBe("2");
    expect(cell("induction", 0, 2).dataset.value).toBe("");

    model.set("revision", 4);
    answer(model, "scores", scoresReply(4));
    await tick();
    expect(root.dataset.revision).toBe("4");
    expect(Number(cell("induction", 0, 2).dataset.value)).toBeCloseTo(0.202, 6);
  });

  test("revision bumps during a fetch fold into one refetch", async () => {
    const model = makeModel();
    const { root } = mount(model);
    model.set("revision", 1);
    model.set("revision", 2);
    expect(model.requests("scores")).toHaveLength(1);
    answer(model, "scores", scoresReply(0));
    await tick();
    expect(model.requests("scores")).toHaveLength(2);
    answer(model, "scores", scoresReply(2));
    await tick();
    expect(model.requests("scores")).toHaveLength(2);
    expect(root.dataset.revision).toBe("2");
  });

  test("clicking a cell writes selected and outlines it; Python's selection is followed", async () => {
    const model = makeModel();
    const { cell } = mount(model);
    answer(model, "scores", scoresReply(1));
    await tick();
    cell("induction", 1, 2).click();
    expect(model.attrs.selected).toEqual({ score: "induction", layer: 1, head: 2 });
    expect(model.saves).toBe(1);
    expect(cell("induction", 1, 2).classList.contains("miw-scan-selected")).toBe(true);
    expect(cell("previous_token", 1, 2).classList.contains("miw-scan-selected")).toBe(false);

    model.set("selected", { score: "previous_token", layer: 0, head: 1 });
    expect(cell("induction", 1, 2).classList.contains("miw-scan-selected")).toBe(false);
    expect(cell("previous_token", 0, 1).classList.contains("miw-scan-selected")).toBe(true);
  });

  test("keyboard: arrows move the cursor, Enter selects", () => {
    const model = makeModel({ selected: { score: "induction", layer: 0, head: 0 } });
    const { el, cell } = mount(model);
    const grid = el.querySelector<HTMLElement>("[data-testid=score-heatmap][data-score=induction]")!;
    const key = (k: string) =>
      grid.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));
    key("ArrowDown");
    key("ArrowRight");
    key("ArrowRight");
    key("ArrowRight"); // clamped at the last head
    key("ArrowDown"); // clamped at the last layer
    expect(model.saves).toBe(0);
    expect(cell("induction", 1, 2).classList.contains("miw-scan-cursor")).toBe(true);
    key("Enter");
    expect(model.attrs.selected).toEqual({ score: "induction", layer: 1, head: 2 });
    expect(model.saves).toBe(1);
  });

  test("in an HTML export (can_start: false) Start and Stop are hidden", () => {
    const model = makeModel({ can_start: false, status: "done" });
    const { q } = mount(model);
    expect(q<HTMLButtonElement>("start-button").hidden).toBe(true);
    expect(q<HTMLButtonElement>("stop-button").hidden).toBe(true);
  });

  test("Start/Stop follow status; Stop sends a stop request; status text and progress", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    const start = q<HTMLButtonElement>("start-button");
    const stop = q<HTMLButtonElement>("stop-button");
    expect(stop.disabled).toBe(true);
    expect(start.disabled).toBe(false);
    expect(start.hidden || stop.hidden).toBe(false);

    start.click();
    expect(model.requests("start")).toHaveLength(1);
    answer(model, "start", { result: {} });
    await tick();
    model.attrs.progress = { done: 3, total: 8 };
    model.set("status", "running");
    expect(root.dataset.status).toBe("running");
    expect(root.dataset.done).toBe("3");
    expect(start.disabled).toBe(true);
    expect(stop.disabled).toBe(false);
    expect(q("status").textContent).toBe("running: batch 3/8");
    expect(q<HTMLProgressElement>("progress").value).toBe(3);
    expect(q<HTMLProgressElement>("progress").max).toBe(8);

    stop.click();
    expect(model.requests("stop").map((r) => r.params)).toEqual([{}]);
    expect(stop.disabled).toBe(true); // until it is answered
    answer(model, "stop", { result: {} });
    model.set("status", "stopped");
    await tick();
    expect(stop.disabled).toBe(true);
    expect(start.disabled).toBe(false);
    expect(q("status").textContent).toBe("stopped after 3/8 batches");

    model.set("progress", { done: 8, total: 8 });
    model.set("status", "done");
    expect(q("status").textContent).toBe("done: 8 batches");
    expect(root.dataset.done).toBe("8");
  });

  test("errors: the error trait and failed requests go to the banner", async () => {
    const model = makeModel();
    const { q } = mount(model);
    model.replyError(model.requests("scores")[0].id, "RuntimeError", "no scan yet");
    await tick();
    expect(q("error").textContent).toContain("no scan yet");
    model.set("error", "CUDA out of memory");
    expect(q("error").textContent).toContain("CUDA out of memory");
    expect(q("error").parentElement!.hidden).toBe(false);

    q<HTMLButtonElement>("start-button").click();
    model.replyError(model.requests("start")[0].id, "RuntimeError", "already running");
    await tick();
    expect(q("error").textContent).toContain("already running");
    expect(q<HTMLButtonElement>("start-button").disabled).toBe(false);
  });

  test("a broken reply never throws out of the view; cleanup removes everything", async () => {
    const model = makeModel();
    const { el, q, cleanup } = mount(model);
    const req = model.requests("scores")[0];
    model.reply(req.id, { revision: 1, names: NAMES, scores: { dtype: "float32", shape: [3, 2, 3], buffer: 0 } }, [
      new ArrayBuffer(4),
    ]);
    await tick();
    expect(q("error").textContent).toContain("buffer holds 4 bytes");
    (cleanup as () => void)();
    expect(el.children).toHaveLength(0);
    expect(model.listenerCount()).toBe(0);
  });

  test("a 12x12 model with 3 scores stays a plain DOM grid; theme changes recolour", async () => {
    const model = makeModel({ n_layers: 12, n_heads: 12 });
    const { el } = mount(model);
    expect(el.querySelectorAll("[data-testid=score-cell]")).toHaveLength(3 * 144);
    const values = Array.from({ length: 3 * 144 }, (_, i) => (i % 10) / 10);
    const { header, buffer } = encodeArray(values, [3, 12, 12], "float32");
    answer(model, "scores", { result: { revision: 1, names: NAMES, scores: header }, buffers: [buffer] });
    await tick();
    const c = el.querySelector<HTMLElement>("[data-score=induction] [data-layer='0'][data-head='9']")!;
    const light = c.style.background;
    document.body.setAttribute("data-jp-theme-light", "false");
    await tick(20);
    expect(c.style.background).not.toBe(light);
    document.body.removeAttribute("data-jp-theme-light");
  });
});
