/**
 * Grokking front end: a live view of a one-layer transformer learning modular addition (Python:
 * `mi_widgets/widgets/grokking.py`, a `TrainingWidget` like SAETrainer).
 *
 * Start/Stop toolbar; a header (step / total, current phase, key frequencies); four live line
 * charts (train/test loss with the phases as labelled bands, train/test accuracy, the progress
 * measures restricted/excluded loss with the test loss at the checks, the weight norm); the
 * embedding's Fourier spectrum over training as a heatmap (rows: frequencies 1..K, columns: the
 * checks) and, as bars, at the selected check, key frequencies highlighted; a checkpoint slider.
 *
 * Frames come as in SAETrainer (`followFrames`: pushed `frame` events and the coalesced `frame`
 * resource, drawn at most once per animation frame). Each frame is the whole history so far, so a
 * redraw only hands new arrays to the canvases: no DOM is rebuilt, and the heatmap is recoloured
 * only when the spectrum changed (a new check), not on every frame.
 *
 * The checkpoint slider is a native range input over the checks 0..C-1. Moving it writes the
 * `selected_step` trait (that check's step); "latest" writes -1, which follows the newest check.
 * Python may write `selected_step` too: the slider follows (a step between checks picks the
 * nearest). The selected check's spectrum fills the bars and its measures the readout; while a
 * check is pinned (selected_step >= 0) every line chart shows a dashed marker at its step.
 *
 * Test hooks (data-testid): grokking (root: data-frames, data-step, data-checks, data-phase,
 * data-selected-step, data-following, plus the toolbar's data-status/data-done and data-foreground),
 * start-button, stop-button, status, progress, foreground-hint, error, grokking-header,
 * grokking-step, grokking-config, grokking-phase, grokking-keyfreqs (data-frequencies),
 * grokking-loss, grokking-accuracy, grokking-measures, grokking-weight-norm (LineCharts: data-points,
 * data-bands, data-markers; `<id>-readout`, `<id>-canvas`), grokking-spectrum (the heatmap's focus
 * element: data-rows, data-cols, data-origin-x/y, data-cell-width/height), grokking-spectrum-axes,
 * grokking-spectrum-readout,
 * grokking-spectrum-bars (BarChart: data-count, data-highlight, data-selected; `<id>-readout`,
 * `<id>-canvas`), grokking-slider, grokking-latest (aria-pressed), grokking-check-readout.
 */

import "../lib/base.css";
import "./grokking.css";

import { BarChart } from "../lib/bar_chart";
import { type ArrayHeader, asFloat32, decodeArray, decodeShaped } from "../lib/codec";
import { type Colormap, sequentialColormap, type Theme } from "../lib/colormap";
import { followFrames } from "../lib/frames";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import { type ChartBand, formatValue, LineChart, nearestIndex } from "../lib/line_chart";
import { ScanToolbar, type ScanTraits } from "../lib/scan_toolbar";
import { setLine } from "../lib/text";
import { button, el, intOr, renderView, View, type ViewModel } from "../lib/view";

/** The Grokking widget's traits (Python: `mi_widgets/widgets/grokking.py`, `training.py`). */
export interface GrokkingTraits extends ScanTraits {
  /** Training runs in the foreground of a cell: Stop cannot reach the kernel. */
  foreground: boolean;
  p: number;
  train_frac: number;
  device: string;
  /** Current key frequencies, largest first. */
  key_frequencies: number[];
  /** "" | "memorisation" | "circuit formation" | "cleanup" | "generalised". */
  phase: string;
  /** The check shown (its step), written by the slider and by Python; -1 follows the newest check. */
  selected_step: number;
}

export type GrokkingModel = ViewModel<GrokkingTraits>;

export interface Phase {
  name: string;
  start: number;
  /** null: still going. */
  end: number | null;
}

