/**
 * LineChart: a small Canvas 2D line chart for live training curves (loss, L0, ...).
 *
 * Built to be redrawn 30-60 times a second with ~1000 points per series: setSeries draws at once
 * with no per-point allocation and never rebuilds DOM (the legend is rebuilt only when the series
 * labels change; the readout is one text node). The text a person reads (title, legend, the
 * readout of the latest or hovered values) is DOM; the canvas holds only the picture.
 * Non-finite points (and points <= 0 on a log scale) are gaps in the line, never data.
 *
 * Series are expected to have ascending x (training steps): hover finds points by binary search.
 *
 * Optional annotations (both off by default): `setBands` shades x intervals behind the lines (e.g.
 * training phases) and `setMarkers` draws dashed vertical lines (e.g. a selected checkpoint). Their
 * shapes are canvas; their labels are DOM spans over the plot, reused from frame to frame (only
 * their text, position and `hidden` change). The element's `data-bands` / `data-markers` say what
 * is set (band labels joined by "|", marker x's joined by ",").
 */

import "./line_chart.css";

import { categoricalColor, type Theme } from "./colormap";
import { setLine } from "./text";

export interface Series {
  label: string;
  x: ArrayLike<number>;
  y: ArrayLike<number>;
}

export interface LineChartOptions {
  title: string;
  logY?: boolean;
  /** Fixed y range (ignored when invalid, e.g. lo <= 0 on a log scale); see also setYRange. */
  yRange?: [number, number];
  /** Plot height in CSS px (default 140). */
  height?: number;
  /** data-testid of the element; its readout and canvas get `<testid>-readout` / `<testid>-canvas`. */
  testid?: string;
  /** Name of the x quantity in the readout (default "step"). */
  xLabel?: string;
}

/** A shaded x interval [from, to] behind the lines; `to: null` runs to the right edge of the plot. */
export interface ChartBand {
  from: number;
  to: number | null;
  label?: string;
}

/** A dashed vertical line at `x`, with an optional label. */
export interface ChartMarker {
  x: number;
  label?: string;
}

const DEFAULT_HEIGHT = 140;
const FONT_PX = 11;
const PAD = { top: 6, right: 10, bottom: FONT_PX + 8 };
/** Minimum CSS px between ticks. */
const X_TICK_SPACING = 70;
const Y_TICK_SPACING = 28;

/** Round away float noise such as 0.30000000000000004. */
function clean(v: number): number {
  return Number.parseFloat(v.toPrecision(12));
}

/**
 * About `count` evenly spaced "nice" values (1, 2 or 5 times a power of ten apart) inside
 * [lo, hi]; [] when the range is not finite or count < 1, [lo] when lo === hi.
 */
export function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(count >= 1)) return [];
  if (lo > hi) [lo, hi] = [hi, lo];
  if (lo === hi) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
  const eps = step * 1e-9;
  const ticks: number[] = [];
  for (let k = Math.ceil((lo - eps) / step); k * step <= hi + eps; k++) ticks.push(clean(k * step));
  return ticks;
}

/**
 * Log-axis ticks inside [lo, hi] (lo > 0), ascending: the powers of ten when there are two or more,
 * else the 1-2-5 multiples, else the 1..9 multiples (possibly one, or none).
 */
