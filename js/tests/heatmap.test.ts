import { describe, expect, test, vi } from "vitest";
import { sequentialColormap } from "../src/lib/colormap";
import {
  CanvasHeatmap,
  CELL_TEXT_MIN,
  cellAt,
  cellTextColor,
  colorPixels,
  fitCell,
  type Layout,
  maxPool,
  moveCursor,
  origin,
  scrollToReveal,
  truncateLabel,
  visibleRange,
  zoomScroll,
} from "../src/lib/heatmap";
import { TOKEN_CHARS } from "../src/lib/text";

const layout: Layout = {
  rows: 1024,
  cols: 1024,
  cell: 16,
  gutterLeft: 80,
  gutterTop: 60,
  scrollLeft: 320,
  scrollTop: 1600,
  width: 600,
  height: 400,
};

describe("viewport maths", () => {
  test("visibleRange covers partially visible cells only", () => {
    expect(visibleRange(0, 100, 10, 1000)).toEqual([0, 10]);
    expect(visibleRange(5, 100, 10, 1000)).toEqual([0, 11]);
    expect(visibleRange(9990, 100, 10, 1000)).toEqual([999, 1000]);
    expect(visibleRange(0, 100, 10, 3)).toEqual([0, 3]);
    expect(visibleRange(0, 0, 10, 3)).toEqual([0, 0]);
    // 1024 tokens at 16 px: only ~33 x 22 cells are drawn, whatever the scroll.
    const [c0, c1] = visibleRange(layout.scrollLeft, layout.width - layout.gutterLeft, 16, 1024);
    expect(c1 - c0).toBeLessThanOrEqual(34);
  });

  test("cellAt and origin agree, including scroll and gutters", () => {
    const o = origin(layout);
    expect(o).toEqual({ x: 80 - 320, y: 60 - 1600 });
    for (const [row, col] of [
      [100, 20],
      [101, 40],
      [120, 50],
    ]) {
      const x = o.x + (col + 0.5) * layout.cell;
      const y = o.y + (row + 0.5) * layout.cell;
      expect(cellAt(layout, x, y)).toEqual({ row, col });
    }
    expect(cellAt(layout, 10, 200)).toBeNull(); // row-label gutter
    expect(cellAt(layout, 200, 10)).toBeNull(); // column-label gutter
    expect(cellAt({ ...layout, rows: 3, cols: 3, scrollLeft: 0, scrollTop: 0 }, 500, 300)).toBeNull();
  });

  test("fitCell fits the whole matrix, capped", () => {
    expect(fitCell(1024, 1024, 600, 500)).toBeCloseTo(500 / 1024);
    expect(fitCell(4, 4, 600, 500)).toBe(48);
  });

  test("zoomScroll keeps the content under the pointer still", () => {
    const scroll = 300;
    const pointer = 120;
    const next = zoomScroll(scroll, pointer, 10, 15);
    expect((next + pointer) / 15).toBeCloseTo((scroll + pointer) / 10);
    expect(zoomScroll(0, 0, 10, 5)).toBe(0);
  });

  test("scrollToReveal moves only as much as needed", () => {
    expect(scrollToReveal(5, 10, 0, 100)).toBe(0);
    expect(scrollToReveal(12, 10, 0, 100)).toBe(30);
    expect(scrollToReveal(2, 10, 50, 100)).toBe(20);
  });

  test("moveCursor clamps to the matrix", () => {
    expect(moveCursor(null, "ArrowDown", 3, 3)).toEqual({ row: 0, col: 0 });
    expect(moveCursor({ row: 0, col: 0 }, "ArrowUp", 3, 3)).toEqual({ row: 0, col: 0 });
    expect(moveCursor({ row: 1, col: 1 }, "ArrowRight", 3, 3)).toEqual({ row: 1, col: 2 });
    expect(moveCursor({ row: 1, col: 1 }, "End", 3, 3)).toEqual({ row: 1, col: 2 });
    expect(moveCursor({ row: 1, col: 1 }, "x", 3, 3)).toBeNull();
  });

  test("truncateLabel cuts to width with an ellipsis", () => {
    const measure = (s: string) => s.length * 7;
    expect(truncateLabel("short", 70, measure)).toBe("short");
    const cut = truncateLabel("a very long token label", 70, measure);
    expect(cut.endsWith("…")).toBe(true);
    expect(measure(cut)).toBeLessThanOrEqual(70);
  });

  test("colorPixels paints NaN and inf in the NaN colour", () => {
    const cmap = sequentialColormap("light");
    const out = new Uint8ClampedArray(16);
    colorPixels([0, 1, NaN, Infinity], cmap, 0, 1, out);
    expect([...out]).toEqual([255, 255, 255, 255, 8, 48, 107, 255, 255, 0, 255, 255, 255, 0, 255, 255]);
  });
});