/** One decoded `frame` (event or reply). */
export interface GrokkingFrame {
  step: number;
  total: number;
  p: number;
  /** Names of the rows of `values`: train_loss, test_loss, train_acc, test_acc. */
  metrics: string[];
  /** Logged steps, ascending, [T]. */
  steps: ArrayLike<number>;
  /** Row-major [metrics.length, T]. */
  values: Float32Array;
  points: number;
  /** Names of the rows of `checkValues`: restricted_loss, excluded_loss, weight_norm, key_fraction. */
  checkMetrics: string[];
  /** Steps of the progress-measure checks, ascending, [C]. */
  checkSteps: ArrayLike<number>;
  /** Row-major [checkMetrics.length, C]. */
  checkValues: Float32Array;
  checks: number;
  /** Row-major [C, K + 1]: column 0 the constant component, column k frequency k. */
  spectrum: Float32Array;
  /** Number of frequencies, (p - 1) / 2. */
  K: number;
  keyFrequencies: number[];
  phases: Phase[];
}

export const FOREGROUND_HINT =
  "training in this cell: interrupt the kernel (■) to stop early; the weights so far are kept";

/** How the check readout names each progress measure. */
const CHECK_NAMES: Record<string, string> = {
  restricted_loss: "restricted loss",
  excluded_loss: "excluded loss",
  weight_norm: "weight norm",
  key_fraction: "key fraction",
};

const checkName = (name: string) => (Object.hasOwn(CHECK_NAMES, name) ? CHECK_NAMES[name] : name.replace(/_/g, " "));

const EMPTY = new Float32Array(0);

const finite = (v: unknown, fallback = 0) => (typeof v === "number" && Number.isFinite(v) ? v : fallback);

function names(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : [];
}

function ints(v: unknown): number[] {
  return Array.isArray(v) ? v.filter((k): k is number => typeof k === "number" && Number.isInteger(k)) : [];
}

/** A 1-D array of the frame. */
function vector(result: Record<string, unknown>, buffers: DataView[], name: string): ArrayLike<number> {
  const header = result[name] as ArrayHeader | null | undefined;
  if (header === undefined || header === null) throw new Error(`frame has no ${name}`);
  const a = decodeArray(header, buffers);
  if (a.shape.length !== 1) throw new Error(`frame ${name} must have shape [n], got [${a.shape.join(", ")}]`);
  return a.data;
}

function parsePhases(raw: unknown): Phase[] {
  if (!Array.isArray(raw)) return [];
  return raw
    .filter((p) => p !== null && typeof p === "object")
    .map((p) => ({
      name: String(p.name ?? ""),
      start: finite(p.start),
      end: typeof p.end === "number" && Number.isFinite(p.end) ? p.end : null,
    }));
}

/** Decode and check a `frame` result; throws with what is wrong. */
export function parseFrame(result: any, buffers: DataView[]): GrokkingFrame {
  if (result === null || typeof result !== "object")
    throw new Error(`frame must be an object, got ${JSON.stringify(result)}`);
  const metrics = names(result.metrics);
  const checkMetrics = names(result.check_metrics);
  const steps = vector(result, buffers, "steps");
  const checkSteps = vector(result, buffers, "check_steps");
  const T = steps.length;
  const C = checkSteps.length;
  const values = decodeShaped(result, buffers, "values", [metrics.length, T], "frame");
  const checkValues = decodeShaped(result, buffers, "check_values", [checkMetrics.length, C], "frame");
  const header = result.spectrum as ArrayHeader | null | undefined;
  if (header === undefined || header === null) throw new Error("frame has no spectrum");
  const spectrum = decodeArray(header, buffers);
  if (spectrum.shape.length !== 2 || spectrum.shape[0] !== C || spectrum.shape[1] < 1) {
    throw new Error(`frame spectrum must have shape [${C} checks, K + 1], got [${spectrum.shape.join(", ")}]`);
  }
  return {
    step: finite(result.step),
    total: finite(result.total),
    p: finite(result.p),
    metrics,
    steps,
    values: asFloat32(values),
    points: T,
    checkMetrics,
    checkSteps,
    checkValues: asFloat32(checkValues),
    checks: C,
    spectrum: asFloat32(spectrum),
    K: spectrum.shape[1] - 1,
    keyFrequencies: ints(result.key_frequencies),
    phases: parsePhases(result.phases),
  };
}

