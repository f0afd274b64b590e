import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { TOKEN_CHARS } from "../src/lib/text";
import widget, { cellTop, cellValues, decodeLens, percent } from "../src/views/logit_lens";
import { FakeModel, mountView } from "./helpers";

const ROWS = 3;
const SEQ = 3;
const K = 2;
const VOCAB_IDS = [10, 11, 12, 20];
const VOCAB = ["a", "b\n", "c", " d"];

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_layers: 2,
    rows: ["embed", "L0 out", "L1 out"],
    tokens: ["<bos>", "The", " cat"],
    prompt: "The cat",
    k: K,
    target: null,
    target_id: null,
    target_token: "",
    revision: 1,
    selected: { layer: null, position: null },
    ...attrs,
  });
}

/** Cell i (row-major) predicts id 10 + i % 3 with p = 0.5 + i / 20, then id 20 with 0.1; the target ' d' has p = i / 10, rank i + 1. */
function lensReply(revision = 1, target = false) {
  const n = ROWS * SEQ;
  const ids: number[] = [];
  const probs: number[] = [];
  for (let i = 0; i < n; i++) {
    ids.push(10 + (i % 3), 20);
    probs.push(0.5 + i / 20, 0.1);
  }
  const arrays: Array<[string, number[], number[], "int32" | "float16"]> = [
    ["top_ids", ids, [ROWS, SEQ, K], "int32"],
    ["top_probs", probs, [ROWS, SEQ, K], "float16"],
    ["vocab_ids", VOCAB_IDS, [VOCAB_IDS.length], "int32"],
  ];
  if (target) {
    arrays.push(["target_probs", Array.from({ length: n }, (_, i) => i / 10), [ROWS, SEQ], "float16"]);
    arrays.push(["target_ranks", Array.from({ length: n }, (_, i) => i + 1), [ROWS, SEQ], "int32"]);
  }
  const result: Record<string, unknown> = {
    revision,
    rows: ROWS,
    seq: SEQ,
    k: K,
    vocab: VOCAB,
    target_id: target ? 20 : null,
    target_token: target ? " d" : "",
    target_probs: null,
    target_ranks: null,
  };
  const buffers: ArrayBuffer[] = [];
  arrays.forEach(([name, values, shape, dtype], i) => {
    const { header, buffer } = encodeArray(values, shape, dtype, { bufferIndex: i });
    result[name] = header;
    buffers.push(buffer);
  });
  return { result, buffers };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function answer(model: FakeModel, method: string, reply: { result: any; buffers: ArrayBuffer[] }) {
  const req = model.requests(method).at(-1);
  model.reply(req.id, reply.result, reply.buffers);
  return req;
}

function mount(model: FakeModel) {
  const mounted = mountView(widget, model, "logit-lens");
  const key = (k: string, times = 1) => {
    for (let i = 0; i < times; i++)
      mounted.q("lens-heatmap").dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
  };
  const topTexts = () =>
    Array.from(mounted.el.querySelectorAll("[data-testid=readout-top] li")).map((li) => li.textContent);
  return { ...mounted, key, topTexts };
}

afterEach(() => document.body.replaceChildren());

describe("logit lens helpers", () => {
  test("decode a reply; colour by top-1 without a target, by the target's probability with one", () => {
    const plain = decodeLens({
      result: lensReply().result,
      buffers: lensReply().buffers.map((b) => new DataView(b)),
    });
    expect(plain.targetProbs).toBeNull();
    expect(cellTop(plain, 1, 2)).toEqual([
      { id: 12, token: "c", prob: expect.closeTo(0.5 + 5 / 20, 3) },
      { id: 20, token: " d", prob: expect.closeTo(0.1, 3) },
    ]);
    expect(Array.from(cellValues(plain)).map((v) => v.toFixed(2))).toEqual(
      Array.from({ length: 9 }, (_, i) => (0.5 + i / 20).toFixed(2)),
    );
    const r = lensReply(1, true);
    const withTarget = decodeLens({
      result: r.result,
      buffers: r.buffers.map((b) => new DataView(b)),
    });
    expect(withTarget.targetId).toBe(20);
    expect(cellValues(withTarget)[4]).toBeCloseTo(0.4, 3);
    expect(withTarget.targetRanks![8]).toBe(9);
  });

  test("decode refuses a wrong shape or a vocab that does not match its ids", () => {
    const r = lensReply();
    expect(() =>
      decodeLens({
        result: { ...r.result, seq: 4 },
        buffers: r.buffers.map((b) => new DataView(b)),
      }),
    ).toThrow("top_ids must have shape [3, 4, 2]");
    expect(() =>
      decodeLens({
        result: { ...r.result, vocab: ["a"] },
        buffers: r.buffers.map((b) => new DataView(b)),
      }),
    ).toThrow("one string per vocab id");
  });

  test("percent stays short and honest at both ends", () => {
    expect(percent(0.4123)).toBe("41.2%");
    expect(percent(0.0123)).toBe("1.2%");
    expect(percent(0.00031)).toBe("0.031%");
    expect(percent(1e-7)).toBe("<0.01%");
    expect(percent(0)).toBe("0%");
    expect(percent(NaN)).toBe("NaN");
  });
});

describe("LogitLens view", () => {
  test("fetches the lens, shows the top-1 scale, and reads out cells under the keyboard cursor", async () => {
    const model = makeModel();
    const { root, q, key, topTexts } = mount(model);
    for (const id of ["target-input", "target-button", "target-info", "scale", "readout", "error", "lens-heatmap"])
      expect(q(id), id).not.toBeNull();
    expect(model.requests("lens")).toHaveLength(1);
    expect(root.dataset.loading).toBe("true");
    answer(model, "lens", lensReply());
    await tick();
    expect(root.dataset.loading).toBeUndefined();
    expect(root.dataset.revision).toBe("1");
    expect(root.dataset.painted).toBe("1"); // the heatmap drew revision 1
    expect(q("scale").textContent).toBe("colour: top-1 probability 0 … 1");
    expect(q("target-info").textContent).toBe("no target");
    expect(q("readout").textContent).toContain("Hover a cell");
    key("ArrowDown"); // cursor at (0, 0)
    key("ArrowDown");
    key("ArrowRight", 2); // (1, 2): "L0 out", position 2
    expect(q("readout-head").textContent).toBe('L0 out · position 2 " cat" → next token:');
    expect(topTexts()).toEqual(["c75.0%", " d10.0%"]);
    expect(q("readout-target")).toBeNull();
    key("ArrowUp");
    expect(topTexts()[0]).toBe(`c${percent(0.5 + 2 / 20)}`); // cell 2 predicts id 12
    expect(q("lens-heatmap").dataset.cellWidth).toBeDefined();
  });

  test("Enter selects the cell in Python, Enter again and Escape clear it; Python selections show", async () => {
    const model = makeModel();
    const { root, key, q } = mount(model);
    answer(model, "lens", lensReply());
    await tick();
    key("ArrowDown", 3);
    key("ArrowRight");
    key("Enter");
    expect(model.get("selected")).toEqual({ layer: 2, position: 1 });
    expect(model.saves).toBe(1);
    expect(root.dataset.selected).toBe("2:1");
    key("Enter");
    expect(model.get("selected")).toEqual({ layer: null, position: null });
    model.set("selected", { layer: 0, position: 2 }); // from Python
    expect(root.dataset.selected).toBe("0:2");
    q("lens-heatmap").dispatchEvent(new MouseEvent("mouseleave"));
    expect(q("readout-head").textContent).toContain("embed · position 2");
    key("Escape");
    expect(model.get("selected")).toEqual({ layer: null, position: null });
    expect(root.dataset.selected).toBe("");
  });

  test("the target box asks the kernel, shows progress, and the new revision brings the target row", async () => {
    const model = makeModel();
    const { root, q, key } = mount(model);
    answer(model, "lens", lensReply());
    await tick();
    const input = q<HTMLInputElement>("target-input");
    input.value = " d";
    const typed = new KeyboardEvent("keydown", { key: "Enter", bubbles: true });
    let leaked = false;
    document.body.addEventListener("keydown", () => (leaked = true), { once: true });
    input.dispatchEvent(typed);
    expect(leaked).toBe(false); // notebook shortcuts never see typing in the box
    const req = model.requests("target").at(-1);
    expect(req.params).toEqual({ target: " d" });
    expect(root.dataset.targeting).toBe("true");
    model.emit("msg:custom", { type: "progress", id: req.id, done: 2, total: 3, label: "layer 2/3" }, []);
    expect(q<HTMLProgressElement>("progress").value).toBe(2);
    expect(q("progress").hidden).toBe(false);
    model.reply(req.id, { revision: 2, target_id: 20, target_token: " d" });
    model.set("target", " d");
    model.set("target_token", " d");
    model.set("revision", 2);
    await tick();
    expect(q("progress").hidden).toBe(true);
    expect(root.dataset.targeting).toBeUndefined();
    answer(model, "lens", lensReply(2, true));
    await tick();
    expect(root.dataset.revision).toBe("2");
    expect(root.dataset.target).toBe(" d");
    expect(q("scale").textContent).toBe('colour: P(" d") 0 … 1');
    expect(q("target-info").textContent).toBe('target " d" (id 20)');
    key("ArrowDown", 2);
    key("ArrowRight"); // (1, 1) = cell 4
    expect(q("readout-target").textContent).toBe('target " d": 40.0% (rank 5)');
  });

  test("a bad target shows the kernel's message in the banner and the view keeps working", async () => {
    const model = makeModel();
    const { q } = mount(model);
    answer(model, "lens", lensReply());
    await tick();
    q<HTMLInputElement>("target-input").value = " Mary";
    q("target-button").click();
    const req = model.requests("target").at(-1);
    model.replyError(
      req.id,
      "ValueError",
      "target ' Mary' tokenizes to 2 tokens [' M', 'ary']: expected exactly one token",
    );
    await tick();
    expect(q("error").textContent).toContain("tokenizes to 2 tokens [' M', 'ary']");
    expect(q("progress").hidden).toBe(true);
    q("target-button").click();
    expect(model.requests("target")).toHaveLength(2);
  });

  test("token strings reach the page as text only, and replies for an older revision are dropped", async () => {
    const model = makeModel({ tokens: ["<img src=x onerror=alert(1)>", "b", "c"], revision: 3 });
    const { el, q, root, key } = mount(model);
    answer(model, "lens", lensReply(2)); // stale: computed before revision 3
    await tick();
    expect(root.dataset.revision).toBeUndefined();
    model.set("revision", 3);
    answer(model, "lens", lensReply(3));
    await tick();
    key("ArrowDown");
    expect(q("readout-head").textContent).toContain('"<img src=x onerror=alert(1)>"');
    expect(el.querySelector("img")).toBeNull();
    expect(Array.from(el.querySelectorAll("[data-testid=readout-top] li span")).map((s) => s.textContent)).toContain(
      "a",
    );
  });

  test("a revision change cancels the lens request in flight; a reply for an old revision is never drawn", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    const first = model.requests("lens").at(-1);
    model.set("revision", 2); // a new target was applied while the first lens was out
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === first.id)).toBe(true);
    const second = model.requests("lens").at(-1);
    expect(second.id).not.toBe(first.id);
    const old = lensReply(1);
    model.reply(first.id, old.result, old.buffers); // crossed the cancel: not drawn
    await tick();
    expect(root.dataset.revision).toBeUndefined();
    expect(root.dataset.loading).toBe("true");
    model.reply(second.id, old.result, old.buffers); // the kernel answered for revision 1 still: not drawn
    await tick();
    expect(root.dataset.revision).toBeUndefined();
    expect(q("target-info").textContent).toBe("");
    model.set("revision", 3);
    answer(model, "lens", lensReply(3, true));
    await tick();
    expect(root.dataset.revision).toBe("3");
    expect(root.dataset.loading).toBeUndefined();
    expect(q("target-info").textContent).toBe('target " d" (id 20)');
    answer(model, "lens", lensReply(2)); // a late reply older than what is drawn changes nothing
    await tick();
    expect(root.dataset.revision).toBe("3");
    expect(root.dataset.painted).toBe("3");
  });

  test("a newer target supersedes an older one: only the newest one's progress and outcome show", async () => {
    const model = makeModel();
    const { root, q } = mount(model);
    answer(model, "lens", lensReply());
    await tick();
    const input = q<HTMLInputElement>("target-input");
    input.value = " Mary";
    q("target-button").click();
    const older = model.requests("target").at(-1);
    input.value = " d";
    q("target-button").click();
    const newer = model.requests("target").at(-1);
    expect(newer.params).toEqual({ target: " d" });
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === older.id)).toBe(true);
    await tick();
    expect(root.dataset.targeting).toBe("true"); // the older one ending does not hide the newer one's progress
    expect(q("progress").hidden).toBe(false);
    model.emit("msg:custom", { type: "progress", id: older.id, done: 3, total: 3, label: "layer 3/3" }, []);
    model.replyError(older.id, "ValueError", "target ' Mary' tokenizes to 2 tokens");
    await tick();
    expect(q("error").textContent).toBe(""); // superseded: never shown
    expect(q<HTMLProgressElement>("progress").hasAttribute("value")).toBe(false);
    model.emit("msg:custom", { type: "progress", id: newer.id, done: 1, total: 3, label: "layer 1/3" }, []);
    expect(q<HTMLProgressElement>("progress").value).toBe(1);
    model.reply(newer.id, { revision: 2, target_id: 20, target_token: " d" });
    await tick();
    expect(q("progress").hidden).toBe(true);
    expect(root.dataset.targeting).toBeUndefined();
  });

  test("very long tokens: the readout keeps three short lines, whole tokens in titles", async () => {
    const long = "z".repeat(10_000);
    const model = makeModel({ tokens: ["<bos>", "The", long] });
    const { q, key, el } = mount(model);
    const reply = lensReply();
    reply.result.vocab = ["a", long, "c", " d"]; // id 11 is predicted at cell 1, 4, 7
    answer(model, "lens", reply);
    await tick();
    key("ArrowDown");
    key("ArrowRight", 2); // (0, 2): "embed", position 2 = the long token; cell 2 predicts id 12
    const head = q("readout-head");
    expect(head.classList.contains("miw-line")).toBe(true);
    expect(head.textContent).toBe(`embed · position 2 "${"z".repeat(TOKEN_CHARS - 1)}…" → next token:`);
    expect(head.title).toBe(`embed · position 2 "${long}" → next token:`);
    key("ArrowLeft"); // (0, 1) predicts the long token
    const shown = Array.from(el.querySelectorAll<HTMLElement>("[data-testid=readout-top] .miw-lens-token"));
    expect(shown[0].textContent).toBe(`${"z".repeat(TOKEN_CHARS - 1)}…`);
    expect(shown[0].title).toBe(`${JSON.stringify(long)} · id 11`);
  });

  test("dispose removes the view and its listeners", () => {
    const model = makeModel();
    const { cleanup, el } = mount(model);
    expect(model.listenerCount()).toBeGreaterThan(0);
    cleanup();
    expect(el.querySelector("[data-testid=logit-lens]")).toBeNull();
    expect(model.listenerCount()).toBe(0);
  });
});
