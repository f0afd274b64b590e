/**
 * SuperpositionToy front end (Elhage et al. 2022, "Toy Models of Superposition"): the learned
 * geometry of one ReLU output model per sparsity value, animated while the kernel trains them.
 *
 * Layout: the scan toolbar (Start / Stop / progress in steps), a shared importance-decay slider,
 * one panel per instance (its own sparsity slider; the feature directions W[:, i] in the hidden
 * plane when m == 2; W^T W as a diverging heatmap; per-feature norms coloured by dimensionality),
 * then the loss of every instance on one log-scale chart.
 *
 * Frames are pushed as `frame` events; the `frame` resource (`policy: "coalesce"`) asks for the
 * current one on render and after every `revision` bump (the end of a run). Both kinds go through
 * the same `take`: only the latest is kept and drawn once per animation frame, so a fast trainer
 * cannot flood the page. A frame carries `step`, not `revision`, so the view orders them by
 * (revision, step), a pushed frame stamped with the revision the view had when it came: a fetched
 * frame older than the newest pushed one is dropped (see `FrameOrder`).
 *
 * Sliders show their value while dragged and write the `sparsity` / `importance_decay` traits on
 * release, which restarts training in Python; Python's values move the sliders back.
 */

import "../lib/base.css";
import "./superposition.css";

import { type ArrayHeader, asFloat32, asInt32, type DecodedArray, decodeArray, decodeShaped } from "../lib/codec";
import { type Colormap, cssColor, divergingColormap, sequentialColormap, type Theme } from "../lib/colormap";
import { followFrames } from "../lib/frames";
import { colorPixels } from "../lib/heatmap";
import { LineChart } from "../lib/line_chart";
import { ScanToolbar, type ScanTraits } from "../lib/scan_toolbar";
import { clamp, el, intOr, renderView, View, type ViewModel } from "../lib/view";

/** The SuperpositionToy widget's traits (Python: `mi_widgets/widgets/superposition.py`, `training.py`). */
export interface SuperpositionTraits extends ScanTraits {
  /** Training runs in the foreground of a cell (`run()`). */
  foreground: boolean;
  n_features: number;
  n_hidden: number;
  n_instances: number;
  /** One value per instance: the probability that a feature is zero. */
  sparsity: number[];
  importance_decay: number;
}

export type SuperpositionModel = ViewModel<SuperpositionTraits>;

/** One decoded `frame` event or reply. */
export interface Frame {
  step: number;
  total: number;
  sparsity: number[];
  importanceDecay: number;
  /** Instances, hidden dimensions, features, loss points. */
  I: number;
  m: number;
  n: number;
  T: number;
  W: Float32Array;
  b: Float32Array;
  importance: Float32Array;
  gram: Float32Array;
  norms: Float32Array;
  dimensionality: Float32Array;
  lossSteps: Int32Array;
  loss: Float32Array;
}

interface Panel {
  element: HTMLDivElement;
  title: HTMLDivElement;
  slider: HTMLInputElement;
  value: HTMLOutputElement;
  plane: HTMLCanvasElement | null;
  gram: HTMLCanvasElement;
  bars: HTMLCanvasElement;
  /** The user is moving this slider: Python's value must not yank it back. */
  dragging: boolean;
}

interface Colors {
  text: string;
  muted: string;
  soft: string;
}

const PLANE_SIZE = 200;
const GRAM_SIZE = 120;
const BARS_HEIGHT = 80;
const BARS_WIDTH = 120;
/** Feature labels are drawn in the plane only while they stay readable. */
const MAX_PLANE_LABELS = 12;

/** "sparsity 0.90 (feature probability 0.10)". */
export function sparsityTitle(s: number): string {
  return `sparsity ${s.toFixed(2)} (feature probability ${(1 - s).toFixed(2)})`;
}

/**
 * Half-width of the plane (and top of the bars) in weight units: at least 1.2, growing at once
 * when a column would leave the picture but shrinking only once it is far too big, so the picture
 * does not jump while the norms wobble.
 */
