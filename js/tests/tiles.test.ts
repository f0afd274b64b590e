import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { sequentialColormap } from "../src/lib/colormap";
import { CanvasHeatmap, HELD_TILES, type Tile, tileLevel, tilesCovering } from "../src/lib/heatmap";
import { LruCache, tileLevels, tilesPerSide } from "../src/lib/tiles";
import widget, { EXACT_MAX_SEQ, TILE } from "../src/views/attention";
import { FakeModel, mountView } from "./helpers";

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe("tile levels", () => {
  test("levels run from full resolution to the first with one tile (Python: tile_levels)", () => {
    expect([1, 512, 513, 1024, 1025, 4096].map((n) => tileLevels(n, 512))).toEqual([1, 1, 2, 2, 3, 4]);
    expect(tilesPerSide(1100, 512, 0)).toBe(3);
    expect(tilesPerSide(1100, 512, 1)).toBe(2);
    expect(tilesPerSide(1100, 512, 2)).toBe(1);
  });

  test("the zoom picks the coarsest level whose pooled cells still cover a device pixel", () => {
    expect(tileLevel(2, 1, 3)).toBe(0);
    expect(tileLevel(1, 1, 3)).toBe(0);
    expect(tileLevel(0.5, 1, 3)).toBe(1);
    expect(tileLevel(0.5, 2, 3)).toBe(0); // a 2x screen: half a CSS px is one device pixel
    expect(tileLevel(0.68, 1, 3)).toBe(1); // 1024 tokens fitted in ~700 px
    expect(tileLevel(0.17, 1, 3)).toBe(3); // 4096 tokens fitted in ~700 px: the overview
    expect(tileLevel(0.01, 1, 3)).toBe(3); // never past the top
  });

  test("tiles covering a visible range", () => {
    expect(tilesCovering(0, 512, [0, 10], [0, 10])).toEqual([{ row: 0, col: 0 }]);
    expect(tilesCovering(0, 512, [500, 600], [1000, 1030])).toEqual([
      { row: 0, col: 1 },
      { row: 0, col: 2 },
      { row: 1, col: 1 },
      { row: 1, col: 2 },
    ]);
    expect(tilesCovering(1, 512, [0, 1100], [0, 1100])).toEqual([
      { row: 0, col: 0 },
      { row: 0, col: 1 },
      { row: 1, col: 0 },
      { row: 1, col: 1 },
    ]);
    expect(tilesCovering(0, 512, [5, 5], [0, 10])).toEqual([]);
  });

  test("the LRU cache keeps what was used last and prunes by key", () => {
    const cache = new LruCache<number>(2);
    cache.set("1:a", 1);
    cache.set("1:b", 2);
    expect(cache.get("1:a")).toBe(1); // a is now the newest
    cache.set("2:c", 3);
    expect(cache.has("1:b")).toBe(false);
    expect(cache.has("1:a") && cache.has("2:c")).toBe(true);
    cache.prune((key) => key.startsWith("2:"));
    expect(cache.size).toBe(1);
  });
});

describe("CanvasHeatmap tiled mode", () => {
  const tile = (level: number, row: number, col: number, fill: number, n = 4): Tile => ({
    level,
    row,
    col,
    height: n,
    width: n,
    values: Float32Array.from({ length: n * n }, (_, i) => fill + i / 100),
  });

  test("holds at most HELD_TILES tiles, least recently put first out, never the top one", () => {
    const heatmap = new CanvasHeatmap(sequentialColormap("light"));
    heatmap.setTiled(4096, 4096, { tile: 4, levels: 11 }, "h");
    heatmap.putTile(tile(10, 0, 0, 0.5));
    for (let i = 0; i < HELD_TILES + 10; i++) heatmap.putTile(tile(0, 0, i, 0.1));
    const held = heatmap.heldTiles();
    expect(held).toHaveLength(HELD_TILES);
    expect(held).toContain("10:0:0");
    expect(held).not.toContain("0:0:0");
    expect(held).toContain(`0:0:${HELD_TILES + 9}`);
    heatmap.dispose();
  });

  test("tileValue reads the finest tile held at a cell", () => {
    const heatmap = new CanvasHeatmap(sequentialColormap("light"));
    heatmap.setTiled(16, 16, { tile: 4, levels: 3 }, "h"); // level 2: one 4x4 tile of 4x4 blocks
    expect(heatmap.tileValue(5, 6)).toBeNull();
    heatmap.putTile(tile(2, 0, 0, 0.5));
    expect(heatmap.tileValue(5, 6)).toEqual({ value: expect.closeTo(0.5 + 5 / 100), level: 2 }); // block (1, 1)
    heatmap.putTile(tile(0, 1, 1, 0.2)); // cells 4..7 x 4..7 at full resolution
    expect(heatmap.tileValue(5, 6)).toEqual({ value: expect.closeTo(0.2 + 6 / 100), level: 0 }); // (1, 2) in it
    heatmap.putTile({ level: 1, row: 0, col: 1, height: 4, width: 4, values: null }); // a zero tile
    expect(heatmap.tileValue(0, 9)).toEqual({ value: 0, level: 1 });
    expect(heatmap.tileValue(16, 0)).toBeNull();
    heatmap.dispose();
  });
});

