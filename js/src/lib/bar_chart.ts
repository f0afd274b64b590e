/**
 * BarChart: a small Canvas 2D bar chart of one value per index (e.g. a Fourier spectrum over
 * frequencies 1..K), where a person picks one bar.
 *
 * The bars are the canvas; the title and the one-line readout (the hovered bar, else the selected
 * one, else the largest) are DOM. Bars in the highlight set are drawn in the accent colour, the
 * selected bar is outlined. Index i is labelled `i + xOffset`. Hover and selection only repaint
 * the canvas and rewrite the readout's text node: nothing is rebuilt, nothing moves.
 *
 * Pointer: hover reads a bar, a click anywhere in a bar's column selects it. Keyboard (the canvas
 * is focusable, tabindex 0, role "slider"): ArrowLeft/ArrowRight (and Home/End) select the
 * previous/next (first/last) bar, Enter or Space selects the bar under the keyboard cursor,
 * Escape calls `onClear`. Selecting only calls `onSelect(index)`: the owner decides, then calls
 * `setSelected` (typically after a trait round-trip), so the chart never disagrees with its model.
 * Non-finite values draw no bar and read as "NaN"/"inf".
 *
 * Test hooks on `element`: `data-testid` (the option), `data-count`, `data-selected` (index or ""),
 * `data-highlight` (indices, comma-separated), `data-hovered` (index or ""); the canvas is
 * `<testid>-canvas`, the readout `<testid>-readout`.
 */

import "./bar_chart.css";

import type { Theme } from "./colormap";
import { type ChartInk, formatTick, formatValue, niceTicks, readChartInk } from "./line_chart";
import { setLine } from "./text";

export interface BarChartOptions {
  title: string;
  /** data-testid of the element; its canvas and readout get `<testid>-canvas` / `<testid>-readout`. */
  testid: string;
  /** Plot height in CSS px (default 120). */
  height?: number;
  /** The label of index 0 (default 0): bar i is labelled `i + xOffset`. */
  xOffset?: number;
  /** Name of the x quantity in the readout, e.g. "k" reads "k 21: 0.73" (default: none, "21: 0.73"). */
  xLabel?: string;
  /** How the readout writes a value (default `formatValue`: 3 significant digits). */
  format?: (v: number) => string;
}

const DEFAULT_HEIGHT = 120;
const FONT_PX = 11;
/** Two rows of x labels: adjacent highlighted bars (key frequencies 20 and 21) take the second. */
const LABEL_ROW = FONT_PX + 3;
const PAD = { top: 6, right: 8, bottom: 2 * LABEL_ROW + 6 };
const Y_TICK_SPACING = 28;
/** Minimum CSS px between two x labels. */
const LABEL_GAP = 6;

/** Where the last frame put the bars, for mapping the pointer back to an index. */
export interface BarFrame {
  left: number;
  right: number;
  n: number;
}

/** The bar whose column holds x (CSS px from the canvas's left edge), or null outside the bars. */
export function barAt(frame: BarFrame | null, x: number): number | null {
  if (frame === null || frame.n <= 0 || !(frame.right > frame.left)) return null;
  if (!(x >= frame.left && x < frame.right)) return null;
  return Math.min(frame.n - 1, Math.floor(((x - frame.left) / (frame.right - frame.left)) * frame.n));
}

/** The y range bars are drawn on: always including 0, [0, 1] when there is nothing finite. */
export function barDomain(values: ArrayLike<number>): [number, number] {
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === hi) return [0, 1];
  return [lo, hi];
}

/**
 * Keyboard movement over `n` bars from `from` (the cursor, or the selection; null: none yet);
 * null for keys that do not move.
 */
export function moveBar(from: number | null, key: string, n: number): number | null {
  if (n <= 0) return null;
  const clampIndex = (i: number) => Math.min(n - 1, Math.max(0, i));
  switch (key) {
    case "ArrowLeft":
    case "ArrowDown":
      return from === null ? 0 : clampIndex(from - 1);
    case "ArrowRight":
    case "ArrowUp":
      return from === null ? 0 : clampIndex(from + 1);
    case "Home":
      return 0;
    case "End":
      return n - 1;
    default:
      return null;
  }
}

/** Index of the largest finite value; -1 when there is none. */
export function argMax(values: ArrayLike<number>): number {
  let best = -1;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v === 0 && (best < 0 || v > values[best])) best = i;
  }
  return best;
}