export function nextExtent(current: number, maxNorm: number): number {
  const target = Math.max(1.2, (Number.isFinite(maxNorm) ? maxNorm : 0) * 1.1);
  if (!(current > 0) || maxNorm * 1.02 > current || target < current * 0.7) return target;
  return current;
}

function array(result: any, name: string, buffers: DataView[], rank: number): DecodedArray {
  const header = result?.[name] as ArrayHeader | undefined;
  if (header === undefined || header === null) throw new Error(`frame has no ${name}`);
  const a = decodeArray(header, buffers);
  if (a.shape.length !== rank)
    throw new Error(`frame ${name} must have ${rank} dimensions, got shape [${a.shape.join(", ")}]`);
  return a;
}

/** Decode and check a frame; throws a message naming the array whose shape is off. */
export function parseFrame(result: any, buffers: DataView[]): Frame {
  const W = array(result, "W", buffers, 3);
  const [I, m, n] = W.shape;
  const lossSteps = array(result, "loss_steps", buffers, 1);
  const T = lossSteps.shape[0];
  const get = (name: string, shape: number[]) => asFloat32(decodeShaped(result, buffers, name, shape, "frame"));
  const arrays = {
    W: asFloat32(W),
    b: get("b", [I, n]),
    importance: get("importance", [n]),
    gram: get("gram", [I, n, n]),
    norms: get("norms", [I, n]),
    dimensionality: get("dimensionality", [I, n]),
    lossSteps: asInt32(lossSteps),
    loss: get("loss", [I, T]),
  };
  const sparsity = Array.isArray(result.sparsity) ? result.sparsity.map(Number) : [];
  if (sparsity.length !== I) throw new Error(`frame has ${sparsity.length} sparsity values for ${I} instances`);
  return {
    step: Number(result.step) || 0,
    total: Number(result.total) || 0,
    sparsity,
    importanceDecay: Number(result.importance_decay),
    I,
    m,
    n,
    T,
    ...arrays,
  };
}

function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) {
    const v = Math.abs(values[i]);
    if (v > m) m = v; // NaN compares false and is skipped
  }
  return m;
}

/** Size a canvas to `w` x `h` CSS px at the device pixel ratio; its 2D context in CSS px, or null (no canvas support). */
function prepare(canvas: HTMLCanvasElement, w: number, h: number): CanvasRenderingContext2D | null {
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  if (ctx === null) return null;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return ctx;
}

/** Width of one feature's bar (px) in the bars canvas. */
function barWidth(n: number): number {
  return clamp(Math.floor(BARS_WIDTH / Math.max(n, 1)), 3, 24);
}

class SuperpositionView extends View<SuperpositionTraits> {
  private readonly toolbar: ScanToolbar;
  private readonly info: HTMLSpanElement;
  private readonly decaySlider: HTMLInputElement;
  private readonly decayValue: HTMLOutputElement;
  private readonly panelBox: HTMLDivElement;
  private readonly chart: LineChart;
  /** Scratch canvas holding W^T W at one pixel per cell, scaled up into each gram canvas. */
  private readonly gramSource: HTMLCanvasElement;

  private sequential: Colormap;
  private diverging: Colormap;
  /** Read from the page's CSS on the first draw in the document, and again after a theme change. */
  private colors: Colors | null = null;
  private panels: Panel[] = [];
  private decayDragging = false;
  /** The last frame drawn (redrawn on theme or layout changes). */
  private last: Frame | null = null;
  private frames = 0;
  private extent = 0;

