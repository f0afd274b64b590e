/**
 * CanvasHeatmap: a dense matrix on Canvas 2D that stays fluid at 1024 x 1024.
 *
 * The matrix is coloured once per setData into an image of one pixel per cell (or per max-pooled
 * block when cells are smaller than a device pixel); each frame then scales just the visible part
 * of it into a canvas the size of the viewport. A transparent
 * scroll container with a spacer on top of that canvas provides native scrolling, so a big zoom
 * never allocates a big canvas. Labels sit in frozen gutters (left: rows, top: columns).
 *
 * The viewport maths are pure exported functions so they can be tested without a real canvas.
 */

import { type Colormap, colorIndex, luminance, rgbAt } from "./colormap";
import { shorten, TOKEN_CHARS } from "./text";

export interface Cell {
  row: number;
  col: number;
}

/** Geometry of one frame, in CSS px relative to the viewport's top-left corner. */
export interface Layout {
  rows: number;
  cols: number;
  /** Cell size in CSS px (may be fractional, e.g. when fitting 1024 cells into 600 px). */
  cell: number;
  gutterLeft: number;
  gutterTop: number;
  scrollLeft: number;
  scrollTop: number;
  width: number;
  height: number;
}

/** Cells at least this tall get text labels. */
export const LABEL_MIN_CELL = 9;
/** Cells at least this big show their own text (setCellText). */
export const CELL_TEXT_MIN = 22;
export const MAX_CELL = 48;
const MAX_LABEL_WIDTH = 96;
/** Tiled mode: tiles held with their images (up to 2 MiB each); a full view at one level needs at most ~9. */
export const HELD_TILES = 32;
/** Room left for a horizontal scrollbar when the columns scroll (`fit: "rows"`). */
const SCROLLBAR = 16;
const LABEL_PAD = 6;
const ZOOM_STEP = 1.5;

/** Half-open index range [start, end) of cells of size `cell` visible in `extent` px after `scroll`. */
export function visibleRange(scroll: number, extent: number, cell: number, n: number): [number, number] {
  if (n <= 0 || cell <= 0 || extent <= 0) return [0, 0];
  const start = Math.min(n, Math.max(0, Math.floor(scroll / cell)));
  const end = Math.min(n, Math.max(start, Math.ceil((scroll + extent) / cell)));
  return [start, end];
}

/** The cell under viewport point (x, y), or null over the gutters or outside the matrix. */
export function cellAt(layout: Layout, x: number, y: number): Cell | null {
  if (x < layout.gutterLeft || y < layout.gutterTop || x >= layout.width || y >= layout.height) return null;
  const col = Math.floor((x - layout.gutterLeft + layout.scrollLeft) / layout.cell);
  const row = Math.floor((y - layout.gutterTop + layout.scrollTop) / layout.cell);
  if (row < 0 || col < 0 || row >= layout.rows || col >= layout.cols) return null;
  return { row, col };
}

/** Viewport position of cell (0, 0): what the `data-origin-*` test hooks report. */
export function origin(layout: Layout): { x: number; y: number } {
  return { x: layout.gutterLeft - layout.scrollLeft, y: layout.gutterTop - layout.scrollTop };
}

/** Largest cell size showing all of a rows x cols matrix in avail px, within [tiny, MAX_CELL]. */
export function fitCell(rows: number, cols: number, availWidth: number, availHeight: number): number {
  if (rows <= 0 || cols <= 0) return MAX_CELL;
  const c = Math.min(availWidth / cols, availHeight / rows);
  return Math.min(MAX_CELL, Math.max(0.05, c));
}

/**
 * New scroll offset after zooming from `oldCell` to `newCell`, keeping the content under the
 * pointer (at `pointer` px past the gutter, before and after) in place.
 */
export function zoomScroll(scroll: number, pointer: number, oldCell: number, newCell: number): number {
  return Math.max(0, ((scroll + pointer) / oldCell) * newCell - pointer);
}

/** Smallest scroll change that brings cell `index` fully into a viewport of `extent` px. */
export function scrollToReveal(index: number, cell: number, scroll: number, extent: number): number {
  const start = index * cell;
  const end = start + cell;
  if (start < scroll) return start;
  if (end > scroll + extent) return Math.max(0, end - extent);
  return scroll;
}

/** Keyboard cursor movement; null for keys that are not arrows/Home/End. */
export function moveCursor(cur: Cell | null, key: string, rows: number, cols: number): Cell | null {
  if (rows <= 0 || cols <= 0) return null;
  const c = cur ?? { row: 0, col: 0 };
  const clampCell = (row: number, col: number) => ({
    row: Math.min(rows - 1, Math.max(0, row)),
    col: Math.min(cols - 1, Math.max(0, col)),
  });
  if (cur === null && key.startsWith("Arrow")) return clampCell(0, 0);
  switch (key) {
    case "ArrowUp":
      return clampCell(c.row - 1, c.col);
    case "ArrowDown":
      return clampCell(c.row + 1, c.col);
    case "ArrowLeft":
      return clampCell(c.row, c.col - 1);
    case "ArrowRight":
      return clampCell(c.row, c.col + 1);
    case "Home":
      return clampCell(c.row, 0);
    case "End":
      return clampCell(c.row, cols - 1);
    default:
      return null;
  }
}