export class BarChart {
  readonly element: HTMLDivElement;
  /** The focusable canvas: pointer and key events. */
  readonly focusElement: HTMLCanvasElement;
  private readonly titleEl: HTMLDivElement;
  private readonly plot: HTMLDivElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly readout: HTMLDivElement;
  private readonly height: number;
  private readonly xOffset: number;
  private readonly xLabel: string;
  private readonly format: (v: number) => string;
  private readonly cleanups: Array<() => void> = [];

  private values: ArrayLike<number> = [];
  private highlight = new Set<number>();
  private selected: number | null = null;
  private hovered: number | null = null;
  /** The keyboard cursor (follows the selection until the keys move it). */
  private cursor: number | null = null;
  private theme: Theme = "light";
  private ink: ChartInk | null = null;
  private frame: BarFrame | null = null;
  private disposed = false;
  private selectCb: (index: number) => void = () => {};
  private clearCb: () => void = () => {};

  constructor(opts: BarChartOptions) {
    this.height = opts.height ?? DEFAULT_HEIGHT;
    this.xOffset = opts.xOffset ?? 0;
    this.xLabel = opts.xLabel ?? "";
    this.format = opts.format ?? formatValue;
    const testid = opts.testid;

    this.element = document.createElement("div");
    this.element.className = "miw-bar-chart";
    this.element.dataset.testid = testid;
    this.titleEl = document.createElement("div");
    this.titleEl.className = "miw-line miw-bar-chart-title";
    this.plot = document.createElement("div");
    this.plot.className = "miw-bar-chart-plot";
    this.plot.style.height = `${this.height}px`;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "miw-bar-chart-canvas";
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute("role", "slider");
    this.canvas.setAttribute("aria-orientation", "horizontal");
    this.canvas.dataset.testid = `${testid}-canvas`;
    this.focusElement = this.canvas;
    this.plot.append(this.canvas);
    this.readout = document.createElement("div");
    this.readout.className = "miw-line miw-bar-chart-readout";
    this.readout.dataset.testid = `${testid}-readout`;
    this.element.append(this.titleEl, this.plot, this.readout);
    this.setTitle(opts.title);
    this.listen();
    this.draw();
  }

  /** Called with the index a click, Enter or an arrow key picks. */
  onSelect(cb: (index: number) => void): void {
    this.selectCb = cb;
  }

  /** Called on Escape (e.g. to drop the selection). */
  onClear(cb: () => void): void {
    this.clearCb = cb;
  }

  /** Show `values` (redraws now). The array is read, not copied: pass a fresh one to change data. */
  setData(values: ArrayLike<number>): void {
    this.values = values;
    const n = values.length;
    if (this.hovered !== null && this.hovered >= n) this.hovered = null;
    if (this.cursor !== null && this.cursor >= n) this.cursor = null;
    this.element.dataset.count = String(n);
    this.canvas.setAttribute("aria-valuemin", String(this.xOffset));
    this.canvas.setAttribute("aria-valuemax", String(this.xOffset + Math.max(0, n - 1)));
    this.draw();
  }

  /** Bars drawn in the accent colour (e.g. the key frequencies); indices outside the data are ignored. */
  setHighlight(indices: Iterable<number>): void {
    this.highlight = new Set([...indices].filter((i) => Number.isInteger(i)));
    this.element.dataset.highlight = [...this.highlight].sort((a, b) => a - b).join(",");
    this.draw();
  }

  /** Outline bar `index` (null: none). The keyboard cursor moves there too. */
  setSelected(index: number | null): void {
    const i = index !== null && Number.isInteger(index) && index >= 0 ? index : null;
    this.selected = i;
    this.cursor = i;
    this.element.dataset.selected = i === null ? "" : String(i);
    if (i === null) this.canvas.removeAttribute("aria-valuenow");
    else this.canvas.setAttribute("aria-valuenow", String(i + this.xOffset));
    this.draw();
  }

  setTitle(title: string): void {
    setLine(this.titleEl, title);
    this.canvas.setAttribute("aria-label", `${title}; arrows pick a bar`);
  }

  /** Follow the notebook theme: colours re-read from the CSS. */
  setTheme(theme: Theme): void {
    this.theme = theme;
    this.ink = null;
    this.draw();
  }

  /** The label of bar `index`. */
  label(index: number): number {
    return index + this.xOffset;
  }

  dispose(): void {
    this.disposed = true;
    for (const c of this.cleanups.splice(0)) c();
  }