  constructor(model: SuperpositionModel, host: HTMLElement) {
    super(model, host, { className: "miw-sup", testid: "superposition" });
    this.sequential = sequentialColormap(this.theme);
    this.diverging = divergingColormap(this.theme);
    this.root.dataset.frames = "0";

    this.toolbar = new ScanToolbar({ scope: this.scope, root: this.root, unit: { one: "step", many: "steps" } });
    this.info = el("span", "miw-sup-info", "info");
    this.toolbar.element.append(this.info);

    const decayRow = el("label", "miw-sup-slider-row");
    const decayName = el("span", "miw-sup-slider-name");
    decayName.textContent = "importance decay";
    decayName.title = "feature i has importance decay^i";
    this.decaySlider = this.slider(
      0.1,
      1,
      "importance-decay",
      "importance decay: feature i has importance decay to the power i",
    );
    this.decayValue = el("output", "miw-sup-slider-value");
    decayRow.append(decayName, this.decaySlider, this.decayValue);

    this.panelBox = el("div", "miw-sup-panels");
    this.chart = new LineChart({ title: "loss", logY: true, height: 200, testid: "loss-chart" });
    this.chart.setTheme(this.theme);
    this.scope.onDispose(() => this.chart.dispose());
    this.gramSource = document.createElement("canvas");

    this.root.append(this.toolbar.element, this.banner.element, decayRow, this.panelBox, this.chart.element);

    this.wire();
    this.renderInfo();
    this.syncDecay();
    this.buildPanels();
    this.banner.render();
    followFrames(this.scope, {
      // No weights yet (nothing trained): nothing to draw.
      decode: ({ result, buffers }) => (result?.W === undefined ? null : parseFrame(result, buffers)),
      draw: (frame) => this.show(frame),
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:sparsity", () => this.syncSparsity());
    this.scope.on("change:importance_decay", () => this.syncDecay());
    this.scope.onChange(["n_instances", "n_hidden", "n_features"], () => {
      this.renderInfo();
      this.buildPanels();
    });

    this.decaySlider.addEventListener(
      "input",
      this.scope.guard("view", () => {
        this.decayDragging = true;
        this.decayValue.textContent = Number(this.decaySlider.value).toFixed(2);
      }),
    );
    this.decaySlider.addEventListener(
      "change",
      this.scope.guard("view", () => {
        this.decayDragging = false;
        this.model.set("importance_decay", Number(this.decaySlider.value));
        this.model.save_changes();
      }),
    );
    this.decaySlider.addEventListener("blur", () => (this.decayDragging = false));
  }

  // ---- model state ----------------------------------------------------------------------

  private sparsityList(): number[] {
    const raw = this.model.get("sparsity");
    return Array.isArray(raw) ? raw.map(Number) : [];
  }

  private instances(): number {
    return Math.max(0, intOr(this.model.get("n_instances"), this.sparsityList().length));
  }

  private hidden(): number | null {
    return intOr(this.model.get("n_hidden"), null);
  }

  private renderInfo(): void {
    const n = intOr(this.model.get("n_features"), null);
    const m = this.hidden();
    this.info.textContent = n !== null && m !== null ? `${n} features in ${m} hidden dimensions` : "";
  }

  private syncDecay(): void {
    if (this.decayDragging) return;
    const v = Number(this.model.get("importance_decay"));
    if (!Number.isFinite(v)) return;
    this.decaySlider.value = String(v);
    this.decayValue.textContent = v.toFixed(2);
  }

  private syncSparsity(): void {
    const list = this.sparsityList();
    if (list.length !== this.panels.length && this.model.get("n_instances") === undefined) {
      this.buildPanels();
      return;
    }
    this.panels.forEach((p, i) => {
      if (!p.dragging && i < list.length) this.showSparsity(p, list[i], true);
    });
  }

  private showSparsity(p: Panel, s: number, moveSlider: boolean): void {
    if (moveSlider) p.slider.value = String(s);
    p.value.textContent = s.toFixed(2);
    p.title.textContent = sparsityTitle(s);
  }

  /** Write instance `i`'s sparsity (the others unchanged); Python restarts training. */
  private setSparsity(i: number, s: number): void {
    const list = this.sparsityList();
    const next = this.panels.map((p, j) => (j === i ? s : (list[j] ?? Number(p.slider.value))));
    this.model.set("sparsity", next);
    this.model.save_changes();
  }

  protected applyTheme(theme: Theme): void {
    this.sequential = sequentialColormap(theme);
    this.diverging = divergingColormap(theme);
    this.colors = null;
    this.chart.setTheme(theme);
    if (this.last !== null) this.drawFrame(this.last);
  }

  /** The page's text and line colours for the canvases (kept once the view is in the document). */
  private palette(): Colors {
    if (this.colors !== null) return this.colors;
    const style = getComputedStyle(this.root);
    const v = (name: string, fallback: string) => style.getPropertyValue(name).trim() || fallback;
    const dark = this.theme === "dark";
    const colors = {
      text: v("--miw-fg-body", dark ? "#ddd" : "#333"),
      muted: v("--miw-fg-muted", dark ? "#999" : "#777"),
      soft: v("--miw-border-soft", dark ? "#444" : "#ddd"),
    };
    if (this.root.isConnected) this.colors = colors;
    return colors;
  }

  // ---- frames ---------------------------------------------------------------------------

  private show(frame: Frame): void {
    this.last = frame;
    this.drawFrame(frame);
    this.frames++;
    const d = this.root.dataset;
    d.frames = String(this.frames);
    d.step = String(frame.step);
    d.importanceDecay = frame.importanceDecay.toFixed(2);
  }

  private drawFrame(f: Frame): void {
    let maxNorm = 0;
    for (let k = 0; k < f.I * f.n; k++) if (f.norms[k] > maxNorm) maxNorm = f.norms[k];
    this.extent = nextExtent(this.extent, maxNorm);
    const gramRange = Math.max(1, maxAbs(f.gram));
    let maxImportance = 0;
    for (const v of f.importance) if (v > maxImportance) maxImportance = v;
    this.panels.forEach((p, i) => {
      if (i >= f.I) return;
      p.element.dataset.sparsity = f.sparsity[i].toFixed(2);
      if (p.plane !== null && f.m === 2) this.drawPlane(p.plane, f, i, maxImportance);
      this.drawGram(p.gram, f, i, gramRange);
      this.drawBars(p.bars, f, i);
    });
    this.chart.setSeries(
      f.sparsity.map((s, i) => ({
        label: `sparsity ${s.toFixed(2)}`,
        x: f.lossSteps,
        y: f.loss.subarray(i * f.T, (i + 1) * f.T),
      })),
    );
  }

  /** Each feature's column W[:, i] as an arrow from the origin, least important first so the important ones stay on top. */
  private drawPlane(canvas: HTMLCanvasElement, f: Frame, inst: number, maxImportance: number): void {
    canvas.dataset.extent = this.extent.toFixed(3);
    const ctx = prepare(canvas, PLANE_SIZE, PLANE_SIZE);
    if (ctx === null) return;
    const c = PLANE_SIZE / 2;
    const scale = (c - 12) / this.extent;
    const { text, muted, soft } = this.palette();
    ctx.lineWidth = 1;
    ctx.strokeStyle = soft;
    ctx.beginPath();
    ctx.moveTo(0, c);
    ctx.lineTo(PLANE_SIZE, c);
    ctx.moveTo(c, 0);
    ctx.lineTo(c, PLANE_SIZE);
    ctx.stroke();
    ctx.strokeStyle = muted;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.arc(c, c, scale, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.setLineDash([]);

    const n = f.n;
    const base = inst * 2 * n;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => f.importance[a] - f.importance[b]);
    ctx.lineWidth = 2;
    ctx.font = "10px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    for (const i of order) {
      const x = f.W[base + i];
      const y = f.W[base + n + i];
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      const px = c + x * scale;
      const py = c - y * scale;
      const t = maxImportance > 0 ? f.importance[i] / maxImportance : 1;
      const colour = cssColor(this.sequential, 0.25 + 0.75 * t, 0, 1);
      ctx.strokeStyle = colour;
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.moveTo(c, c);
      ctx.lineTo(px, py);
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(px, py, 3.5, 0, 2 * Math.PI);
      ctx.fill();
      const r = Math.hypot(x, y);
      if (n <= MAX_PLANE_LABELS && r * scale > 8) {
        ctx.fillStyle = text;
        ctx.fillText(String(i), px + (x / r) * 9, py - (y / r) * 9);
      }
    }
  }

  private drawGram(canvas: HTMLCanvasElement, f: Frame, inst: number, range: number): void {
    const n = f.n;
    canvas.dataset.range = range.toFixed(3);
    const cell = clamp(Math.floor(GRAM_SIZE / Math.max(n, 1)), 1, 24);
    const size = Math.max(n * cell, 1);
    const ctx = prepare(canvas, size, size);
    if (ctx === null || n === 0) return;
    const src = this.gramSource;
    if (src.width !== n) src.width = n;
    if (src.height !== n) src.height = n;
    const sctx = src.getContext("2d");
    if (sctx === null) return;
    const image = sctx.createImageData(n, n);
    colorPixels(f.gram.subarray(inst * n * n, (inst + 1) * n * n), this.diverging, -range, range, image.data);
    sctx.putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(src, 0, 0, size, size);
  }

  /** ||W_i|| per feature on the plane's scale (dashed line at 1), filled by dimensionality D_i. */
  private drawBars(canvas: HTMLCanvasElement, f: Frame, inst: number): void {
    const n = f.n;
    const bar = barWidth(n);
    const width = Math.max(n * bar, 40);
    const ctx = prepare(canvas, width, BARS_HEIGHT);
    if (ctx === null) return;
    const top = 4;
    const h = BARS_HEIGHT - top;
    const y = (v: number) => BARS_HEIGHT - (clamp(v, 0, this.extent) / this.extent) * h;
    const gap = bar >= 8 ? 2 : bar >= 5 ? 1 : 0;
    const { muted } = this.palette();
    ctx.lineWidth = 1;
    for (let i = 0; i < n; i++) {
      const norm = f.norms[inst * n + i];
      if (!Number.isFinite(norm)) continue;
      const x = i * bar;
      const yTop = y(norm);
      ctx.fillStyle = cssColor(this.sequential, f.dimensionality[inst * n + i], 0, 1);
      ctx.fillRect(x, yTop, bar - gap, BARS_HEIGHT - yTop);
      if (bar >= 5) {
        ctx.strokeStyle = muted;
        ctx.strokeRect(x + 0.5, yTop + 0.5, bar - gap - 1, BARS_HEIGHT - yTop - 1);
      }
    }
    ctx.strokeStyle = muted;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(0, y(1));
    ctx.lineTo(width, y(1));
    ctx.stroke();
    ctx.setLineDash([]);
  }

  /** Tooltip of a gram or bars canvas for the value under the pointer. */
  private hover(p: Panel, kind: "gram" | "bars", ev: MouseEvent): void {
    const f = this.last;
    const inst = this.panels.indexOf(p);
    const canvas = kind === "gram" ? p.gram : p.bars;
    if (f === null || inst < 0 || inst >= f.I || f.n === 0) return;
    const rect = canvas.getBoundingClientRect();
    const n = f.n;
    if (kind === "gram") {
      const cell = rect.width / n;
      const i = Math.floor((ev.clientY - rect.top) / cell);
      const j = Math.floor((ev.clientX - rect.left) / cell);
      if (i < 0 || j < 0 || i >= n || j >= n) return;
      canvas.title = `W${i}·W${j} = ${f.gram[(inst * n + i) * n + j].toFixed(3)}`;
    } else {
      const i = Math.floor((ev.clientX - rect.left) / barWidth(n));
      if (i < 0 || i >= n) return;
      const k = inst * n + i;
      canvas.title = `feature ${i}: norm ${f.norms[k].toFixed(3)}, dimensionality ${f.dimensionality[k].toFixed(3)}, bias ${f.b[k].toFixed(3)}`;
    }
  }

  // ---- layout ---------------------------------------------------------------------------

  private slider(min: number, max: number, testid: string, label: string): HTMLInputElement {
    const s = el("input", "miw-sup-slider", testid);
    s.type = "range";
    s.min = String(min);
    s.max = String(max);
    s.step = "0.01";
    s.setAttribute("aria-label", label);
    // The slider's own keys (arrows, Page, Home/End) must not also reach the notebook, whose
    // command mode binds the arrows to cell navigation and would swallow them.
    s.addEventListener("keydown", (ev) => ev.stopPropagation());
    return s;
  }

  private canvas(cls: string, testid: string, label: string): HTMLCanvasElement {
    const c = el("canvas", `miw-sup-canvas ${cls}`, testid);
    c.setAttribute("role", "img");
    c.setAttribute("aria-label", label);
    return c;
  }

  private figure(canvas: HTMLCanvasElement, caption: string): HTMLElement {
    const fig = el("figure", "miw-sup-figure");
    const cap = el("figcaption", "miw-sup-caption");
    cap.textContent = caption;
    fig.append(canvas, cap);
    return fig;
  }

  /** One panel per instance, for the current instance count and hidden size. */
  private buildPanels(): void {
    const list = this.sparsityList();
    const withPlane = this.hidden() === 2;
    this.panels = Array.from({ length: this.instances() }, (_, i) => {
      const element = el("div", "miw-sup-panel", `instance-${i}`);
      const title = el("div", "miw-sup-title");
      const row = el("label", "miw-sup-slider-row");
      const name = el("span", "miw-sup-slider-name");
      name.textContent = "sparsity";
      const slider = this.slider(
        0,
        0.99,
        `sparsity-${i}`,
        `sparsity of instance ${i}: the probability that a feature is zero`,
      );
      const value = el("output", "miw-sup-slider-value");
      row.append(name, slider, value);
      const plane = withPlane
        ? this.canvas(
            "miw-sup-plane",
            `feature-plane-${i}`,
            `instance ${i}: each feature's column of W as an arrow in the 2-D hidden space, darker for more important features, with the unit circle`,
          )
        : null;
      const gram = this.canvas(
        "miw-sup-gram",
        `gram-${i}`,
        `instance ${i}: W transpose W, features by features, blue negative, red positive`,
      );
      const bars = this.canvas(
        "miw-sup-bars",
        `bars-${i}`,
        `instance ${i}: norm of each feature's column of W as bar height, coloured by the feature's dimensionality; dashed line at norm 1`,
      );
      // The plane beside a column of the two small pictures keeps a panel narrow enough for three in a row.
      const figures = el("div", "miw-sup-figures");
      const stack = el("div", "miw-sup-stack");
      stack.append(this.figure(gram, "WᵀW"), this.figure(bars, "‖Wᵢ‖, colour: dimensionality"));
      if (plane !== null) figures.append(this.figure(plane, "W columns"));
      figures.append(stack);
      element.append(title, row, figures);
      const p: Panel = { element, title, slider, value, plane, gram, bars, dragging: false };
      slider.addEventListener(
        "input",
        this.scope.guard("view", () => {
          p.dragging = true;
          this.showSparsity(p, Number(slider.value), false);
        }),
      );
      slider.addEventListener(
        "change",
        this.scope.guard("view", () => {
          p.dragging = false;
          this.setSparsity(i, Number(slider.value));
        }),
      );
      slider.addEventListener("blur", () => (p.dragging = false));
      gram.addEventListener(
        "mousemove",
        this.scope.guard("view", (ev: MouseEvent) => this.hover(p, "gram", ev)),
      );
      bars.addEventListener(
        "mousemove",
        this.scope.guard("view", (ev: MouseEvent) => this.hover(p, "bars", ev)),
      );
      this.showSparsity(p, list[i] ?? 0, true);
      return p;
    });
    this.panelBox.replaceChildren(...this.panels.map((p) => p.element));
    if (this.last !== null) this.drawFrame(this.last);
  }
}

/** anywidget entry point: one SuperpositionView per rendered output. */
export default renderView<SuperpositionModel>("SuperpositionToy", (model, host) => new SuperpositionView(model, host));