/** `text` cut with an ellipsis so that `measure(result) <= maxWidth` (binary search on length). */
export function truncateLabel(text: string, maxWidth: number, measure: (s: string) => number): string {
  if (measure(text) <= maxWidth) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (measure(`${text.slice(0, mid)}…`) <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return `${text.slice(0, lo)}…`;
}

/** Black or white: whichever reads better on the colour value `v` gets (NaN: on the NaN colour). */
export function cellTextColor(v: number, cmap: Colormap, lo: number, hi: number): string {
  return luminance(rgbAt(cmap, colorIndex(v, lo, hi))) > 0.5 ? "#000" : "#fff";
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The colormap as whole RGBA pixels (index 256 = NaN), so colouring writes one word per cell. */
function packedLut(cmap: Colormap): Uint32Array {
  const bytes = new Uint8Array(257 * 4);
  bytes.set(cmap.lut.subarray(0, 1024));
  bytes.set([...cmap.nan, 255], 1024);
  const view = new DataView(bytes.buffer);
  return Uint32Array.from({ length: 257 }, (_, i) => view.getUint32(i * 4, LITTLE_ENDIAN));
}

/**
 * Fill `out` (RGBA, one pixel per value, 4-byte aligned like ImageData.data) from values via
 * the colormap over [lo, hi]; NaN and +-inf get the NaN colour.
 */
export function colorPixels(
  values: ArrayLike<number>,
  cmap: Colormap,
  lo: number,
  hi: number,
  out: Uint8ClampedArray,
): void {
  const lut = packedLut(cmap);
  const px = new Uint32Array(out.buffer, out.byteOffset, values.length);
  const scale = hi > lo ? 255 / (hi - lo) : 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0) px[i] = lut[256];
    else if (scale === 0) px[i] = lut[v < lo ? 0 : 255];
    else {
      const t = (v - lo) * scale;
      px[i] = lut[t <= 0 ? 0 : t >= 255 ? 255 : (t + 0.5) | 0];
    }
  }
}

/**
 * Max-pool a rows x cols matrix by `factor` in both directions; a block with any non-finite
 * value becomes NaN. Used when cells are smaller than a device pixel: nearest-neighbour
 * downscaling would silently drop most cells, including the sharp peaks attention is about.
 */
export function maxPool(
  values: ArrayLike<number>,
  rows: number,
  cols: number,
  factor: number,
): { data: Float32Array; rows: number; cols: number } {
  const pr = Math.ceil(rows / factor);
  const pc = Math.ceil(cols / factor);
  const data = new Float32Array(pr * pc).fill(-Infinity);
  for (let r = 0; r < rows; r++) {
    const base = ((r / factor) | 0) * pc;
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c];
      const o = base + ((c / factor) | 0);
      if (v - v !== 0) data[o] = NaN;
      else if (v > data[o]) data[o] = v; // NaN > x is false, so NaN sticks
    }
  }
  return { data, rows: pr, cols: pc };
}

/**
 * One level-of-detail tile: a `tile` x `tile` block (fewer at the right and bottom edges) of the matrix
 * max-pooled by `2 ** level`, at tile position (`row`, `col`) of that level. `values` null: every cell is 0.
 */
export interface Tile {
  level: number;
  row: number;
  col: number;
  height: number;
  width: number;
  values: Float32Array | null;
}

/** A tiled matrix: tiles of `tile` cells (of their level) a side, levels 0 (full resolution) to `levels - 1`. */
export interface TileGrid {
  tile: number;
  levels: number;
}

export function tileKey(level: number, row: number, col: number): string {
  return `${level}:${row}:${col}`;
}

/**
 * The level whose pooled cells are at least one device pixel for cells of `cell` CSS px at `dpr`
 * (coarser rather than finer: nearest-neighbour downscaling would drop peaks), within 0..`top`.
 */
export function tileLevel(cell: number, dpr: number, top: number): number {
  const px = cell * dpr;
  if (!(px > 0) || px >= 1) return px > 0 ? 0 : top;
  return Math.max(0, Math.min(top, Math.ceil(Math.log2(1 / px) - 1e-9)));
}

/** Tile positions of `level` that cover cells [r0, r1) x [c0, c1), row by row. */
export function tilesCovering(
  level: number,
  tile: number,
  [r0, r1]: [number, number],
  [c0, c1]: [number, number],
): Array<{ row: number; col: number }> {
  const span = tile * 2 ** level;
  const out: Array<{ row: number; col: number }> = [];
  if (r1 <= r0 || c1 <= c0) return out;
  for (let r = Math.floor(r0 / span); r <= Math.floor((r1 - 1) / span); r++)
    for (let c = Math.floor(c0 / span); c <= Math.floor((c1 - 1) / span); c++) out.push({ row: r, col: c });
  return out;
}

type CellCallback = (cell: Cell) => void;