/** Row `name` of a row-major [names.length, n] table, or an empty array when there is none. */
export function row(table: Float32Array, rowNames: readonly string[], n: number, name: string): Float32Array {
  const r = rowNames.indexOf(name);
  return r < 0 ? EMPTY : table.subarray(r * n, (r + 1) * n);
}

/** The check shown for `selected` (a step, or -1 for the newest): the nearest check's index; -1 when there are none. */
export function checkIndex(checkSteps: ArrayLike<number>, selected: number): number {
  if (checkSteps.length === 0) return -1;
  if (selected < 0) return checkSteps.length - 1;
  return nearestIndex(checkSteps, selected);
}

/** `values` (one per logged step) read at the logged step nearest each of `at`; NaN when nothing is logged. */
export function valuesAt(steps: ArrayLike<number>, values: ArrayLike<number>, at: ArrayLike<number>): Float32Array {
  const out = new Float32Array(at.length);
  for (let i = 0; i < at.length; i++) {
    const j = nearestIndex(steps, at[i]);
    out[i] = j >= 0 && j < values.length ? values[j] : NaN;
  }
  return out;
}

/**
 * The spectrum [C, K + 1] without its constant column, transposed to [K, C] (row k - 1 is frequency
 * k, column c is check c), and its largest finite value (0 when none).
 */
export function spectrumImage(spectrum: Float32Array, C: number, K: number): { data: Float32Array; max: number } {
  const data = new Float32Array(K * C);
  let max = 0;
  for (let c = 0; c < C; c++) {
    const base = c * (K + 1);
    for (let k = 1; k <= K; k++) {
      const v = spectrum[base + k];
      data[(k - 1) * C + c] = v;
      if (v > max && v - v === 0) max = v;
    }
  }
  return { data, max };
}

/** "key frequencies 21, 20, 7", or a placeholder when there are none yet. */
export function keyFrequencyText(keys: readonly number[]): string {
  return keys.length === 0 ? "no key frequencies yet" : `key frequencies ${keys.join(", ")}`;
}

/** The readout of check `i`: "check 3 of 40 · step 750 · restricted loss 4.1 · ...". */
export function checkText(frame: GrokkingFrame, i: number, following: boolean): string {
  const C = frame.checks;
  if (i < 0 || i >= C) return "no checks yet";
  let text = `${following ? "latest check" : `check ${i + 1} of ${C}`} · step ${frame.checkSteps[i]}`;
  frame.checkMetrics.forEach((name, m) => {
    text += ` · ${checkName(name)} ${formatValue(frame.checkValues[m * C + i])}`;
  });
  return text;
}