export function logTicks(lo: number, hi: number): number[] {
  if (!(lo > 0) || !Number.isFinite(hi) || !(hi >= lo)) return [];
  let ticks: number[] = [];
  for (const mantissas of [[1], [1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
    ticks = [];
    const last = Math.floor(Math.log10(hi) + 1e-9);
    for (let k = Math.floor(Math.log10(lo) - 1e-9); k <= last; k++) {
      for (const m of mantissas) {
        const v = Number(`${m}e${k}`);
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push(v);
      }
    }
    if (ticks.length >= 2) return ticks;
  }
  return ticks;
}

/** A value for people: integers as they are, otherwise 3 significant digits (e.g. 0.031, 21.4, 1.2e-5). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e9) return String(v);
  const short = Number(v.toPrecision(3));
  return a >= 1e5 || a < 1e-3 ? short.toExponential() : String(short);
}

/** An axis label for tick `v` of a scale whose ticks are `step` apart. */
export function formatTick(v: number, step: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-4) return Number(v.toPrecision(3)).toExponential();
  if (a >= 1e4 && step >= 1000) return `${clean(v / 1000)}k`;
  const decimals = step > 0 ? Math.min(8, Math.max(0, -Math.floor(Math.log10(step) + 1e-9))) : 2;
  return v.toFixed(decimals);
}

/** Index of the point whose x is nearest `x` in an ascending `xs`; -1 when empty. */
export function nearestIndex(xs: ArrayLike<number>, x: number): number {
  const n = xs.length;
  if (n === 0) return -1;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && x - xs[lo - 1] <= xs[lo] - x ? lo - 1 : lo;
}

function plottable(x: number, y: number, logY: boolean): boolean {
  return x - x === 0 && y - y === 0 && (!logY || y > 0);
}

/** Finite extent of all plottable points (y > 0 only on a log scale); null when there are none. */
export function dataExtent(
  series: readonly Series[],
  logY: boolean,
): { xlo: number; xhi: number; ylo: number; yhi: number; points: number } | null {
  let xlo = Infinity;
  let xhi = -Infinity;
  let ylo = Infinity;
  let yhi = -Infinity;
  let points = 0;
  for (const s of series) {
    const n = Math.min(s.x.length, s.y.length);
    for (let i = 0; i < n; i++) {
      const x = s.x[i];
      const y = s.y[i];
      if (!plottable(x, y, logY)) continue;
      points++;
      if (x < xlo) xlo = x;
      if (x > xhi) xhi = x;
      if (y < ylo) ylo = y;
      if (y > yhi) yhi = y;
    }
  }
  return points === 0 ? null : { xlo, xhi, ylo, yhi, points };
}

/** The y axis range: `fixed` when valid for the scale, else the data padded by 5% (not below 0 for non-negative data). */
export function yDomain(ylo: number, yhi: number, logY: boolean, fixed: [number, number] | null): [number, number] {
  if (
    fixed !== null &&
    Number.isFinite(fixed[0]) &&
    Number.isFinite(fixed[1]) &&
    fixed[1] > fixed[0] &&
    (!logY || fixed[0] > 0)
  ) {
    return fixed;
  }
  if (!Number.isFinite(ylo) || !Number.isFinite(yhi)) return logY ? [1, 10] : [0, 1];
  if (logY) {
    if (ylo === yhi) return [ylo / 2, yhi * 2];
    const l = Math.log10(ylo);
    const h = Math.log10(yhi);
    const p = (h - l) * 0.05;
    return [10 ** (l - p), 10 ** (h + p)];
  }
  const pad = ylo === yhi ? Math.abs(ylo) * 0.1 || 1 : (yhi - ylo) * 0.05;
  return [ylo >= 0 ? Math.max(0, ylo - pad) : ylo - pad, yhi + pad];
}

/** The colours and font a chart draws its canvas with, read from the notebook's CSS variables. */
export interface ChartInk {
  fg: string;
  muted: string;
  grid: string;
  accent: string;
  font: string;
}

const FALLBACK_INK: Record<Theme, Omit<ChartInk, "font">> = {
  light: { fg: "#000", muted: "rgba(0, 0, 0, 0.54)", grid: "#e0e0e0", accent: "#1976d2" },
  dark: { fg: "#fff", muted: "rgba(255, 255, 255, 0.54)", grid: "#444", accent: "#64b5f6" },
};

/** The ink of ``element`` (the theme's fallback for what the page does not set); ``attached`` false while the
 * element is not in the page, where nothing can be read yet: read again once it is. */
export function readChartInk(element: HTMLElement, theme: Theme): { ink: ChartInk; attached: boolean } {
  const fallback = FALLBACK_INK[theme];
  const style = element.isConnected ? getComputedStyle(element) : null;
  const v = (name: string) => style?.getPropertyValue(name).trim() ?? "";
  const family = v("--jp-ui-font-family") || "system-ui, sans-serif";
  const ink = {
    fg: v("--miw-fg") || fallback.fg,
    muted: v("--miw-fg-muted") || fallback.muted,
    grid: v("--miw-border-soft") || fallback.grid,
    accent: v("--miw-accent") || fallback.accent,
    font: `${FONT_PX}px ${family}`,
  };
  return { ink, attached: style !== null };
}

/** Opacity of the band fills (the muted ink), alternating so that neighbouring bands stay apart. */
const BAND_ALPHA = [0.07, 0.14];

const sameBand = (a: ChartBand, b: ChartBand) => a.from === b.from && a.to === b.to && a.label === b.label;
const sameMarker = (a: ChartMarker, b: ChartMarker) => a.x === b.x && a.label === b.label;

function sameList<T>(a: readonly T[], b: readonly T[], same: (p: T, q: T) => boolean): boolean {
  return a.length === b.length && a.every((p, i) => same(p, b[i]));
}

/** Where the last frame put the plot area, for mapping the pointer back to data. */
interface Frame {
  left: number;
  right: number;
  x0: number;
  x1: number;
}

export class LineChart {
  readonly element: HTMLDivElement;
  private readonly titleEl: HTMLDivElement;
  private readonly plot: HTMLDivElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly legend: HTMLDivElement;
  private readonly readout: HTMLDivElement;
  /** Band and marker labels over the plot (pointer-transparent). */
  private readonly overlay: HTMLDivElement;
  private readonly bandLabels: HTMLSpanElement[] = [];
  private readonly markerLabels: HTMLSpanElement[] = [];
  private readonly logY: boolean;
  private readonly height: number;
  private readonly xLabel: string;
  private readonly cleanups: Array<() => void> = [];

  private series: Series[] = [];
  private bands: ChartBand[] = [];
  private markers: ChartMarker[] = [];
  private legendLabels: string[] = [];
  private fixedY: [number, number] | null;
  private theme: Theme = "light";
  private ink: ChartInk | null = null;
  /** Pointer position in CSS px from the canvas's left edge, while hovering. */
  private hoverPx: number | null = null;
  private frame: Frame | null = null;
  private disposed = false;

  constructor(opts: LineChartOptions) {
    this.logY = opts.logY ?? false;
    this.height = opts.height ?? DEFAULT_HEIGHT;
    this.xLabel = opts.xLabel ?? "step";
    this.fixedY = opts.yRange ?? null;
    const testid = opts.testid;

    this.element = document.createElement("div");
    this.element.className = "miw-line-chart";
    if (testid) this.element.dataset.testid = testid;
    this.titleEl = document.createElement("div");
    this.titleEl.className = "miw-line-chart-title";
    this.titleEl.textContent = opts.title;
    this.plot = document.createElement("div");
    this.plot.className = "miw-line-chart-plot";
    this.plot.style.height = `${this.height}px`;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "miw-line-chart-canvas";
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", opts.title);
    if (testid) this.canvas.dataset.testid = `${testid}-canvas`;
    this.overlay = document.createElement("div");
    this.overlay.className = "miw-line-chart-overlay";
    this.overlay.setAttribute("aria-hidden", "true");
    this.plot.append(this.canvas, this.overlay);
    this.legend = document.createElement("div");
    this.legend.className = "miw-line-chart-legend";
    this.legend.hidden = true;
    this.readout = document.createElement("div");
    this.readout.className = "miw-line miw-line-chart-readout";
    this.readout.setAttribute("aria-live", "off");
    if (testid) this.readout.dataset.testid = `${testid}-readout`;
    this.element.append(this.titleEl, this.plot, this.legend, this.readout);
    this.listen();
    this.draw();
  }

  /** Show `series` (redraws now). The arrays are read, not copied: pass fresh ones to change data. */
  setSeries(series: Series[]): void {
    this.series = series;
    if (!this.sameLabels()) this.renderLegend();
    this.draw();
  }

  /** Follow the notebook theme: series colours by theme, axis colours re-read from the CSS. */
  setTheme(theme: Theme): void {
    this.theme = theme;
    this.ink = null;
    this.renderLegend();
    this.draw();
  }

  setTitle(title: string): void {
    this.titleEl.textContent = title;
    this.canvas.setAttribute("aria-label", title);
  }

  /** A fixed y range, or null to fit the data. */
  setYRange(range: [number, number] | null): void {
    this.fixedY = range;
    this.draw();
  }

  /**
   * Shade these x intervals behind the lines, each labelled at its top left (e.g. training phases);
   * [] for none. Redraws only when they differ from the current ones.
   */
  setBands(bands: readonly ChartBand[]): void {
    if (sameList(bands, this.bands, sameBand)) return;
    this.bands = bands.map((b) => ({ ...b }));
    this.element.dataset.bands = this.bands.map((b) => b.label ?? "").join("|");
    this.syncLabels(this.bandLabels, this.bands, "miw-line-chart-band-label");
    this.draw();
  }

  /** Dashed vertical lines at these x's (e.g. a selected step); [] for none. Redraws only when they change. */
  setMarkers(markers: readonly ChartMarker[]): void {
    if (sameList(markers, this.markers, sameMarker)) return;
    this.markers = markers.map((m) => ({ ...m }));
    this.element.dataset.markers = this.markers.map((m) => String(m.x)).join(",");
    this.syncLabels(this.markerLabels, this.markers, "miw-line-chart-marker-label");
    this.draw();
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
    on("pointermove", (ev) => {
      this.hoverPx = ev.clientX - this.canvas.getBoundingClientRect().left;
      this.draw();
    });
    on("pointerleave", () => {
      this.hoverPx = null;
      this.draw();
    });
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

  /** One label span per item (created when first needed, hidden when not), text set only when it changes. */
  private syncLabels(pool: HTMLSpanElement[], items: ReadonlyArray<{ label?: string }>, cls: string): void {
    while (pool.length < items.length) {
      const span = document.createElement("span");
      span.className = cls;
      pool.push(span);
      this.overlay.append(span);
    }
    pool.forEach((span, i) => {
      const text = i < items.length ? (items[i].label ?? "") : "";
      if (span.textContent !== text) span.textContent = text;
      span.title = text;
      span.hidden = text === "";
    });
  }

  /** Put the band and marker labels where the last frame drew their shapes (hidden when off the plot). */
  private placeLabels(px: (x: number) => number, left: number, right: number, top: number, bottom: number): void {
    this.bands.forEach((b, i) => {
      const span = this.bandLabels[i];
      const from = Math.max(left, px(b.from));
      const to = b.to === null ? right : Math.min(right, px(b.to));
      span.hidden = !b.label || !(to - from >= 1);
      span.style.left = `${from + 2}px`;
      span.style.top = `${top}px`;
      span.style.maxWidth = `${Math.max(0, to - from - 4)}px`;
    });
    this.markers.forEach((m, i) => {
      const span = this.markerLabels[i];
      const x = px(m.x);
      span.hidden = !m.label || !(x >= left && x <= right);
      span.style.left = `${x + 3}px`;
      span.style.top = `${bottom - FONT_PX - 4}px`;
      span.style.maxWidth = `${Math.max(0, right - x - 3)}px`;
    });
  }

  private sameLabels(): boolean {
    const s = this.series;
    if (s.length !== this.legendLabels.length) return false;
    for (let i = 0; i < s.length; i++) if (s[i].label !== this.legendLabels[i]) return false;
    return true;
  }

  private renderLegend(): void {
    this.legendLabels = this.series.map((s) => s.label);
    const items = this.legendLabels.map((label, i) => {
      const item = document.createElement("span");
      item.className = "miw-line-chart-legend-item";
      const swatch = document.createElement("span");
      swatch.className = "miw-line-chart-swatch";
      swatch.style.background = categoricalColor(i, this.theme);
      item.append(swatch, document.createTextNode(label));
      return item;
    });
    this.legend.replaceChildren(...items);
    this.legend.hidden = items.length < 2;
  }

  private readInk(): ChartInk {
    if (this.ink !== null) return this.ink;
    const { ink, attached } = readChartInk(this.element, this.theme);
    if (attached) this.ink = ink;
    return ink;
  }

  /** Readout of the points nearest the hovered x, or of each series' latest point. */
  private renderReadout(hoverX: number | null): void {
    let parts = "";
    let xShown = -Infinity;
    for (const s of this.series) {
      const n = Math.min(s.x.length, s.y.length);
      let i = -1;
      if (hoverX !== null) {
        i = nearestIndex(s.x, hoverX);
        if (i >= n) i = n - 1;
      } else {
        for (let k = n - 1; k >= 0; k--) {
          if (plottable(s.x[k], s.y[k], false)) {
            i = k;
            break;
          }
        }
      }
      if (i >= 0 && s.x[i] > xShown) xShown = s.x[i];
      parts += ` · ${s.label} ${i >= 0 ? formatValue(s.y[i]) : "–"}`;
    }
    const head = Number.isFinite(xShown) ? `${this.xLabel} ${formatValue(xShown)}` : "no data yet";
    setLine(this.readout, head + parts);
  }

  /** Redraw now: axes, one line per series, the hover marker; then the readout. */
  private draw(): void {
    if (this.disposed) return;
    const logY = this.logY;
    const ext = dataExtent(this.series, logY);
    const [ylo, yhi] = yDomain(ext?.ylo ?? NaN, ext?.yhi ?? NaN, logY, this.fixedY);
    let x0 = ext?.xlo ?? 0;
    let x1 = ext?.xhi ?? 1;
    if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
    this.element.dataset.points = String(ext?.points ?? 0);
    this.element.dataset.yLo = String(ylo);
    this.element.dataset.yHi = String(yhi);

    const width = this.plot.clientWidth;
    const height = this.height;
    const ctx = width > 0 ? this.canvas.getContext("2d") : null;
    let hoverX: number | null = null;
    const f = this.frame;
    if (this.hoverPx !== null && f !== null && f.right > f.left) {
      hoverX = f.x0 + ((this.hoverPx - f.left) / (f.right - f.left)) * (f.x1 - f.x0);
    }
    if (ctx === null) {
      // Hidden or no canvas: the ResizeObserver redraws once it shows.
      this.renderReadout(hoverX);
      return;
    }

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

    // Y ticks first: their label width sets the left margin.
    const top = PAD.top;
    const bottom = height - PAD.bottom;
    const maxY = Math.max(2, Math.floor((bottom - top) / Y_TICK_SPACING));
    let yTicks: number[];
    let yStep: number;
    if (logY) {
      yTicks = logTicks(ylo, yhi);
      // A narrow log range (e.g. 2.9..3.4) has too few 1..9 multiples: evenly spaced ticks, labelled by
      // their spacing (else 3.0 and 3.2 would both read "3").
      const linear = yTicks.length < 2;
      if (linear) yTicks = niceTicks(ylo, yhi, 3).filter((t) => t > 0);
      else if (yTicks.length > maxY) {
        const every = Math.ceil(yTicks.length / maxY);
        yTicks = yTicks.filter((_, i) => i % every === 0);
      }
      yStep = linear && yTicks.length > 1 ? yTicks[1] - yTicks[0] : NaN;
    } else {
      yTicks = niceTicks(ylo, yhi, maxY);
      yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : Math.abs(yhi - ylo);
    }
    const yLabels = yTicks.map((t) => formatTick(t, Number.isNaN(yStep) ? t : yStep));
    let labelWidth = 0;
    for (const s of yLabels) labelWidth = Math.max(labelWidth, ctx.measureText(s).width);
    const left = Math.ceil(labelWidth) + 8;
    const right = width - PAD.right;
    if (right - left < 10 || bottom - top < 10) {
      this.renderReadout(hoverX);
      return;
    }
    this.frame = { left, right, x0, x1 };
    const kx = (right - left) / (x1 - x0);
    const ly0 = logY ? Math.log10(ylo) : ylo;
    const ly1 = logY ? Math.log10(yhi) : yhi;
    const ky = (bottom - top) / (ly1 - ly0);
    const py = (y: number) => bottom - ((logY ? Math.log10(y) : y) - ly0) * ky;

    // Grid, axes and tick labels.
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
    const xTicks = niceTicks(x0, x1, Math.max(2, Math.floor((right - left) / X_TICK_SPACING)));
    const xStep = xTicks.length > 1 ? xTicks[1] - xTicks[0] : x1 - x0;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.strokeStyle = ink.muted;
    ctx.beginPath();
    ctx.moveTo(left + 0.5, top);
    ctx.lineTo(left + 0.5, bottom + 0.5);
    ctx.lineTo(right, bottom + 0.5);
    for (const t of xTicks) {
      const x = Math.round(left + (t - x0) * kx) + 0.5;
      ctx.moveTo(x, bottom);
      ctx.lineTo(x, bottom + 4);
      ctx.fillText(formatTick(t, xStep), x, bottom + 5);
    }
    ctx.stroke();

    // Lines, clipped to the plot; an isolated point (between gaps) becomes a dot.
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 1, right - left + 1, bottom - top + 2);
    ctx.clip();
    const px = (x: number) => left + (x - x0) * kx;
    this.drawBands(ctx, ink, px, left, right, top, bottom);
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    for (let s = 0; s < this.series.length; s++) {
      const { x: xs, y: ys } = this.series[s];
      const n = Math.min(xs.length, ys.length);
      ctx.strokeStyle = categoricalColor(s, this.theme);
      ctx.beginPath();
      let run = 0;
      let lastX = 0;
      let lastY = 0;
      for (let i = 0; i < n; i++) {
        const x = xs[i];
        const y = ys[i];
        if (!plottable(x, y, logY)) {
          if (run === 1) ctx.rect(lastX - 0.75, lastY - 0.75, 1.5, 1.5);
          run = 0;
          continue;
        }
        lastX = left + (x - x0) * kx;
        lastY = py(y);
        if (run === 0) ctx.moveTo(lastX, lastY);
        else ctx.lineTo(lastX, lastY);
        run++;
      }
      if (run === 1) ctx.rect(lastX - 0.75, lastY - 0.75, 1.5, 1.5);
      ctx.stroke();
    }

    // Hover: a vertical rule and a dot on each series' nearest point.
    if (hoverX !== null) {
      const hx = Math.round(left + (hoverX - x0) * kx) + 0.5;
      ctx.strokeStyle = ink.muted;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(hx, top);
      ctx.lineTo(hx, bottom);
      ctx.stroke();
      for (let s = 0; s < this.series.length; s++) {
        const { x: xs, y: ys } = this.series[s];
        const i = nearestIndex(xs, hoverX);
        if (i < 0 || i >= ys.length || !plottable(xs[i], ys[i], logY)) continue;
        ctx.fillStyle = categoricalColor(s, this.theme);
        ctx.beginPath();
        ctx.arc(left + (xs[i] - x0) * kx, py(ys[i]), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    this.drawMarkers(ctx, ink, px, top, bottom);
    ctx.restore();
    this.placeLabels(px, left, right, top, bottom);
    this.renderReadout(hoverX);
  }

  /** Each band a translucent fill of the muted ink (alternating opacity) with a rule at its start. */
  private drawBands(
    ctx: CanvasRenderingContext2D,
    ink: ChartInk,
    px: (x: number) => number,
    left: number,
    right: number,
    top: number,
    bottom: number,
  ): void {
    if (this.bands.length === 0) return;
    ctx.fillStyle = ink.muted;
    ctx.strokeStyle = ink.muted;
    ctx.lineWidth = 1;
    this.bands.forEach((b, i) => {
      const from = Math.max(left, px(b.from));
      const to = b.to === null ? right : Math.min(right, px(b.to));
      if (!(to - from >= 1)) return; // off the plot, empty or not finite
      ctx.globalAlpha = BAND_ALPHA[i % 2];
      ctx.fillRect(from, top, to - from, bottom - top);
      if (from > left) {
        ctx.globalAlpha = 0.5;
        ctx.beginPath();
        ctx.moveTo(Math.round(from) + 0.5, top);
        ctx.lineTo(Math.round(from) + 0.5, bottom);
        ctx.stroke();
      }
    });
    ctx.globalAlpha = 1;
  }

  /** Each marker a dashed vertical line in the accent colour. */
  private drawMarkers(
    ctx: CanvasRenderingContext2D,
    ink: ChartInk,
    px: (x: number) => number,
    top: number,
    bottom: number,
  ): void {
    if (this.markers.length === 0) return;
    ctx.strokeStyle = ink.accent;
    ctx.lineWidth = 1.5;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    for (const m of this.markers) {
      const x = px(m.x);
      if (!Number.isFinite(x)) continue;
      ctx.moveTo(Math.round(x) + 0.5, top);
      ctx.lineTo(Math.round(x) + 0.5, bottom);
    }
    ctx.stroke();
    ctx.setLineDash([]);
  }
}
