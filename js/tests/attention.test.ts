import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { LINE_CHARS, TOKEN_CHARS } from "../src/lib/text";
import widget from "../src/views/attention";
import { FakeModel, mountView } from "./helpers";

const SEQ = 3;

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_layers: 2,
    n_heads: 3,
    tokens: ["<img src=x onerror=alert(1)>", " cat", "\n"],
    prompt: "the cat",
    can_rerun: true,
    revision: 1,
    error: "",
    selected: { layer: 0, head: 0, query: null, key: null },
    ...attrs,
  });
}

function patternReply(revision: number, layer: number, head: number) {
  const values = [1, 0, 0, 0.25, 0.75, 0, NaN, 0.5, 0.5];
  const { header, buffer } = encodeArray(values, [SEQ, SEQ], "float16");
  return { result: { revision, layer, head, pattern: header }, buffers: [buffer] };
}

function overviewReply(revision: number) {
  const size = 2;
  const values = Array.from({ length: 2 * 3 * size * size }, (_, i) => (i % 5) / 4);
  const { header, buffer } = encodeArray(values, [2, 3, size, size], "uint8", { range: [0, 1] });
  return { result: { revision, n_layers: 2, n_heads: 3, seq: SEQ, size, thumbnails: header }, buffers: [buffer] };
}

const mount = (model: FakeModel) => mountView(widget, model, "attention-view");

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** Answer the latest request of `method` that is still open. */
function answer(model: FakeModel, method: string, reply: { result: unknown; buffers: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers);
  return req;
}

afterEach(() => document.body.replaceChildren());