export class CanvasHeatmap {
  /** Outer element to insert into the page. */
  readonly element: HTMLDivElement;
  /** The focusable, scrollable element that receives pointer and key events. */
  readonly focusElement: HTMLDivElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly spacer: HTMLDivElement;
  private readonly zoomLabel: HTMLSpanElement;
  /** Coloured images of the data, one pixel per cell (factor 1) or per max-pooled block; built on demand. */
  private readonly sources = new Map<number, HTMLCanvasElement>();
  private readonly cleanups: Array<() => void> = [];

  private rows = 0;
  private cols = 0;
  private values: Float32Array | null = null;
  private tag: string | null = null;
  private cmap: Colormap;
  private lo = 0;
  private hi = 1;
  private rowLabels: string[] = [];
  private colLabels: string[] = [];
  private labelWidth = { rows: 0, cols: 0 };
  /** Draw a separator every `rows` rows / `cols` columns (0: none), e.g. between layers. */
  private groups = { rows: 0, cols: 0 };
  /** Text drawn inside each cell once cells are at least CELL_TEXT_MIN px (null: none). */
  private cellText: ((row: number, col: number) => string) | null = null;

  private cell = 1;
  private fit = true;
  private readonly fitRows: boolean;
  private layout: Layout | null = null;
  private crosshair: { row: number | null; col: number | null } = { row: null, col: null };
  private locked: Cell | null = null;
  private cursor: Cell | null = null;
  private hovered: Cell | null = null;
  private frame = 0;
  private disposed = false;

  private hoverCb: (cell: Cell | null) => void = () => {};
  private clickCb: CellCallback = () => {};
  private clearCb: () => void = () => {};
  private paintCb: (tag: string | null) => void = () => {};
  private tilesCb: (level: number, missing: Array<{ row: number; col: number }>) => void = () => {};
  /** Tiled mode (`setTiled`): the grid, and the tiles held with their coloured images (built on demand), least
   * recently drawn first: past `HELD_TILES` the oldest go (the top tile stays); `onTilesWanted` asks for them again. */
  private grid: TileGrid | null = null;
  private readonly tiles = new Map<string, { tile: Tile; image: HTMLCanvasElement | null }>();

  /**
   * `fit: "rows"` (a wide matrix: a few layers by thousands of positions): when the whole matrix cannot fit at a
   * readable size, "fit" fills the height with the rows and the columns scroll, instead of shrinking every cell.
   */
  constructor(cmap: Colormap, opts: { label?: string; fit?: "both" | "rows" } = {}) {
    this.cmap = cmap;
    this.fitRows = opts.fit === "rows";
    const doc = document;
    this.element = doc.createElement("div");
    this.element.className = "miw-heatmap";

    const toolbar = doc.createElement("div");
    toolbar.className = "miw-heatmap-toolbar";
    const button = (text: string, title: string, action: () => void) => {
      const b = doc.createElement("button");
      b.type = "button";
      b.className = "miw-button miw-button-small";
      b.textContent = text;
      b.title = title;
      b.setAttribute("aria-label", title);
      b.addEventListener("click", action);
      toolbar.append(b);
      return b;
    };
    button("−", "Zoom out", () => this.zoomBy(1 / ZOOM_STEP));
    button("+", "Zoom in", () => this.zoomBy(ZOOM_STEP));
    button("fit", "Fit to view", () => this.zoomFit());
    this.zoomLabel = doc.createElement("span");
    this.zoomLabel.className = "miw-heatmap-zoom";
    toolbar.append(this.zoomLabel);

    const viewport = doc.createElement("div");
    viewport.className = "miw-heatmap-viewport";
    this.canvas = doc.createElement("canvas");
    this.canvas.className = "miw-heatmap-canvas";
    this.focusElement = doc.createElement("div");
    this.focusElement.className = "miw-heatmap-scroll";
    this.focusElement.tabIndex = 0;
    this.focusElement.setAttribute("role", "grid");
    this.focusElement.setAttribute("aria-label", opts.label ?? "heatmap");
    this.spacer = doc.createElement("div");
    this.spacer.className = "miw-heatmap-spacer";
    this.focusElement.append(this.spacer);
    viewport.append(this.canvas, this.focusElement);
    this.element.append(toolbar, viewport);

    this.listen();
  }

  onHover(cb: (cell: Cell | null) => void): void {
    this.hoverCb = cb;
  }
  onClick(cb: CellCallback): void {
    this.clickCb = cb;
  }
  /** Escape pressed: the cursor is gone; views usually drop their lock too. */
  onClear(cb: () => void): void {
    this.clearCb = cb;
  }
  /** Called right after a frame showing the data of `setData(..., tag)` was drawn. */
  onPaint(cb: (tag: string | null) => void): void {
    this.paintCb = cb;
  }

  /**
   * Tiled mode: after each frame, the tiles of the level the zoom needs that cover the visible cells and are
   * not held (`putTile`) yet; empty when all are held.
   */
  onTilesWanted(cb: (level: number, missing: Array<{ row: number; col: number }>) => void): void {
    this.tilesCb = cb;
  }

