/**
 * SAETrainer front end: Start/Stop toolbar with progress, a header with the SAE's shape and its
 * latest metrics as text, and one small live line chart per metric (loss, MSE, L0, fraction of
 * variance explained, dead features).
 *
 * The kernel pushes `frame` events (up to ~30 a second) while it trains, even while the training
 * runs in the foreground of a cell; each frame holds the whole history so far (at most ~1000
 * points per metric), so a dropped frame loses nothing. The `frame` resource (`policy:
 * "coalesce"`) asks for the current state on render and after every `revision` bump (the end of
 * a run). Both kinds go through the same `take`: decoded when they arrive, drawn once per
 * animation frame, latest wins. A frame carries `step`, not `revision`, so the view orders them by
 * (revision, step), a pushed frame stamped with the revision the view had when it came: a fetched
 * frame older than the newest pushed one is dropped (see `FrameOrder`).
 *
 * While the training runs in the foreground of a cell the kernel cannot receive the Stop click, so
 * Stop is disabled and a hint says how to stop early instead.
 */

import "../lib/base.css";
import "./sae_training.css";

import { type ArrayHeader, asFloat32, decodeArray } from "../lib/codec";
import type { Theme } from "../lib/colormap";
import { followFrames } from "../lib/frames";
import { formatValue, LineChart } from "../lib/line_chart";
import { ScanToolbar, type ScanTraits } from "../lib/scan_toolbar";
import { el, intOr, renderView, View, type ViewModel } from "../lib/view";

/** The SAETrainer widget's traits (Python: `mi_widgets/widgets/sae_training.py`, `training.py`). */
export interface SAETrainingTraits extends ScanTraits {
  /** Training runs in the foreground of a cell (`run()`, `train_sae`): Stop cannot reach the kernel. */
  foreground: boolean;
  hook: string;
  d_in: number;
  d_sae: number;
  architecture: string;
}

export type SAETrainingModel = ViewModel<SAETrainingTraits>;

/** One decoded `frame` (event or reply). */
export interface TrainingFrame {
  step: number;
  total: number;
  tokens: number;
  metrics: string[];
  /** Step of each recorded point, [T]. */
  steps: ArrayLike<number>;
  /** Row-major [metrics.length, T]. */
  values: Float32Array;
  points: number;
}

interface MetricSpec {
  title: (dSae: number | null) => string;
  /** Name in the summary line. */
  short: string;
  logY?: boolean;
  /** Default y range, kept while the data stays inside it. */
  yRange?: [number, number];
}

const METRICS: Record<string, MetricSpec> = {
  loss: { title: () => "loss", short: "loss", logY: true },
  mse: { title: () => "mse", short: "MSE", logY: true },
  l0: { title: () => "L0 (active features per token)", short: "L0" },
  fve: { title: () => "variance explained", short: "FVE", yRange: [0, 1] },
  dead: { title: (d) => (d === null ? "dead features" : `dead features (of ${d})`), short: "dead" },
};

/** Charts shown before the first frame says which metrics there are. */
const DEFAULT_METRICS = ["loss", "mse", "l0", "fve", "dead"];

export const FOREGROUND_HINT =
  "training in this cell: interrupt the kernel (■) to stop early; the weights so far are kept";

function spec(name: string): MetricSpec {
  return Object.hasOwn(METRICS, name) ? METRICS[name] : { title: () => name, short: name };
}

/** Decode and check a `frame` result; throws with what is wrong. */
export function parseFrame(result: any, buffers: DataView[]): TrainingFrame {
  if (result === null || typeof result !== "object")
    throw new Error(`frame must be an object, got ${JSON.stringify(result)}`);
  const metrics = Array.isArray(result.metrics) ? result.metrics.map(String) : [];
  const steps = decodeArray(result.steps as ArrayHeader, buffers);
  const values = decodeArray(result.values as ArrayHeader, buffers);
  const T = steps.shape.length === 1 ? steps.shape[0] : -1;
  if (T < 0) throw new Error(`frame steps must have shape [T], got [${steps.shape.join(", ")}]`);
  if (values.shape.length !== 2 || values.shape[0] !== metrics.length || values.shape[1] !== T) {
    throw new Error(
      `frame values must have shape [${metrics.length} metrics, ${T} steps], got [${values.shape.join(", ")}]`,
    );
  }
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  return {
    step: num(result.step),
    total: num(result.total),
    tokens: num(result.tokens),
    metrics,
    steps: steps.data,
    values: asFloat32(values),
    points: T,
  };
}

/** "step 1200 · loss 0.031 · L0 21.4 · FVE 0.93 · dead 3": the latest point of each metric. */
export function summaryText(frame: TrainingFrame): string {
  const T = frame.points;
  let text = `step ${frame.step}`;
  if (T === 0) return text;
  frame.metrics.forEach((name, m) => {
    text += ` · ${spec(name).short} ${formatValue(frame.values[m * T + T - 1])}`;
  });
  return text;
}

/** 1234 -> "1234", 38400 -> "38.4k", 1.2e6 -> "1.2M". */
export function formatCount(n: number): string {
  const a = Math.abs(n);
  const short = (size: number, suffix: string) => `${Number((n / size).toPrecision(3))}${suffix}`;
  if (a >= 1e9) return short(1e9, "B");
  if (a >= 1e6) return short(1e6, "M");
  if (a >= 1e4) return short(1e3, "k");
  return String(Math.round(n));
}