describe("AttentionView", () => {
  test("renders, requests overview and pattern, paints the selected head", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    expect(root.dataset.state).toBe("loading");
    // No `revision` param: the kernel never reads one (the reply says which revision it is for).
    expect(model.requests("overview").map((r) => r.params)).toEqual([{}]);
    expect(model.requests("pattern").map((r) => r.params)).toEqual([{ layer: 0, head: 0 }]);
    for (const id of [
      "prompt-input",
      "run-button",
      "status",
      "progress",
      "error",
      "readout",
      "strip-mode",
      "head-grid",
      "pattern-heatmap",
      "token-strip",
    ]) {
      expect(q(id), id).not.toBeNull();
    }
    answer(model, "overview", overviewReply(1));
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("1:0:0");
    expect(root.dataset.state).toBe("ready");
    expect(root.dataset.revision).toBe("1");

    const tokens = [...q("token-strip").querySelectorAll("[data-testid=token]")];
    expect(tokens.map((t) => t.textContent)).toEqual(["<img src=x onerror=alert(1)>", " cat", "↵"]);
    expect(q("token-strip").querySelector("img")).toBeNull();
    const grid = q("head-grid");
    expect(Number(grid.dataset.cellWidth)).toBeGreaterThan(0);
    expect(grid.dataset.originX).toBeDefined();
  });

  test("drops results for a stale revision and refetches", async () => {
    const model = makeModel();
    const { root } = mount(model);
    answer(model, "overview", overviewReply(1));
    answer(model, "pattern", patternReply(0, 0, 0)); // computed for an older revision
    await tick();
    expect(root.dataset.painted).toBeUndefined();
    // No retry timers: the next revision change refetches (lib/resource.ts).
    await tick(80);
    expect(model.requests("pattern")).toHaveLength(1);
    model.set("revision", 2);
    const retry = model.requests("pattern");
    expect(retry).toHaveLength(2);
    answer(model, "pattern", patternReply(2, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("2:0:0");
  });

  test("a revision bump clears the old pattern and supersedes old requests", async () => {
    const model = makeModel();
    const { root } = mount(model);
    answer(model, "overview", overviewReply(1));
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick();
    model.attrs.tokens = ["a", "b", "c"];
    model.set("revision", 2);
    expect(root.dataset.painted).toBeUndefined();
    expect(root.dataset.revision).toBe("2");
    expect(model.requests("pattern").at(-1).params).toEqual({ layer: 0, head: 0 });
    expect(model.requests("overview").at(-1).params).toEqual({});
    answer(model, "pattern", patternReply(2, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("2:0:0");
  });

  test("head switching: keyboard on the grid updates selected and cancels older fetches", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick(); // drawn, so cached (a reply that lands after the user moved on is not kept)
    const grid = q("head-grid");
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    expect(model.attrs.selected).toEqual({ layer: 1, head: 1, query: null, key: null });
    expect(model.saves).toBe(2);
    const cancels = model.sent.filter((s) => s.content.type === "cancel").map((s) => s.content.id);
    const firstSwitch = model.requests("pattern")[1];
    expect(cancels).toContain(firstSwitch.id);
    answer(model, "pattern", patternReply(1, 1, 1));
    await tick();
    expect(root.dataset.painted).toBe("1:1:1");
    expect(root.dataset.layer).toBe("1");
    expect(root.dataset.head).toBe("1");
    // Python moves the selection: the view follows; a cached head repaints without a request.
    const before = model.requests("pattern").length;
    model.set("selected", { layer: 0, head: 0, query: null, key: null });
    expect(model.requests("pattern")).toHaveLength(before);
    expect(root.dataset.painted).toBe("1:0:0");
  });

  test("clicks lock and unlock; readout and strip follow", async () => {
    const model = makeModel();
    const { q } = mount(model);
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick();
    const tokens = [...q("token-strip").querySelectorAll<HTMLElement>("[data-testid=token]")];
    tokens[1].click();
    expect(model.attrs.selected).toEqual({ layer: 0, head: 0, query: 1, key: null });
    expect(q("readout").textContent).toContain('query 1 " cat"');
    expect(tokens[0].style.backgroundColor).not.toBe(""); // row 1 coloured onto the keys
    tokens[1].click();
    expect(model.attrs.selected.query).toBeNull();

    model.set("selected", { layer: 0, head: 0, query: 2, key: 0 });
    expect(q("readout").textContent).toBe('L0H0  query 2 "\\n" -> key 0 "<img src=x onerror=alert(1)>": NaN');
    q("strip-mode").click();
    expect(q("strip-mode").textContent).toBe("attended by");
  });

  test("hovering a 10,000-character token: the readout stays one short line, the whole token in its title", async () => {
    const long = "x".repeat(10_000);
    const model = makeModel({ tokens: ["a", long, "b"] });
    const { q } = mount(model);
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick();
    const readout = q("readout");
    expect(readout.classList.contains("miw-line")).toBe(true); // one line of fixed height (base.css)
    const tokens = [...q("token-strip").querySelectorAll<HTMLElement>("[data-testid=token]")];
    expect(tokens[1].textContent).toHaveLength(TOKEN_CHARS);
    tokens[1].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(readout.textContent).toBe(`L0H0  query 1 "${"x".repeat(TOKEN_CHARS - 1)}…"`);
    expect(readout.textContent!.length).toBeLessThanOrEqual(LINE_CHARS);
    expect(readout.title).toBe(`L0H0  query 1 "${long}"`);
    // A query and key both long: still short, both whole in the title.
    model.set("selected", { layer: 0, head: 0, query: 1, key: 1 });
    expect(readout.textContent).toBe(
      `L0H0  query 1 "${"x".repeat(TOKEN_CHARS - 1)}…" -> key 1 "${"x".repeat(TOKEN_CHARS - 1)}…": 0.750`,
    );
    expect(readout.title).toBe(`L0H0  query 1 "${long}" -> key 1 "${long}": 0.750`);
    tokens[1].dispatchEvent(new MouseEvent("mouseleave"));
    q("token-strip").dispatchEvent(new MouseEvent("mouseleave"));
    model.set("selected", { layer: 0, head: 0, query: null, key: null });
    expect(readout.textContent).toBe("L0H0  hover a cell or token; click to lock");
    expect(readout.title).toBe(readout.textContent);
  });

  test("run: progress, then the new revision is fetched; errors go to the banner", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    answer(model, "pattern", patternReply(1, 0, 0));
    answer(model, "overview", overviewReply(1));
    const input = q<HTMLTextAreaElement>("prompt-input");
    input.value = "a much longer prompt";
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    const run = model.requests("run").at(-1);
    expect(run.params).toEqual({ prompt: "a much longer prompt" });
    expect(root.dataset.state).toBe("running");
    model.emit("msg:custom", { type: "progress", id: run.id, done: 1, total: 2, label: "layer 1" }, []);
    expect(q("status").textContent).toContain("layer 1/2");
    expect(q<HTMLProgressElement>("progress").hidden).toBe(false);
    model.attrs.tokens = ["a", " much", " longer"];
    model.set("revision", 2);
    model.reply(run.id, { revision: 2, tokens: model.attrs.tokens, prompt: "a much longer prompt" });
    await tick();
    expect(q<HTMLProgressElement>("progress").hidden).toBe(true);
    answer(model, "overview", overviewReply(2));
    answer(model, "pattern", patternReply(2, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("2:0:0");
    expect(root.dataset.state).toBe("ready");

    q("run-button").click();
    model.replyError(
      model.requests("run").at(-1).id,
      "ValueError",
      "prompt is too long for the model's context (1024 tokens)",
    );
    await tick();
    expect(q("error").textContent).toContain("prompt is too long");
    expect(root.dataset.state).toBe("error");
    expect(root.dataset.painted).toBe("2:0:0"); // the old view stays

    model.set("error", "kernel-side problem");
    expect(q("error").textContent).toContain("kernel-side problem");
  });

  test("can_rerun=false hides the prompt box; cleanup removes everything", () => {
    const model = makeModel({ can_rerun: false });
    const { el, q, cleanup } = mount(model);
    expect(q("prompt-input").hidden).toBe(true);
    expect(q("run-button").hidden).toBe(true);
    expect(typeof cleanup).toBe("function");
    (cleanup as () => void)();
    expect(el.children).toHaveLength(0);
    expect(model.listenerCount()).toBe(0);
  });

  test("a broken reply never throws out of the view", async () => {
    const model = makeModel();
    const { q } = mount(model);
    const req = model.requests("pattern")[0];
    model.reply(req.id, { revision: 1, layer: 0, head: 0, pattern: { dtype: "float16", shape: [3, 3], buffer: 0 } }, [
      new ArrayBuffer(4),
    ]);
    await tick();
    expect(q("error").textContent).toContain("buffer holds 4 bytes");
  });
});

describe("AttentionView stale policy (lib/resource.ts)", () => {
  const cancelled = (model: FakeModel) =>
    model.sent.filter((s) => s.content.type === "cancel").map((s) => s.content.id);

  test("a reply for an old revision is never drawn; the revision change cancels and refetches both", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    const [overview1] = model.requests("overview");
    const [pattern1] = model.requests("pattern");
    model.attrs.tokens = ["x", "y", "z"];
    model.set("revision", 2); // a new prompt while both requests are out
    expect(cancelled(model)).toEqual(expect.arrayContaining([overview1.id, pattern1.id]));
    const overview2 = model.requests("overview").at(-1);
    const pattern2 = model.requests("pattern").at(-1);
    expect([overview2.id, pattern2.id]).not.toContain(overview1.id);
    expect(pattern2.id).not.toBe(pattern1.id);
    // The old tokens are gone at once.
    const strip = () => [...q("token-strip").querySelectorAll("[data-testid=token]")].map((t) => t.textContent);
    expect(strip()).toEqual(["x", "y", "z"]);
    // The first replies arrive anyway (they crossed the cancels): not drawn.
    model.reply(overview1.id, overviewReply(1).result, overviewReply(1).buffers);
    model.reply(pattern1.id, patternReply(1, 0, 0).result, patternReply(1, 0, 0).buffers);
    await tick();
    expect(root.dataset.painted).toBeUndefined();
    expect(root.dataset.state).toBe("loading");
    expect(root.dataset.loading).toBe("true");
    // Nor are replies to the new requests that were computed for the old revision (the kernel was behind).
    model.reply(pattern2.id, patternReply(1, 0, 0).result, patternReply(1, 0, 0).buffers);
    model.reply(overview2.id, overviewReply(1).result, overviewReply(1).buffers);
    await tick();
    expect(root.dataset.painted).toBeUndefined();
    expect(model.requests("pattern")).toHaveLength(2); // no retry timers
    // The current revision is drawn.
    model.set("revision", 3);
    answer(model, "overview", overviewReply(3));
    answer(model, "pattern", patternReply(3, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("3:0:0");
    expect(root.dataset.state).toBe("ready");
    expect(root.dataset.loading).toBeUndefined();
    expect(q("error").textContent).toBe("");
  });

  test("an echo of selected that keeps layer/head asks nothing; another head does", async () => {
    const model = makeModel();
    const { root } = mount(model);
    // In flight: folded into the request that is out.
    model.set("selected", { layer: 0, head: 0, query: 1, key: null });
    expect(model.requests("pattern")).toHaveLength(1);
    expect(cancelled(model)).toEqual([]);
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("1:0:0");
    // Drawn: nothing to ask.
    model.set("selected", { layer: 0, head: 0, query: 2, key: 1 });
    model.set("selected", { layer: 0, head: 0, query: null, key: null });
    expect(model.requests("pattern")).toHaveLength(1);
    model.set("selected", { layer: 1, head: 2, query: null, key: null });
    expect(model.requests("pattern").at(-1).params).toEqual({ layer: 1, head: 2 });
  });

  test("patterns are cached per revision; a revision change empties the cache", async () => {
    const model = makeModel();
    const { root } = mount(model);
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick();
    model.set("selected", { layer: 0, head: 1, query: null, key: null });
    answer(model, "pattern", patternReply(1, 0, 1));
    await tick();
    expect(root.dataset.painted).toBe("1:0:1");
    model.set("selected", { layer: 0, head: 0, query: null, key: null });
    expect(root.dataset.painted).toBe("1:0:0");
    expect(model.requests("pattern")).toHaveLength(2);
    model.set("revision", 2);
    expect(root.dataset.painted).toBeUndefined();
    answer(model, "pattern", patternReply(2, 0, 0));
    await tick();
    model.set("selected", { layer: 0, head: 1, query: null, key: null }); // cached for revision 1 only
    expect(model.requests("pattern")).toHaveLength(4);
    expect(root.dataset.painted).toBe("2:0:0");
  });

  test("a reply for a revision the view has not seen yet stays drawn when that revision arrives", async () => {
    const model = makeModel();
    const { root } = mount(model);
    answer(model, "overview", overviewReply(2)); // the kernel applied a new prompt; its trait is on the way
    answer(model, "pattern", patternReply(2, 0, 0));
    await tick();
    expect(root.dataset.painted).toBe("2:0:0");
    model.set("revision", 2);
    expect(root.dataset.painted).toBe("2:0:0");
    expect(model.requests("pattern")).toHaveLength(1);
    expect(model.requests("overview")).toHaveLength(1);
    expect(root.dataset.state).toBe("ready");
  });
});

describe("AttentionView runs and themes", () => {
  test("a newer run supersedes the older one; the view stays running until it ends", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    q("run-button").click();
    const first = model.requests("run")[0];
    q("run-button").click();
    const second = model.requests("run")[1];
    expect(model.sent.map((s) => s.content)).toContainEqual({ type: "cancel", id: first.id });
    await tick();
    expect(root.dataset.state).toBe("running");
    model.emit("msg:custom", { type: "progress", id: first.id, done: 2, total: 2, label: "" }, []); // ignored
    model.emit("msg:custom", { type: "progress", id: second.id, done: 1, total: 2, label: "" }, []);
    expect(q("status").textContent).toContain("layer 1/2");
    model.reply(second.id, { revision: 1, tokens: [], prompt: "" });
    await tick();
    expect(root.dataset.state).not.toBe("running");
  });

  test("Escape in the heatmap unlocks; the theme follows JupyterLab", async () => {
    const model = makeModel({ selected: { layer: 0, head: 0, query: 1, key: 0 } });
    const { q } = mount(model);
    answer(model, "pattern", patternReply(1, 0, 0));
    await tick();
    const saves = model.saves;
    q("pattern-heatmap").dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(model.attrs.selected).toEqual({ layer: 0, head: 0, query: null, key: null });
    q("pattern-heatmap").dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(model.saves).toBe(saves + 1); // nothing locked: no redundant write

    const token = q("token-strip").querySelector<HTMLElement>("[data-index='0']")!;
    token.click(); // lock query 0 so the strip is coloured
    const lightBg = token.style.backgroundColor;
    document.body.setAttribute("data-jp-theme-light", "false");
    await tick(20);
    expect(token.style.backgroundColor).not.toBe(lightBg);
    document.body.removeAttribute("data-jp-theme-light");
  });
});