  /**
   * Show a rows x cols matrix as level-of-detail tiles (`putTile`) instead of values. Each frame draws,
   * coarsest first, the held tiles from the top level (one tile: the whole matrix) down to the level the
   * zoom needs, so a finer tile not here yet leaves the coarser one showing. `onPaint` reports `tag` once
   * the top tile is held. The same tag keeps the tiles held; another drops them.
   */
  setTiled(rows: number, cols: number, grid: TileGrid, tag: string): void {
    if (this.grid === null || this.tag !== tag || rows !== this.rows || cols !== this.cols) this.tiles.clear();
    const resized = rows !== this.rows || cols !== this.cols;
    this.values = null;
    this.grid = grid;
    this.rows = rows;
    this.cols = cols;
    this.tag = tag;
    if (resized) {
      this.cursor = null;
      this.hovered = null;
    }
    this.sources.clear();
    this.schedule();
  }

  /** Hold a tile of the tiled matrix; the top tile paints at once (so `onPaint` fires before this returns). */
  putTile(tile: Tile): void {
    if (this.grid === null) return;
    const key = tileKey(tile.level, tile.row, tile.col);
    if (this.tiles.get(key)?.tile === tile) return;
    this.tiles.delete(key);
    this.tiles.set(key, { tile, image: null });
    const top = this.grid.levels - 1;
    for (const [held, entry] of this.tiles) {
      if (this.tiles.size <= HELD_TILES) break;
      if (entry.tile.level !== top) this.tiles.delete(held);
    }
    if (tile.level === top) this.paint();
    else this.schedule();
  }

  /**
   * Tiled mode: the value at (row, col) in the finest tile held there, and that tile's level (0: the cell's own
   * value, as sent; above 0: the extreme of its 2^level-cell block); null if no tile holds the cell.
   */
  tileValue(row: number, col: number): { value: number; level: number } | null {
    const grid = this.grid;
    if (grid === null || row < 0 || col < 0 || row >= this.rows || col >= this.cols) return null;
    for (let level = 0; level < grid.levels; level++) {
      const f = 2 ** level;
      const span = grid.tile * f;
      const entry = this.tiles.get(tileKey(level, Math.floor(row / span), Math.floor(col / span)));
      if (entry === undefined) continue;
      const t = entry.tile;
      if (t.values === null) return { value: 0, level };
      return { value: t.values[Math.floor((row % span) / f) * t.width + Math.floor((col % span) / f)], level };
    }
    return null;
  }

  /** The tiles held (tiled mode), as `level:row:col` keys. */
  heldTiles(): string[] {
    return [...this.tiles.keys()];
  }

  /** Show `values` (row-major rows x cols; null clears). Paints synchronously, so `onPaint` fires before this returns. */
  setData(values: Float32Array | null, rows: number, cols: number, tag: string | null = null): void {
    if (values !== null && values.length !== rows * cols) {
      throw new Error(`heatmap data holds ${values.length} values, but ${rows} x ${cols} needs ${rows * cols}`);
    }
    this.grid = null;
    this.tiles.clear();
    const resized = rows !== this.rows || cols !== this.cols;
    this.values = values;
    this.rows = values === null ? 0 : rows;
    this.cols = values === null ? 0 : cols;
    this.tag = tag;
    if (resized) {
      this.cursor = null;
      this.hovered = null;
    }
    this.sources.clear();
    this.paint();
  }

  setColormap(cmap: Colormap, lo = this.lo, hi = this.hi): void {
    this.cmap = cmap;
    this.lo = lo;
    this.hi = hi;
    this.sources.clear();
    for (const t of this.tiles.values()) t.image = null;
    this.schedule();
  }

  /** Axis labels; each is cut to TOKEN_CHARS up front, so measuring and drawing a frame stay cheap whatever the text. */
  setLabels(rowLabels: string[], colLabels: string[]): void {
    this.rowLabels = rowLabels.map((s) => shorten(s, TOKEN_CHARS));
    this.colLabels = colLabels.map((s) => shorten(s, TOKEN_CHARS));
    const ctx = this.canvas.getContext("2d");
    const measure = (labels: string[]) => {
      if (ctx === null) return Math.min(MAX_LABEL_WIDTH, 7 * labels.reduce((m, s) => Math.max(m, s.length), 0));
      ctx.font = this.font(12);
      let w = 0;
      for (const s of new Set(labels)) w = Math.max(w, ctx.measureText(s).width); // a prompt repeats its tokens
      return Math.min(MAX_LABEL_WIDTH, Math.ceil(w));
    };
    const rows = measure(this.rowLabels);
    this.labelWidth = { rows, cols: colLabels === rowLabels ? rows : measure(this.colLabels) };
    this.schedule();
  }

  /** Crosshair over a row and/or column (e.g. the hovered cell, or a token hovered elsewhere). */
  /** Separate blocks of `rows` rows and `cols` columns with lines (0 for none), e.g. one block per layer. */
  setGroups(rows: number, cols: number): void {
    this.groups = { rows: Math.max(0, rows | 0), cols: Math.max(0, cols | 0) };
    this.schedule();
  }