  private listen(): void {
    const on = <K extends keyof HTMLElementEventMap>(type: K, fn: (ev: HTMLElementEventMap[K]) => void) => {
      this.canvas.addEventListener(type, fn);
      this.cleanups.push(() => this.canvas.removeEventListener(type, fn));
    };
    const pointerBar = (ev: MouseEvent) => barAt(this.frame, ev.clientX - this.canvas.getBoundingClientRect().left);
    on("pointermove", (ev) => this.setHovered(pointerBar(ev)));
    on("pointerleave", () => this.setHovered(null));
    on("click", (ev) => {
      const i = pointerBar(ev);
      if (i === null) return;
      this.cursor = i;
      this.selectCb(i);
    });
    on("keydown", (ev) => this.key(ev));
    on("focus", () => this.draw());
    on("blur", () => this.draw());
    if (typeof ResizeObserver === "function") {
      const ro = new ResizeObserver(() => this.draw());
      ro.observe(this.plot);
      this.cleanups.push(() => ro.disconnect());
    }
    if (typeof IntersectionObserver === "function") {
      // JupyterLab's windowed notebooks detach cells and wipe canvases when scrolled away.
      const io = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting)) this.draw();
      });
      io.observe(this.plot);
      this.cleanups.push(() => io.disconnect());
    }
  }

  private key(ev: KeyboardEvent): void {
    const n = this.values.length;
    if (ev.key === "Enter" || ev.key === " ") {
      const i = this.cursor ?? this.selected ?? (n > 0 ? 0 : null);
      if (i !== null && i < n) this.selectCb(i);
    } else if (ev.key === "Escape") {
      this.cursor = null;
      this.clearCb();
      this.draw();
    } else {
      const next = moveBar(this.cursor ?? this.selected, ev.key, n);
      if (next === null) return;
      this.cursor = next;
      this.selectCb(next);
      this.draw();
    }
    // Handled here: keep notebook command-mode shortcuts (arrows move cells) from firing too.
    ev.preventDefault();
    ev.stopPropagation();
  }

  private setHovered(i: number | null): void {
    if (i === this.hovered) return;
    this.hovered = i;
    this.element.dataset.hovered = i === null ? "" : String(i);
    this.draw();
  }

  private readInk(): ChartInk {
    if (this.ink !== null) return this.ink;
    const { ink, attached } = readChartInk(this.element, this.theme);
    if (attached) this.ink = ink;
    return ink;
  }

  private describe(i: number): string {
    const x = this.xLabel ? `${this.xLabel} ${this.label(i)}` : String(this.label(i));
    const key = this.highlight.has(i) ? " (key)" : "";
    return `${x}: ${this.format(this.values[i])}${key}`;
  }

  /** The hovered bar, else the keyboard cursor while focused, else the selected one, else the largest. */
  private renderReadout(): void {
    const n = this.values.length;
    const focused = document.activeElement === this.canvas;
    let text: string;
    if (n === 0) text = "no data yet";
    else if (this.hovered !== null) text = this.describe(this.hovered);
    else if (focused && this.cursor !== null && this.cursor < n) text = this.describe(this.cursor);
    else if (this.selected !== null && this.selected < n) text = `selected ${this.describe(this.selected)}`;
    else {
      const best = argMax(this.values);
      text = best < 0 ? "no finite values" : `largest ${this.describe(best)}`;
    }
    setLine(this.readout, text);
    this.canvas.setAttribute("aria-valuetext", text);
  }

  /** Redraw now: axis, bars, the selection and cursor outlines, labels; then the readout. */
  private draw(): void {
    if (this.disposed) return;
    this.renderReadout();
    const width = this.plot.clientWidth;
    const height = this.height;
    const ctx = width > 0 ? this.canvas.getContext("2d") : null;
    if (ctx === null) return; // hidden or no canvas: the ResizeObserver redraws once it shows

    const dpr = window.devicePixelRatio || 1;
    const pw = Math.round(width * dpr);
    const ph = Math.round(height * dpr);
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const ink = this.readInk();
    ctx.font = ink.font;

    const values = this.values;
    const n = values.length;
    const [ylo, yhi] = barDomain(values);
    const top = PAD.top;
    const bottom = height - PAD.bottom;
    const yTicks = niceTicks(ylo, yhi, Math.max(2, Math.floor((bottom - top) / Y_TICK_SPACING)));
    const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : yhi - ylo;
    const yLabels = yTicks.map((t) => formatTick(t, yStep));
    let labelWidth = 0;
    for (const s of yLabels) labelWidth = Math.max(labelWidth, ctx.measureText(s).width);
    const left = Math.ceil(labelWidth) + 8;
    const right = width - PAD.right;
    if (right - left < 10 || bottom - top < 10 || n === 0) {
      this.frame = null;
      return;
    }
    this.frame = { left, right, n };
    const ky = (bottom - top) / (yhi - ylo);
    const py = (y: number) => bottom - (y - ylo) * ky;
    const slot = (right - left) / n;
    const gap = slot >= 4 ? Math.min(2, slot * 0.2) : 0;

    // Grid and y labels.
    ctx.lineWidth = 1;
    ctx.strokeStyle = ink.grid;
    ctx.fillStyle = ink.muted;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.beginPath();
    for (let i = 0; i < yTicks.length; i++) {
      const y = Math.round(py(yTicks[i])) + 0.5;
      ctx.moveTo(left, y);
      ctx.lineTo(right, y);
      ctx.fillText(yLabels[i], left - 4, y);
    }
    ctx.stroke();

    // Hovered column: a faint band so a thin bar is easy to aim at.
    if (this.hovered !== null) {
      ctx.fillStyle = ink.grid;
      ctx.fillRect(left + this.hovered * slot, top, slot, bottom - top);
    }

    // Bars: plain ones muted, then the highlighted ones in the accent colour on top.
    const y0 = py(0);
    const bar = (i: number) => {
      const v = values[i];
      if (v - v !== 0) return;
      const y = py(v);
      ctx.rect(left + i * slot + gap / 2, Math.min(y, y0), Math.max(0.5, slot - gap), Math.max(1, Math.abs(y0 - y)));
    };
    ctx.fillStyle = ink.muted;
    ctx.beginPath();
    for (let i = 0; i < n; i++) if (!this.highlight.has(i)) bar(i);
    ctx.fill();
    ctx.fillStyle = ink.accent;
    ctx.beginPath();
    for (const i of this.highlight) if (i >= 0 && i < n) bar(i);
    ctx.fill();

    // Zero line.
    ctx.strokeStyle = ink.muted;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y0) + 0.5);
    ctx.lineTo(right, Math.round(y0) + 0.5);
    ctx.stroke();

    // Selected bar outlined (its whole column when the bar is tiny); keyboard cursor dashed.
    const outline = (i: number | null, dash: number[]) => {
      if (i === null || i >= n) return;
      const v = values[i];
      const y = v - v === 0 ? py(v) : y0;
      const yTop = Math.min(y, y0, bottom - 6);
      const yBottom = Math.max(y, y0);
      ctx.strokeStyle = ink.fg;
      ctx.lineWidth = 2;
      ctx.setLineDash(dash);
      ctx.strokeRect(left + i * slot, yTop - 1, Math.max(2, slot), yBottom - yTop + 2);
    };
    outline(this.selected, []);
    if (document.activeElement === this.canvas && this.cursor !== this.selected) outline(this.cursor, [3, 2]);
    ctx.setLineDash([]);
    ctx.lineWidth = 1;

    this.drawLabels(ctx, ink, left, slot, bottom);
  }

  /**
   * X labels: the selected, hovered and highlighted bars first (on the first row, else the second),
   * then evenly spaced ones on the first row where they fit; labels never overlap.
   */
  private drawLabels(ctx: CanvasRenderingContext2D, ink: ChartInk, left: number, slot: number, bottom: number): void {
    const n = this.values.length;
    const taken: Array<Array<[number, number]>> = [[], []];
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const place = (i: number, colour: string, bold: boolean, rows: number) => {
      if (i < 0 || i >= n) return;
      const text = String(this.label(i));
      ctx.font = bold ? `bold ${ink.font}` : ink.font;
      const w = ctx.measureText(text).width;
      const cx = left + (i + 0.5) * slot;
      const a = cx - w / 2 - LABEL_GAP / 2;
      const b = cx + w / 2 + LABEL_GAP / 2;
      for (let row = 0; row < rows; row++) {
        if (taken[row].some(([p, q]) => a < q && b > p)) continue;
        taken[row].push([a, b]);
        ctx.fillStyle = colour;
        ctx.fillText(text, cx, bottom + 4 + row * LABEL_ROW);
        return;
      }
    };
    if (this.selected !== null) place(this.selected, ink.fg, true, 2);
    if (this.hovered !== null && this.hovered !== this.selected) place(this.hovered, ink.fg, false, 2);
    for (const i of [...this.highlight].sort((a, b) => a - b)) if (i !== this.selected) place(i, ink.accent, true, 2);
    const first = this.xOffset;
    const ticks = niceTicks(first, first + n - 1, Math.max(2, Math.floor((n * slot) / 40)));
    for (const t of ticks) if (Number.isInteger(t)) place(t - first, ink.muted, false, 1);
    ctx.font = ink.font;
  }
}