const SEQ = 1100; // tiled: 3 levels, the overview is level 2 (275 x 275 cells)

function makeModel(attrs: Record<string, unknown> = {}): FakeModel {
  return new FakeModel({
    n_layers: 1,
    n_heads: 3,
    tokens: Array.from({ length: SEQ }, (_, i) => `t${i}`),
    prompt: "",
    can_rerun: false,
    revision: 1,
    error: "",
    selected: { layer: 0, head: 1, query: null, key: null },
    ...attrs,
  });
}

function tileReply(revision: number, head: number, level: number) {
  const n = Math.ceil(SEQ / 2 ** level);
  const values = Array.from({ length: n * n }, (_, i) => (i % 7) / 7);
  const { header, buffer } = encodeArray(values, [n, n], "uint8", { range: [0, 1] });
  return {
    result: { revision, layer: 0, head, level, row: 0, col: 0, size: n, tile: TILE, values: header },
    buffers: [buffer],
  };
}

afterEach(() => document.body.replaceChildren());

describe("AttentionView past EXACT_MAX_SEQ", () => {
  test("asks for the overview tile, not the pattern; paints it; prefetches the heads beside it", async () => {
    expect(SEQ).toBeGreaterThan(EXACT_MAX_SEQ);
    const model = makeModel();
    const { root } = mountView(widget, model, "attention-view");
    expect(model.requests("pattern")).toEqual([]);
    const asked = model.requests("tile");
    expect(asked.map((r) => r.params)).toEqual([{ layer: 0, head: 1, level: 2, row: 0, col: 0 }]);
    model.reply(asked[0].id, tileReply(1, 1, 2).result, tileReply(1, 1, 2).buffers);
    await tick();
    expect(root.dataset.painted).toBe("1:0:1");
    expect(
      model
        .requests("tile")
        .slice(1)
        .map((r) => r.params.head),
    ).toEqual([2, 0]);
    // A switch to a prefetched head paints without asking again.
    for (const r of model.requests("tile").slice(1)) {
      const reply = tileReply(1, r.params.head, 2);
      model.reply(r.id, reply.result, reply.buffers);
    }
    await tick();
    const before = model.requests("tile").length;
    model.set("selected", { layer: 0, head: 2, query: null, key: null });
    expect(root.dataset.painted).toBe("1:0:2");
    expect(model.requests("tile").length).toBe(before); // and its neighbour (head 1) is cached already
  });

  test("fetches the rest of the layer ahead, nearest first, two at a time; a click is not queued behind", async () => {
    const model = makeModel({ n_heads: 6 });
    mountView(widget, model, "attention-view");
    const reply = (r: { id: string; params: Record<string, any> }) => {
      const t = tileReply(1, r.params.head, 2);
      model.reply(r.id, t.result, t.buffers);
    };
    reply(model.requests("tile")[0]);
    await tick();
    const heads = () => model.requests("tile").map((r) => r.params.head);
    expect(heads()).toEqual([1, 2, 0]); // two out at once
    reply(model.requests("tile")[1]);
    await tick();
    expect(heads()).toEqual([1, 2, 0, 3]);
    model.set("selected", { layer: 0, head: 5, query: null, key: null }); // not fetched: asked at once
    expect(heads()).toEqual([1, 2, 0, 3, 5]);
    for (const r of model.requests("tile").slice(2)) reply(r);
    await tick();
    // head 5 shown: its layer again from there (4 next; 0..3 are cached)
    expect(heads().slice(5)).toEqual([4]);
  });

  test("fetched ahead: the heads an arrow key reaches (beside, then above and below) before the rest", async () => {
    const model = makeModel({ n_layers: 3, n_heads: 4, selected: { layer: 1, head: 1, query: null, key: null } });
    mountView(widget, model, "attention-view");
    const asked = () => model.requests("tile").map((r) => [r.params.layer, r.params.head]);
    for (let i = 0; i < 4; i++) {
      const r = model.requests("tile")[i];
      const t = tileReply(1, r.params.head, 2);
      model.reply(r.id, { ...t.result, layer: r.params.layer }, t.buffers);
      await tick();
    }
    expect(asked()).toEqual([
      [1, 1],
      [1, 2],
      [1, 0],
      [2, 1],
      [0, 1],
      [1, 3],
    ]);
  });

  test("a tile for an old revision is never drawn; the new revision asks again", async () => {
    const model = makeModel();
    const { root } = mountView(widget, model, "attention-view");
    const first = model.requests("tile")[0];
    model.set("revision", 2);
    model.reply(first.id, tileReply(1, 1, 2).result, tileReply(1, 1, 2).buffers);
    await tick();
    expect(root.dataset.painted).toBeUndefined();
    const again = model.requests("tile").at(-1);
    expect(again.params).toEqual({ layer: 0, head: 1, level: 2, row: 0, col: 0 });
    model.reply(again.id, tileReply(2, 1, 2).result, tileReply(2, 1, 2).buffers);
    await tick();
    expect(root.dataset.painted).toBe("2:0:1");
  });

  test("an HTML export without lines: the readout reads the finest tile held, and asks no more lines", async () => {
    const model = makeModel({ selected: { layer: 0, head: 1, query: 700, key: 3 } });
    const { q } = mountView(widget, model, "attention-view");
    const overview = tileReply(1, 1, 2);
    model.reply(model.requests("tile")[0].id, overview.result, overview.buffers);
    model.replyError(model.requests("line")[0].id, "NotExported", "not in this export: line");
    await tick();
    expect(q("error").textContent).toBe("");
    // cell (700, 3) is cell (175, 0) of the level-2 overview: value index 175 * 275 = 48125, (48125 % 7) / 7
    const expected = ((175 * 275) % 7) / 7;
    expect(q("readout").textContent).toMatch(/: ≈0\.\d+ \(the extreme of its 4×4 block/);
    const shown = Number(/≈([\d.]+)/.exec(q("readout").textContent ?? "")![1]);
    expect(Math.abs(shown - expected)).toBeLessThan(0.01);
    const asked = model.requests("line").length;
    model.set("selected", { layer: 0, head: 1, query: 701, key: 3 });
    expect(model.requests("line").length).toBe(asked);
  });

  test("the readout shows the exact value from a line request", async () => {
    const model = makeModel({ selected: { layer: 0, head: 1, query: 700, key: 3 } });
    const { q } = mountView(widget, model, "attention-view");
    const line = model.requests("line");
    expect(line.map((r) => r.params)).toEqual([{ layer: 0, head: 1, axis: "query", index: 700 }]);
    expect(q("readout").textContent).toContain(": …");
    const values = Array.from({ length: SEQ }, (_, i) => (i === 3 ? 0.125 : 0));
    const { header, buffer } = encodeArray(values, [SEQ], "float16");
    model.reply(line[0].id, { revision: 1, layer: 0, head: 1, axis: "query", index: 700, values: header }, [buffer]);
    await tick();
    expect(q("readout").textContent).toContain("query 700");
    expect(q("readout").textContent).toContain(": 0.125");
  });

  test("a finer tile missing from an HTML export is no error; a missing overview is", async () => {
    const model = makeModel();
    const { q } = mountView(widget, model, "attention-view");
    model.replyError(model.requests("tile")[0].id, "NotExported", "not in this export: tile");
    await tick();
    expect(q("error").textContent).toContain("not in this export");
  });

  test("a head fetched ahead that fails shows no error until it is selected", async () => {
    const model = makeModel();
    const { q } = mountView(widget, model, "attention-view");
    const first = tileReply(1, 1, 2);
    model.reply(model.requests("tile")[0].id, first.result, first.buffers);
    await tick();
    const ahead = model.requests("tile")[1];
    expect(ahead.params.head).toBe(2);
    model.replyError(ahead.id, "NotExported", "not in this export: L0H2 overview");
    await tick();
    expect(q("error").textContent).toBe("");
    model.set("selected", { layer: 0, head: 2, query: null, key: null });
    model.replyError(model.requests("tile").at(-1).id, "NotExported", "not in this export: L0H2 overview");
    await tick();
    expect(q("error").textContent).toContain("L0H2");
  });
});