  /**
   * Text inside each cell (e.g. a top token or a value), drawn for visible cells once they are at
   * least CELL_TEXT_MIN px, cut to the cell's width, black or white by the cell's colour; null for
   * none. `focusElement.dataset.cellText` counts the cells that got text in the last frame.
   */
  setCellText(text: ((row: number, col: number) => string) | null): void {
    this.cellText = text;
    this.schedule();
  }

  highlight(row: number | null, col: number | null): void {
    if (row === this.crosshair.row && col === this.crosshair.col) return;
    this.crosshair = { row, col };
    this.schedule();
  }

  /** Outline a locked cell (null for none). */
  setLocked(cell: Cell | null): void {
    this.locked = cell;
    this.schedule();
  }

  zoomBy(factor: number, anchor?: { x: number; y: number }): void {
    this.setCell(this.cell * factor, anchor);
  }

  zoomFit(): void {
    this.fit = true;
    this.paint();
  }

  dispose(): void {
    this.disposed = true;
    cancelAnimationFrame(this.frame);
    for (const c of this.cleanups) c();
    this.element.remove();
  }

  private font(px: number): string {
    const family = getComputedStyle(this.element).getPropertyValue("--jp-code-font-family").trim() || "monospace";
    return `${px}px ${family}`;
  }

  private gutters(cell: number): { left: number; top: number } {
    if (cell < LABEL_MIN_CELL) return { left: 0, top: 0 };
    return {
      left: this.rowLabels.length ? this.labelWidth.rows + LABEL_PAD : 0,
      top: this.colLabels.length ? this.labelWidth.cols + LABEL_PAD : 0,
    };
  }

  private fitCellSize(width: number, height: number): number {
    const g = this.gutters(LABEL_MIN_CELL);
    const withLabels = fitCell(this.rows, this.cols, width - g.left, height - g.top);
    if (withLabels >= LABEL_MIN_CELL) return withLabels;
    if (this.fitRows) return fitCell(this.rows, 1, Number.POSITIVE_INFINITY, height - g.top - SCROLLBAR);
    return Math.min(fitCell(this.rows, this.cols, width, height), LABEL_MIN_CELL - 0.01);
  }

  private setCell(next: number, anchor?: { x: number; y: number }): void {
    const el = this.focusElement;
    const width = el.clientWidth;
    const height = el.clientHeight;
    const min = Math.min(1, this.fitCellSize(width, height));
    const cell = Math.min(MAX_CELL, Math.max(min, next));
    const old = this.gutters(this.cell);
    const now = this.gutters(cell);
    const ax = anchor?.x ?? width / 2;
    const ay = anchor?.y ?? height / 2;
    const left = zoomScroll(el.scrollLeft, Math.max(0, ax - old.left), this.cell, cell) + (old.left - now.left);
    const top = zoomScroll(el.scrollTop, Math.max(0, ay - old.top), this.cell, cell) + (old.top - now.top);
    this.fit = false;
    this.cell = cell;
    this.sizeSpacer();
    el.scrollLeft = Math.max(0, left);
    el.scrollTop = Math.max(0, top);
    this.paint();
  }

  private sizeSpacer(): void {
    const g = this.gutters(this.cell);
    this.spacer.style.width = `${g.left + this.cols * this.cell}px`;
    this.spacer.style.height = `${g.top + this.rows * this.cell}px`;
  }

  /** The data coloured at one pixel per `factor` x `factor` block (max-pooled when factor > 1). */
  private source(factor: number): HTMLCanvasElement {
    let canvas = this.sources.get(factor);
    if (canvas !== undefined) return canvas;
    canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d");
    if (ctx !== null && this.values !== null) {
      const m =
        factor > 1
          ? maxPool(this.values, this.rows, this.cols, factor)
          : { data: this.values, rows: this.rows, cols: this.cols };
      canvas.width = m.cols;
      canvas.height = m.rows;
      const image = ctx.createImageData(m.cols, m.rows);
      colorPixels(m.data, this.cmap, this.lo, this.hi, image.data);
      ctx.putImageData(image, 0, 0);
    }
    this.sources.set(factor, canvas);
    return canvas;
  }