function sameValues(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

class GrokkingView extends View<GrokkingTraits> {
  private readonly toolbar: ScanToolbar;
  private readonly hint: HTMLDivElement;
  private readonly stepText: HTMLSpanElement;
  private readonly config: HTMLSpanElement;
  private readonly phaseText: HTMLSpanElement;
  private readonly keyText: HTMLSpanElement;
  private readonly loss: LineChart;
  private readonly accuracy: LineChart;
  private readonly measures: LineChart;
  private readonly weightNorm: LineChart;
  private readonly charts: LineChart[];
  private readonly heatmap: CanvasHeatmap;
  /** What the heatmap's axes are (its own labels show only once cells are big enough). */
  private readonly spectrumAxes: HTMLDivElement;
  private readonly spectrumReadout: HTMLDivElement;
  private readonly bars: BarChart;
  private readonly slider: HTMLInputElement;
  private readonly latest: HTMLButtonElement;
  private readonly checkReadout: HTMLDivElement;

  private cmap: Colormap;
  /** Largest value of the heatmap's picture (its colour range is [0, max]). */
  private spectrumMax = 1;
  /** The frame drawn last (null before the first). */
  private last: GrokkingFrame | null = null;
  /** Check index whose spectrum the bars show (-1: none). */
  private barsIndex = -1;
  /** Frequency picked on the bars (index k - 1), shown as a row on the heatmap; null for none. */
  private frequency: number | null = null;
  private framesDrawn = 0;

  constructor(model: GrokkingModel, host: HTMLElement) {
    super(model, host, { className: "miw-grok", testid: "grokking" });
    this.root.dataset.frames = "0";
    this.toolbar = new ScanToolbar({ scope: this.scope, root: this.root, unit: { one: "step", many: "steps" } });
    this.hint = el("div", "miw-grok-hint", "foreground-hint");
    this.hint.textContent = FOREGROUND_HINT;
    this.hint.hidden = true;

    const header = el("div", "miw-grok-header", "grokking-header");
    this.stepText = el("span", "miw-grok-step", "grokking-step");
    this.stepText.textContent = "no steps yet";
    this.phaseText = el("span", "miw-grok-phase", "grokking-phase");
    this.keyText = el("span", "miw-grok-keys", "grokking-keyfreqs");
    this.config = el("span", "miw-grok-config miw-muted", "grokking-config");
    header.append(this.stepText, this.phaseText, this.keyText, this.config);

    const chart = (title: string, testid: string, opts: { logY?: boolean; yRange?: [number, number] } = {}) => {
      const c = new LineChart({ title, testid, height: 130, ...opts });
      c.setTheme(this.theme);
      return c;
    };
    this.loss = chart("loss", "grokking-loss", { logY: true });
    this.accuracy = chart("accuracy", "grokking-accuracy", { yRange: [0, 1] });
    this.measures = chart("progress measures", "grokking-measures", { logY: true });
    this.weightNorm = chart("weight norm", "grokking-weight-norm");
    this.charts = [this.loss, this.accuracy, this.measures, this.weightNorm];
    const grid = el("div", "miw-grok-charts");
    grid.append(...this.charts.map((c) => c.element));

    this.cmap = sequentialColormap(this.theme);
    this.heatmap = new CanvasHeatmap(this.cmap, {
      label: "embedding spectrum over training: frequency rows, check columns",
    });
    this.heatmap.focusElement.dataset.testid = "grokking-spectrum";
    const heatTitle = el("div", "miw-grok-title");
    heatTitle.textContent = "embedding spectrum over training";
    this.spectrumAxes = el("div", "miw-line miw-grok-readout", "grokking-spectrum-axes");
    setLine(this.spectrumAxes, "no checks yet");
    this.spectrumReadout = el("div", "miw-line miw-grok-readout", "grokking-spectrum-readout");
    const heatPanel = el("div", "miw-grok-heat");
    heatPanel.append(heatTitle, this.spectrumAxes, this.heatmap.element, this.spectrumReadout);
    this.bars = new BarChart({
      title: "embedding spectrum at the selected check",
      testid: "grokking-spectrum-bars",
      height: 160,
      xOffset: 1,
      xLabel: "frequency",
    });
    this.bars.setTheme(this.theme);
    const spectrum = el("div", "miw-grok-spectrum");
    spectrum.append(heatPanel, this.bars.element);

    const check = el("div", "miw-grok-check");
    const label = el("label", "miw-grok-slider-row");
    const name = el("span", "miw-grok-slider-name");
    name.textContent = "checkpoint";
    this.slider = el("input", "miw-grok-slider", "grokking-slider");
    this.slider.type = "range";
    this.slider.min = "0";
    this.slider.max = "0";
    this.slider.step = "1";
    this.slider.value = "0";
    this.slider.disabled = true;
    this.slider.setAttribute("aria-label", "checkpoint: the check whose spectrum and measures are shown");
    this.latest = button("latest", "miw-button miw-button-small", "grokking-latest");
    this.latest.title = "Follow the newest check";
    label.append(name, this.slider);
    this.checkReadout = el("div", "miw-line miw-grok-readout", "grokking-check-readout");
    const sliderRow = el("div", "miw-grok-slider-bar");
    sliderRow.append(label, this.latest);
    check.append(sliderRow, this.checkReadout);

    this.root.append(this.toolbar.element, this.hint, this.banner.element, header, grid, check, spectrum);

    this.wire();
    this.renderConfig();
    this.renderHeader();
    this.renderForeground();
    this.renderSelection();
    this.banner.render();
    followFrames(this.scope, {
      decode: ({ result, buffers }) => parseFrame(result, buffers),
      draw: (frame) => this.draw(frame),
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    const { scope } = this;
    scope.onDispose(() => {
      for (const c of this.charts) c.dispose();
      this.bars.dispose();
      this.heatmap.dispose();
    });
    scope.onChange(["p", "train_frac", "device"], () => this.renderConfig());
    scope.onChange(["phase", "key_frequencies"], () => this.renderHeader());
    scope.on("change:selected_step", () => this.renderSelection());
    // Registered after the toolbar's listeners, so this runs after its own render enables Stop.
    scope.onChange(["foreground", "status", "progress"], () => this.renderForeground());

    // The slider's own keys (arrows, Page, Home/End) must not also reach the notebook's command mode.
    this.slider.addEventListener("keydown", (ev) => ev.stopPropagation());
    this.slider.addEventListener(
      "input",
      scope.guard("view", () => {
        const f = this.last;
        const i = Number(this.slider.value);
        if (f !== null && Number.isInteger(i) && i >= 0 && i < f.checks) this.select(f.checkSteps[i]);
      }),
    );
    this.latest.addEventListener(
      "click",
      scope.guard("view", () => this.select(-1)),
    );
    this.heatmap.onClick(
      scope.guard("view", (cell: Cell) => {
        const f = this.last;
        if (f !== null && cell.col < f.checks) this.select(f.checkSteps[cell.col]);
      }),
    );
    this.heatmap.onHover(scope.guard("view", (cell: Cell | null) => this.renderSpectrumReadout(cell)));
    this.heatmap.onClear(scope.guard("view", () => this.pickFrequency(null)));
    this.bars.onSelect(scope.guard("view", (i: number) => this.pickFrequency(i)));
    this.bars.onClear(scope.guard("view", () => this.pickFrequency(null)));
  }

  protected applyTheme(theme: Theme): void {
    for (const c of this.charts) c.setTheme(theme);
    this.bars.setTheme(theme);
    this.cmap = sequentialColormap(theme);
    this.heatmap.setColormap(this.cmap, 0, this.spectrumMax);
  }

  // ---- traits ---------------------------------------------------------------------------

  /** The check to show: a step, or -1 for the newest. */
  private selectedStep(): number {
    return intOr(this.model.get("selected_step"), -1) as number;
  }

  private select(step: number): void {
    if (step === this.selectedStep()) return;
    this.model.set("selected_step", step);
    this.model.save_changes();
  }

  private keyFrequencies(): number[] {
    const fromTrait = ints(this.model.get("key_frequencies"));
    return fromTrait.length > 0 ? fromTrait : (this.last?.keyFrequencies ?? []);
  }

  private phase(): string {
    const fromTrait = String(this.model.get("phase") ?? "");
    if (fromTrait !== "") return fromTrait;
    const phases = this.last?.phases ?? [];
    return phases.length > 0 && phases[phases.length - 1].end === null ? phases[phases.length - 1].name : "";
  }

  private renderConfig(): void {
    const p = intOr(this.model.get("p"), null) ?? (this.last !== null && this.last.p > 0 ? this.last.p : null);
    const frac = Number(this.model.get("train_frac"));
    const device = String(this.model.get("device") ?? "");
    const parts = [
      p === null ? "" : `p = ${p}`,
      Number.isFinite(frac) && frac > 0 ? `${Number((frac * 100).toPrecision(3))}% of pairs to train` : "",
      device,
    ];
    this.config.textContent = parts.filter((s) => s !== "").join(" · ");
  }

  /** Phase and key frequencies: from the traits, else from the latest frame. */
  private renderHeader(): void {
    const phase = this.phase();
    this.phaseText.textContent = phase === "" ? "no phase yet" : `phase: ${phase}`;
    this.root.dataset.phase = phase;
    const keys = this.keyFrequencies();
    const list = keys.join(",");
    if (list === this.keyText.dataset.frequencies) return; // unchanged: no bar redraw
    this.keyText.textContent = keyFrequencyText(keys);
    this.keyText.dataset.frequencies = list;
    this.bars.setHighlight(keys.map((k) => k - 1).filter((i) => i >= 0));
  }

  /** Stop cannot reach a kernel busy running the training cell: disable it and say how to stop. */
  private renderForeground(): void {
    const foreground = this.model.get("foreground") === true;
    this.toolbar.render(); // Stop as the status says, then overridden below
    this.hint.hidden = !foreground;
    this.root.dataset.foreground = String(foreground);
    if (foreground) {
      this.toolbar.stopButton.disabled = true;
      this.toolbar.stopButton.title = FOREGROUND_HINT;
    } else {
      this.toolbar.stopButton.removeAttribute("title");
    }
  }

  // ---- frames ---------------------------------------------------------------------------

  private draw(frame: GrokkingFrame): void {
    const prev = this.last;
    this.last = frame;
    const { points: T, checks: C, steps, checkSteps } = frame;
    const metric = (name: string) => row(frame.values, frame.metrics, T, name);
    const measure = (name: string) => row(frame.checkValues, frame.checkMetrics, C, name);
    const testLoss = metric("test_loss");

    const phases: ChartBand[] = frame.phases.map((p) => ({ from: p.start, to: p.end, label: p.name }));
    const unlabelled = phases.map((b) => ({ from: b.from, to: b.to }));
    this.loss.setBands(phases);
    for (const c of [this.accuracy, this.measures, this.weightNorm]) c.setBands(unlabelled);
    this.loss.setSeries([
      { label: "train", x: steps, y: metric("train_loss") },
      { label: "test", x: steps, y: testLoss },
    ]);
    this.accuracy.setSeries([
      { label: "train", x: steps, y: metric("train_acc") },
      { label: "test", x: steps, y: metric("test_acc") },
    ]);
    this.measures.setSeries([
      { label: "restricted", x: checkSteps, y: measure("restricted_loss") },
      { label: "excluded", x: checkSteps, y: measure("excluded_loss") },
      { label: "test", x: checkSteps, y: valuesAt(steps, testLoss, checkSteps) },
    ]);
    this.weightNorm.setSeries([{ label: "weight norm", x: checkSteps, y: measure("weight_norm") }]);

    const spectrumChanged =
      prev === null ||
      prev.K !== frame.K ||
      !sameValues(prev.checkSteps, checkSteps) ||
      !sameValues(prev.spectrum, frame.spectrum);
    if (spectrumChanged) this.drawSpectrum(frame, prev);

    this.stepText.textContent = `step ${frame.step} / ${frame.total}`;
    if (prev === null || prev.p !== frame.p) this.renderConfig();
    this.renderHeader();
    this.renderSelection(spectrumChanged);
    this.framesDrawn++;
    const d = this.root.dataset;
    d.frames = String(this.framesDrawn);
    d.step = String(frame.step);
    d.checks = String(C);
  }

  /** The heatmap: frequencies 1..K down, checks across, coloured over [0, largest]. */
  private drawSpectrum(frame: GrokkingFrame, prev: GrokkingFrame | null): void {
    const { checks: C, K } = frame;
    const { data, max } = spectrumImage(frame.spectrum, C, K);
    this.spectrumMax = max > 0 ? max : 1;
    if (prev === null || prev.K !== K || !sameValues(prev.checkSteps, frame.checkSteps)) {
      const rows = Array.from({ length: K }, (_, k) => String(k + 1));
      const cols = Array.from(frame.checkSteps, (s) => String(s));
      this.heatmap.setLabels(rows, cols);
      setLine(
        this.spectrumAxes,
        C === 0 || K === 0
          ? "no checks yet"
          : `rows: frequency 1–${K}, top to bottom · columns: ${C} checks, step ${frame.checkSteps[0]}–${frame.checkSteps[C - 1]}`,
      );
    }
    this.heatmap.setColormap(this.cmap, 0, this.spectrumMax);
    this.heatmap.setData(C > 0 && K > 0 ? data : null, K, C);
    const fe = this.heatmap.focusElement.dataset;
    fe.rows = String(K);
    fe.cols = String(C);
  }

  /**
   * Show the selected check everywhere: the slider, the "latest" toggle, the readout, the bars
   * (redrawn only when the check or the spectrum changed), the heatmap's column and the markers.
   */
  private renderSelection(spectrumChanged = false): void {
    const f = this.last;
    const selected = this.selectedStep();
    const following = selected < 0;
    const C = f?.checks ?? 0;
    const i = f === null ? -1 : checkIndex(f.checkSteps, selected);
    const step = f !== null && i >= 0 ? f.checkSteps[i] : null;

    this.slider.max = String(Math.max(0, C - 1));
    this.slider.disabled = C === 0;
    if (i >= 0 && this.slider.value !== String(i)) this.slider.value = String(i);
    this.slider.setAttribute("aria-valuetext", step === null ? "no checks yet" : `step ${step}`);
    this.latest.setAttribute("aria-pressed", String(following));
    this.latest.classList.toggle("miw-grok-following", following);
    setLine(this.checkReadout, f === null ? "no checks yet" : checkText(f, i, following));

    if (f !== null && (spectrumChanged || i !== this.barsIndex)) {
      this.barsIndex = i;
      const K = f.K;
      this.bars.setData(i >= 0 ? f.spectrum.subarray(i * (K + 1) + 1, (i + 1) * (K + 1)) : EMPTY);
    }
    this.bars.setTitle(step === null ? "embedding spectrum" : `embedding spectrum at step ${step}`);
    this.heatmap.highlight(this.frequency, i >= 0 ? i : null);
    const markers = following || step === null ? [] : [{ x: step }];
    for (const c of this.charts) c.setMarkers(markers);

    const d = this.root.dataset;
    d.selectedStep = step === null ? "" : String(step);
    d.following = String(following);
  }

  /** A frequency picked on the bars (index k - 1; null: none): outlined there, a row on the heatmap. */
  private pickFrequency(index: number | null): void {
    this.frequency = index;
    this.bars.setSelected(index);
    const f = this.last;
    const i = f === null ? -1 : checkIndex(f.checkSteps, this.selectedStep());
    this.heatmap.highlight(index, i >= 0 ? i : null);
  }

  private renderSpectrumReadout(cell: Cell | null): void {
    const f = this.last;
    if (f === null || cell === null || cell.col >= f.checks || cell.row >= f.K) {
      setLine(this.spectrumReadout, "");
      return;
    }
    const v = f.spectrum[cell.col * (f.K + 1) + cell.row + 1];
    setLine(this.spectrumReadout, `step ${f.checkSteps[cell.col]} · frequency ${cell.row + 1}: ${formatValue(v)}`);
  }
}

/** anywidget entry point: one GrokkingView per rendered output. */
export default renderView<GrokkingModel>("Grokking", (model, host) => new GrokkingView(model, host));