describe("CanvasHeatmap without a canvas (happy-dom)", () => {
  test("builds, is focusable, reports paints and keyboard", () => {
    const h = new CanvasHeatmap(sequentialColormap("light"));
    document.body.append(h.element);
    const tags: Array<string | null> = [];
    const hovered: unknown[] = [];
    const clicked: unknown[] = [];
    h.onPaint((t) => tags.push(t));
    h.onHover((c) => hovered.push(c));
    h.onClick((c) => clicked.push(c));
    h.setLabels(["a", "b"], ["a", "b"]);
    h.setData(new Float32Array([1, 0, 0.5, 0.5]), 2, 2, "t1");
    expect(tags).toContain("t1");
    expect(h.focusElement.tabIndex).toBe(0);
    expect(h.focusElement.dataset.cellWidth).toBeDefined();
    const key = (k: string) => h.focusElement.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
    key("ArrowRight");
    key("ArrowDown");
    key("Enter");
    expect(hovered.at(-1)).toEqual({ row: 1, col: 0 });
    expect(clicked).toEqual([{ row: 1, col: 0 }]);
    expect(() => h.setData(new Float32Array(3), 2, 2)).toThrow("needs 4");
    h.dispose();
    expect(h.element.isConnected).toBe(false);
  });
});

describe("maxPool", () => {
  test("keeps peaks and non-finite values of each block", () => {
    // 3 x 3 pooled by 2 -> 2 x 2 (ragged edge blocks)
    const v = [0, 0.9, 0, 0, 0, 0, NaN, 0.1, 0.2];
    const p = maxPool(v, 3, 3, 2);
    expect([p.rows, p.cols]).toEqual([2, 2]);
    expect([...p.data]).toEqual([0.9, 0, NaN, 0.2].map(Math.fround));
    expect([...maxPool([Infinity, 1], 1, 2, 2).data]).toEqual([NaN]);
  });
});