  private schedule(): void {
    if (this.frame !== 0 || this.disposed) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.paint();
    });
  }

  /** Draw one frame now. */
  private paint(): void {
    if (this.disposed) return;
    if (this.frame !== 0) {
      cancelAnimationFrame(this.frame);
      this.frame = 0;
    }
    const el = this.focusElement;
    const width = el.clientWidth;
    const height = el.clientHeight;
    if (this.fit && width > 0 && height > 0) this.cell = this.fitCellSize(width, height);
    this.sizeSpacer();
    const g = this.gutters(this.cell);
    const layout: Layout = {
      rows: this.rows,
      cols: this.cols,
      cell: this.cell,
      gutterLeft: g.left,
      gutterTop: g.top,
      scrollLeft: el.scrollLeft,
      scrollTop: el.scrollTop,
      width,
      height,
    };
    this.layout = layout;
    const o = origin(layout);
    el.dataset.originX = String(o.x);
    el.dataset.originY = String(o.y);
    el.dataset.cellWidth = String(layout.cell);
    el.dataset.cellHeight = String(layout.cell);
    this.zoomLabel.textContent = this.fit ? "fit" : `${Math.round(this.cell * 10) / 10} px`;
    const ctx = this.canvas.getContext("2d");
    if (ctx !== null) {
      if (width === 0 || height === 0) return; // hidden: the ResizeObserver repaints when it shows again
      this.draw(ctx, layout);
    }
    const grid = this.grid;
    if (grid === null) {
      this.paintCb(this.tag);
      return;
    }
    const top = grid.levels - 1;
    this.paintCb(this.tiles.has(tileKey(top, 0, 0)) ? this.tag : null);
    if (width === 0 || height === 0) return;
    const level = tileLevel(layout.cell, window.devicePixelRatio || 1, top);
    const rows = visibleRange(layout.scrollTop, height - layout.gutterTop, layout.cell, layout.rows);
    const cols = visibleRange(layout.scrollLeft, width - layout.gutterLeft, layout.cell, layout.cols);
    const visible = tilesCovering(level, grid.tile, [rows[0], rows[1]], [cols[0], cols[1]]);
    this.tilesCb(
      level,
      visible.filter((t) => !this.tiles.has(tileKey(level, t.row, t.col))),
    );
  }

  /** A tile coloured at one pixel per pooled cell (a zero tile: one pixel of the colour of 0). */
  private tileImage(entry: { tile: Tile; image: HTMLCanvasElement | null }): HTMLCanvasElement {
    if (entry.image !== null) return entry.image;
    const { tile } = entry;
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d");
    const values = tile.values ?? new Float32Array(1);
    const [w, h] = tile.values === null ? [1, 1] : [tile.width, tile.height];
    canvas.width = w;
    canvas.height = h;
    if (ctx !== null) {
      const image = ctx.createImageData(w, h);
      colorPixels(values, this.cmap, this.lo, this.hi, image.data);
      ctx.putImageData(image, 0, 0);
    }
    entry.image = canvas;
    return canvas;
  }

  /** Tiled mode: held tiles from the top level down to the one the zoom needs, coarsest first. */
  private drawTiles(
    ctx: CanvasRenderingContext2D,
    layout: Layout,
    rows: [number, number],
    cols: [number, number],
  ): void {
    const grid = this.grid;
    if (grid === null) return;
    const { cell, gutterLeft: gl, gutterTop: gt, scrollLeft: sl, scrollTop: st } = layout;
    const top = grid.levels - 1;
    const want = tileLevel(cell, window.devicePixelRatio || 1, top);
    ctx.save();
    ctx.beginPath(); // partial pooled cells at the edges would draw past the matrix
    ctx.rect(
      gl,
      gt,
      Math.min(layout.width - gl, layout.cols * cell - sl),
      Math.min(layout.height - gt, layout.rows * cell - st),
    );
    ctx.clip();
    for (let level = top; level >= want; level--) {
      const span = grid.tile * 2 ** level;
      for (const { row, col } of tilesCovering(level, grid.tile, rows, cols)) {
        const key = tileKey(level, row, col);
        const entry = this.tiles.get(key);
        if (entry === undefined) continue;
        this.tiles.delete(key); // drawn: now the most recently used
        this.tiles.set(key, entry);
        const image = this.tileImage(entry);
        const f = 2 ** level;
        const w = entry.tile.values === null ? Math.min(span, layout.cols - col * span) : entry.tile.width * f;
        const h = entry.tile.values === null ? Math.min(span, layout.rows - row * span) : entry.tile.height * f;
        ctx.drawImage(image, gl + col * span * cell - sl, gt + row * span * cell - st, w * cell, h * cell);
      }
    }
    ctx.restore();
  }

  private draw(ctx: CanvasRenderingContext2D, layout: Layout): void {
    const dpr = window.devicePixelRatio || 1;
    const pw = Math.round(layout.width * dpr);
    const ph = Math.round(layout.height * dpr);
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
      this.canvas.style.width = `${layout.width}px`;
      this.canvas.style.height = `${layout.height}px`;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, layout.width, layout.height);
    const { cell, gutterLeft: gl, gutterTop: gt, scrollLeft: sl, scrollTop: st } = layout;
    const [c0, c1] = visibleRange(sl, layout.width - gl, cell, layout.cols);
    const [r0, r1] = visibleRange(st, layout.height - gt, cell, layout.rows);
    const x = (c: number) => gl + c * cell - sl;
    const y = (r: number) => gt + r * cell - st;
    const style = getComputedStyle(this.element);
    const text = style.color || "#333";
    const accent = style.getPropertyValue("--jp-brand-color1").trim() || "#1976d2";

    ctx.save();
    ctx.beginPath();
    ctx.rect(gl, gt, layout.width - gl, layout.height - gt);
    ctx.clip();
    if (this.grid !== null && c1 > c0 && r1 > r0) {
      ctx.imageSmoothingEnabled = false;
      this.drawTiles(ctx, layout, [r0, r1], [c0, c1]);
    }
    if (this.values !== null && c1 > c0 && r1 > r0) {
      ctx.imageSmoothingEnabled = false;
      // Sub-pixel cells: draw a max-pooled image, so no peak falls between device pixels.
      const f = cell * dpr < 1 ? Math.ceil(1 / (cell * dpr)) : 1;
      const src = this.source(f);
      const [pc0, pc1, pr0, pr1] = [Math.floor(c0 / f), Math.ceil(c1 / f), Math.floor(r0 / f), Math.ceil(r1 / f)];
      const size = f * cell;
      ctx.drawImage(
        src,
        pc0,
        pr0,
        pc1 - pc0,
        pr1 - pr0,
        x(pc0 * f),
        y(pr0 * f),
        (pc1 - pc0) * size,
        (pr1 - pr0) * size,
      );
    }
    this.drawCellText(ctx, layout, [r0, r1], [c0, c1]);
    this.drawGroups(ctx, layout, [r0, r1], [c0, c1], text);
    const { row: hr, col: hc } = this.crosshair;
    ctx.fillStyle = accent;
    ctx.globalAlpha = 0.18;
    if (hr !== null && hr < layout.rows) ctx.fillRect(gl, y(hr), layout.width - gl, cell);
    if (hc !== null && hc < layout.cols) ctx.fillRect(x(hc), gt, cell, layout.height - gt);
    ctx.globalAlpha = 1;
    const outline = (c: Cell | null, colour: string, dash: number[]) => {
      if (c === null || c.row >= layout.rows || c.col >= layout.cols) return;
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.setLineDash(dash);
      const pad = Math.min(1, cell / 4);
      ctx.strokeRect(x(c.col) - pad, y(c.row) - pad, Math.max(cell, 2) + 2 * pad, Math.max(cell, 2) + 2 * pad);
    };
    if (hr !== null && hc !== null) outline({ row: hr, col: hc }, accent, []);
    outline(this.locked, text, []);
    if (document.activeElement === this.focusElement) outline(this.cursor, text, [3, 2]);
    ctx.setLineDash([]);
    ctx.restore();

    if (gl > 0 || gt > 0) this.drawLabels(ctx, layout, [r0, r1], [c0, c1], text, accent);
  }

  private drawCellText(
    ctx: CanvasRenderingContext2D,
    layout: Layout,
    [r0, r1]: [number, number],
    [c0, c1]: [number, number],
  ): void {
    const fn = this.cellText;
    const values = this.values;
    let drawn = 0;
    if (fn !== null && values !== null && layout.cell >= CELL_TEXT_MIN) {
      const { cell, gutterLeft: gl, gutterTop: gt, scrollLeft: sl, scrollTop: st } = layout;
      ctx.font = this.font(Math.max(9, Math.min(12, Math.floor(cell * 0.3))));
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      const measure = (s: string) => ctx.measureText(s).width;
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) {
          const label = shorten(fn(r, c), TOKEN_CHARS);
          if (!label) continue;
          ctx.fillStyle = cellTextColor(values[r * this.cols + c], this.cmap, this.lo, this.hi);
          ctx.fillText(truncateLabel(label, cell - 4, measure), gl + (c + 0.5) * cell - sl, gt + (r + 0.5) * cell - st);
          drawn++;
        }
      }
    }
    this.focusElement.dataset.cellText = String(drawn);
  }

  private drawGroups(
    ctx: CanvasRenderingContext2D,
    layout: Layout,
    [r0, r1]: [number, number],
    [c0, c1]: [number, number],
    colour: string,
  ): void {
    const { rows: gr, cols: gc } = this.groups;
    if (gr === 0 && gc === 0) return;
    const { cell, gutterLeft: gl, gutterTop: gt } = layout;
    ctx.strokeStyle = colour;
    ctx.globalAlpha = 0.6;
    ctx.lineWidth = 1;
    ctx.beginPath();
    const right = gl + layout.cols * cell - layout.scrollLeft;
    const bottom = gt + layout.rows * cell - layout.scrollTop;
    for (let r = gr > 0 ? Math.ceil(Math.max(r0, 1) / gr) * gr : Infinity; r < r1; r += gr) {
      const y = Math.round(gt + r * cell - layout.scrollTop) + 0.5;
      ctx.moveTo(gl, y);
      ctx.lineTo(right, y);
    }
    for (let c = gc > 0 ? Math.ceil(Math.max(c0, 1) / gc) * gc : Infinity; c < c1; c += gc) {
      const x = Math.round(gl + c * cell - layout.scrollLeft) + 0.5;
      ctx.moveTo(x, gt);
      ctx.lineTo(x, bottom);
    }
    ctx.stroke();
    ctx.globalAlpha = 1;
  }

  private drawLabels(
    ctx: CanvasRenderingContext2D,
    layout: Layout,
    [r0, r1]: [number, number],
    [c0, c1]: [number, number],
    text: string,
    accent: string,
  ): void {
    const { cell, gutterLeft: gl, gutterTop: gt } = layout;
    const size = Math.max(8, Math.min(12, Math.floor(cell * 0.85)));
    const plain = this.font(size);
    const bold = `bold ${plain}`;
    const measure = (s: string) => ctx.measureText(s).width;
    ctx.textBaseline = "middle";
    if (gl > 0) {
      ctx.save();
      ctx.beginPath();
      ctx.rect(0, gt, gl, layout.height - gt);
      ctx.clip();
      ctx.textAlign = "right";
      for (let r = r0; r < Math.min(r1, this.rowLabels.length); r++) {
        const on = r === this.crosshair.row || r === this.locked?.row;
        ctx.font = on ? bold : plain;
        ctx.fillStyle = on ? accent : text;
        const cy = gt + (r + 0.5) * cell - layout.scrollTop;
        ctx.fillText(truncateLabel(this.rowLabels[r], gl - LABEL_PAD, measure), gl - LABEL_PAD / 2, cy);
      }
      ctx.restore();
    }
    if (gt > 0) {
      ctx.save();
      ctx.beginPath();
      ctx.rect(gl, 0, layout.width - gl, gt);
      ctx.clip();
      ctx.textAlign = "left";
      for (let c = c0; c < Math.min(c1, this.colLabels.length); c++) {
        const on = c === this.crosshair.col || c === this.locked?.col;
        ctx.font = on ? bold : plain;
        ctx.fillStyle = on ? accent : text;
        const cx = gl + (c + 0.5) * cell - layout.scrollLeft;
        ctx.save();
        ctx.translate(cx, gt - LABEL_PAD / 2);
        ctx.rotate(-Math.PI / 2);
        ctx.fillText(truncateLabel(this.colLabels[c], gt - LABEL_PAD, measure), 0, 0);
        ctx.restore();
      }
      ctx.restore();
    }
  }

  private pointerCell(ev: MouseEvent): Cell | null {
    if (this.layout === null) return null;
    const rect = this.focusElement.getBoundingClientRect();
    return cellAt(this.layout, ev.clientX - rect.left, ev.clientY - rect.top);
  }

  private setHovered(cell: Cell | null): void {
    if (cell?.row === this.hovered?.row && cell?.col === this.hovered?.col) return;
    this.hovered = cell;
    this.hoverCb(cell);
  }

  private listen(): void {
    const el = this.focusElement;
    const on = <K extends keyof HTMLElementEventMap>(
      target: HTMLElement,
      type: K,
      fn: (ev: HTMLElementEventMap[K]) => void,
      opts?: AddEventListenerOptions,
    ) => {
      target.addEventListener(type, fn, opts);
      this.cleanups.push(() => target.removeEventListener(type, fn, opts));
    };
    on(el, "scroll", () => this.schedule());
    on(el, "mousemove", (ev) => this.setHovered(this.pointerCell(ev)));
    on(el, "mouseleave", () => this.setHovered(null));
    on(el, "click", (ev) => {
      const cell = this.pointerCell(ev);
      if (cell === null) return;
      this.cursor = cell;
      this.clickCb(cell);
    });
    on(
      el,
      "wheel",
      (ev) => {
        if (!(ev.ctrlKey || ev.metaKey)) return; // plain wheel scrolls natively
        ev.preventDefault();
        const rect = el.getBoundingClientRect();
        this.zoomBy(Math.exp(-ev.deltaY * 0.002), { x: ev.clientX - rect.left, y: ev.clientY - rect.top });
      },
      { passive: false },
    );
    on(el, "focus", () => this.schedule());
    on(el, "blur", () => this.schedule());
    on(el, "keydown", (ev) => this.key(ev));

    if (typeof ResizeObserver === "function") {
      const ro = new ResizeObserver(() => this.paint());
      ro.observe(el);
      this.cleanups.push(() => ro.disconnect());
    }
    if (typeof IntersectionObserver === "function") {
      // JupyterLab's windowed notebooks detach cells and wipe canvases when scrolled away.
      const io = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting)) this.paint();
      });
      io.observe(el);
      this.cleanups.push(() => io.disconnect());
    }
  }

  private key(ev: KeyboardEvent): void {
    if (ev.key === "Enter" || ev.key === " ") {
      if (this.cursor !== null) this.clickCb(this.cursor);
    } else if (ev.key === "Escape") {
      this.cursor = null;
      this.setHovered(null);
      this.clearCb();
      this.schedule();
    } else if (ev.key === "+" || ev.key === "=") {
      this.zoomBy(ZOOM_STEP);
    } else if (ev.key === "-") {
      this.zoomBy(1 / ZOOM_STEP);
    } else if (ev.key === "0") {
      this.zoomFit();
    } else {
      const next = moveCursor(this.cursor ?? this.locked, ev.key, this.rows, this.cols);
      if (next === null) return;
      this.cursor = next;
      this.reveal(next);
      this.setHovered(next);
      this.schedule();
    }
    // Handled here: keep notebook command-mode shortcuts (arrows move cells) from firing too.
    ev.preventDefault();
    ev.stopPropagation();
  }

  private reveal(cell: Cell): void {
    const el = this.focusElement;
    const g = this.gutters(this.cell);
    el.scrollLeft = scrollToReveal(cell.col, this.cell, el.scrollLeft, el.clientWidth - g.left);
    el.scrollTop = scrollToReveal(cell.row, this.cell, el.scrollTop, el.clientHeight - g.top);
  }
}