interface Chart {
  name: string;
  chart: LineChart;
  /** The y range last given to the chart (charts with a default range drop it when data leaves it). */
  yRange: [number, number] | null;
}

class SAETrainingView extends View<SAETrainingTraits> {
  private readonly toolbar: ScanToolbar;
  private readonly config: HTMLSpanElement;
  private readonly summary: HTMLSpanElement;
  private readonly tokens: HTMLSpanElement;
  private readonly hint: HTMLDivElement;
  private readonly grid: HTMLDivElement;

  private charts: Chart[] = [];
  /** Latest decoded frame not drawn yet. */
  private framesDrawn = 0;

  constructor(model: SAETrainingModel, host: HTMLElement) {
    super(model, host, { className: "miw-sae", testid: "sae-training" });
    this.root.dataset.frames = "0";
    this.toolbar = new ScanToolbar({ scope: this.scope, root: this.root, unit: { one: "step", many: "steps" } });

    const header = el("div", "miw-sae-header");
    this.config = el("span", "miw-sae-config", "config");
    this.summary = el("span", "miw-sae-summary", "summary");
    this.summary.textContent = "no steps yet";
    this.tokens = el("span", "miw-sae-tokens miw-muted", "tokens");
    header.append(this.config, this.summary, this.tokens);
    this.hint = el("div", "miw-sae-hint", "foreground-hint");
    this.hint.textContent = FOREGROUND_HINT;
    this.hint.hidden = true;
    this.grid = el("div", "miw-sae-charts");
    this.root.append(this.toolbar.element, this.hint, this.banner.element, header, this.grid);

    this.buildCharts(DEFAULT_METRICS);
    this.wire();
    this.renderConfig();
    this.renderForeground();
    this.banner.render();
    followFrames(this.scope, {
      decode: ({ result, buffers }) => parseFrame(result, buffers),
      draw: (frame) => this.draw(frame),
    });
  }

  private wire(): void {
    const { scope } = this;
    scope.onDispose(() => {
      for (const c of this.charts) c.chart.dispose();
    });
    scope.onChange(["hook", "architecture", "d_in", "d_sae"], () => this.renderConfig());
    // Registered after the toolbar's listeners, so this runs after its own render enables Stop.
    scope.onChange(["foreground", "status", "progress"], () => this.renderForeground());
  }

  protected applyTheme(theme: Theme): void {
    for (const c of this.charts) c.chart.setTheme(theme);
  }

  private dSae(): number | null {
    return intOr(this.model.get("d_sae"), null);
  }

  private renderConfig(): void {
    const hook = String(this.model.get("hook") ?? "");
    const arch = String(this.model.get("architecture") ?? "");
    const dIn = intOr(this.model.get("d_in"), null);
    const dSae = this.dSae();
    const shape = dIn === null && dSae === null ? "" : `${dIn ?? "?"} → ${dSae ?? "?"}`;
    this.config.textContent = [hook, arch, shape].filter((s) => s !== "").join(" · ");
    for (const c of this.charts) c.chart.setTitle(spec(c.name).title(dSae));
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

  private buildCharts(names: string[]): void {
    for (const c of this.charts) c.chart.dispose();
    const dSae = this.dSae();
    this.charts = names.map((name) => {
      const s = spec(name);
      const yRange = s.yRange ?? null;
      const chart = new LineChart({
        title: s.title(dSae),
        logY: s.logY,
        yRange: yRange ?? undefined,
        height: 120,
        testid: `chart-${name}`,
      });
      chart.setTheme(this.theme);
      return { name, chart, yRange };
    });
    this.grid.replaceChildren(...this.charts.map((c) => c.chart.element));
  }

  private draw(frame: TrainingFrame): void {
    const { metrics, points: T } = frame;
    if (metrics.length !== this.charts.length || metrics.some((m, i) => m !== this.charts[i].name))
      this.buildCharts(metrics);
    this.charts.forEach((c, m) => {
      const y = frame.values.subarray(m * T, (m + 1) * T);
      const range = spec(c.name).yRange;
      if (range !== undefined) {
        const next = inside(y, range) ? range : null;
        if (next !== c.yRange) {
          c.yRange = next;
          c.chart.setYRange(next);
        }
      }
      c.chart.setSeries([{ label: c.name, x: frame.steps, y }]);
    });
    this.summary.textContent = summaryText(frame);
    this.tokens.textContent = `${formatCount(frame.tokens)} tokens`;
    this.framesDrawn++;
    this.root.dataset.frames = String(this.framesDrawn);
    this.root.dataset.step = String(frame.step);
  }
}

/** Whether every finite value lies in [lo, hi]. */
function inside(values: ArrayLike<number>, [lo, hi]: [number, number]): boolean {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v === 0 && (v < lo || v > hi)) return false; // NaN and inf are not drawn, so they do not count
  }
  return true;
}

/** anywidget entry point: one SAETrainingView per rendered output. */
export default renderView<SAETrainingModel>("SAETrainer", (model, host) => new SAETrainingView(model, host));