/** A recording stand-in for CanvasRenderingContext2D (happy-dom has no canvas). */
function recordingContext() {
  const calls: Array<{ name: string; args: any[]; fillStyle: unknown }> = [];
  const measured: string[] = [];
  const state: Record<string | symbol, unknown> = {};
  const ctx = new Proxy(state, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (prop === "measureText")
        return (s: string) => {
          measured.push(s);
          return { width: s.length * 6 };
        };
      if (prop === "createImageData")
        return (w: number, h: number) => ({ data: new Uint8ClampedArray(w * h * 4), width: w, height: h });
      return (...args: any[]) => calls.push({ name: String(prop), args, fillStyle: target.fillStyle });
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return { ctx, calls, measured };
}

describe("cell text", () => {
  test("cellTextColor is black on light cells, white on dark ones and on the NaN colour", () => {
    const cmap = sequentialColormap("light");
    expect(cellTextColor(0, cmap, 0, 1)).toBe("#000");
    expect(cellTextColor(1, cmap, 0, 1)).toBe("#fff");
    expect(cellTextColor(NaN, cmap, 0, 1)).toBe("#fff"); // magenta
  });

  test("visible cells get their text, cut to the cell, once cells are big enough", () => {
    const { ctx, calls } = recordingContext();
    const spy = vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(() => ctx as any);
    try {
      const h = new CanvasHeatmap(sequentialColormap("light"));
      document.body.append(h.element);
      Object.defineProperty(h.focusElement, "clientWidth", { configurable: true, get: () => 300 });
      Object.defineProperty(h.focusElement, "clientHeight", { configurable: true, get: () => 200 });
      const labels = ["a", "bb", "", "a very long token indeed", "e", "f"];
      h.setCellText((r, c) => labels[r * 3 + c]);
      h.setData(new Float32Array([0, 1, 0, 1, 0, 0.2]), 2, 3);
      const texts = calls.filter((c) => c.name === "fillText");
      expect(h.focusElement.dataset.cellWidth).toBe("48"); // 2 x 3 cells fit at the 48 px maximum
      expect(texts.map((c) => c.args[0])).toEqual(["a", "bb", "a very…", "e", "f"]); // the empty one is skipped
      expect(texts.map((c) => c.fillStyle)).toEqual(["#000", "#fff", "#fff", "#000", "#000"]);
      expect(texts[4].args.slice(1)).toEqual([2.5 * 48, 1.5 * 48]); // centred in cell (1, 2)
      expect(h.focusElement.dataset.cellText).toBe("5");
      calls.length = 0;
      const n = 100; // 100 x 100 cells of 2 px: no text
      h.setData(new Float32Array(n * n), n, n);
      expect(Number(h.focusElement.dataset.cellWidth)).toBeLessThan(CELL_TEXT_MIN);
      expect(calls.filter((c) => c.name === "fillText")).toHaveLength(0);
      expect(h.focusElement.dataset.cellText).toBe("0");
      h.dispose();
    } finally {
      spy.mockRestore();
    }
  });
});

describe("fit", () => {
  test('fit: "rows" fills the height with the rows of a wide matrix and lets the columns scroll', () => {
    const { ctx } = recordingContext();
    const spy = vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(() => ctx as any);
    try {
      const wide = new CanvasHeatmap(sequentialColormap("light"), { fit: "rows" });
      const square = new CanvasHeatmap(sequentialColormap("light"));
      for (const h of [wide, square]) {
        document.body.append(h.element);
        Object.defineProperty(h.focusElement, "clientWidth", { configurable: true, get: () => 800 });
        Object.defineProperty(h.focusElement, "clientHeight", { configurable: true, get: () => 216 });
        h.setData(new Float32Array(5 * 4096), 5, 4096);
      }
      expect(Number(square.focusElement.dataset.cellWidth)).toBeLessThan(1); // 4096 columns in 800 px
      expect(Number(wide.focusElement.dataset.cellWidth)).toBe(40); // (216 - 16 for the scrollbar) / 5 rows
      wide.setData(new Float32Array(5 * 6), 5, 6); // a short prompt fits whole, as before
      square.setData(new Float32Array(5 * 6), 5, 6);
      expect(wide.focusElement.dataset.cellWidth).toBe(square.focusElement.dataset.cellWidth);
      wide.dispose();
      square.dispose();
    } finally {
      spy.mockRestore();
    }
  });
});

describe("axis labels", () => {
  test("a 10,000-character label is cut before it is measured or drawn", () => {
    const { ctx, calls, measured } = recordingContext();
    const spy = vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(() => ctx as any);
    try {
      const h = new CanvasHeatmap(sequentialColormap("light"));
      document.body.append(h.element);
      Object.defineProperty(h.focusElement, "clientWidth", { configurable: true, get: () => 300 });
      Object.defineProperty(h.focusElement, "clientHeight", { configurable: true, get: () => 300 });
      const long = "x".repeat(10_000);
      h.setLabels(["a", long], ["a", long]);
      h.setData(new Float32Array([1, 0, 0.5, 0.5]), 2, 2);
      h.highlight(1, 1); // a hovered label is drawn bold: still cut
      h.setData(new Float32Array([1, 0, 0.5, 0.5]), 2, 2);
      expect(Math.max(...measured.map((s) => s.length))).toBeLessThanOrEqual(TOKEN_CHARS);
      const drawn = calls.filter((c) => c.name === "fillText").map((c) => String(c.args[0]));
      expect(drawn).toContain("a");
      expect(drawn.some((s) => s.startsWith("xx") && s.endsWith("…"))).toBe(true);
      expect(Math.max(...drawn.map((s) => s.length))).toBeLessThanOrEqual(TOKEN_CHARS);
      h.dispose();
    } finally {
      spy.mockRestore();
    }
  });
});
