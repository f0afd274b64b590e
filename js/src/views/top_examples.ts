/**
 * TopExamples front end: the scan toolbar (Start/Stop, progress), an overview of every scanned
 * neuron's best activation so far (a canvas grid, filled in as batches finish), and, for the
 * selected neuron, its top contexts as token strips coloured by that neuron's activation
 * (diverging, centred at 0), the maximum's token outlined and its value as text.
 *
 * Data comes by two resources, both `policy: "coalesce"` so that a fast scan's revisions fold into
 * one more fetch: `overview` (float16 maxima) and `examples` {neuron} (the selected neuron's
 * examples in the shared shape of `lib/examples.ts`); both follow the scan's `revision`. Clicking
 * (or Enter on) a neuron writes `selected = {neuron}`; Python's `selected` is followed, and a new
 * selection drops the request for the old one.
 */

import "../lib/base.css";
import "./top_examples.css";

import { type ArrayHeader, asFloat32, asInt32, decodeArray } from "../lib/codec";
import { type Colormap, divergingColormap, sequentialColormap, type Theme, withEmptyCells } from "../lib/colormap";
import { type Example, exampleRow, formatActivation, parseExamples } from "../lib/examples";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import type { Response } from "../lib/protocol";
import type { Resource } from "../lib/resource";
import { ScanToolbar, type ScanTraits } from "../lib/scan_toolbar";
import { setLine } from "../lib/text";
import type { TokenStrip } from "../lib/tokens";
import { el, intOr, renderView, View, type ViewModel } from "../lib/view";

/** The TopExamples widget's traits (Python: `mi_widgets/widgets/top_examples.py`). */
export interface TopExamplesTraits extends ScanTraits {
  hook: string;
  neurons: number[];
  k: number;
  /** Corpus windows (rows) the scan reads. */
  n_windows: number;
  n_tokens: number;
  /** Per neuron ([] = "neuron 12"): `TopExamples.from_samples`' unit names. */
  unit_labels: string[];
  /** What an example's window is called ("window"; "sample" for given samples). */
  window_name: string;
  selected: { neuron: number | null };
}

/** Each neuron's best activation so far (NaN before any) and how many examples it has. */
export interface Overview {
  neurons: number[];
  maxima: Float32Array;
  filled: Int32Array;
}

/** One neuron's top examples, best first. */
export interface NeuronExamples {
  neuron: number;
  examples: Example[];
}

/** Columns of the overview grid: about four times wider than tall, at least 8 (or n) wide. */
export function gridColumns(n: number): number {
  if (n <= 0) return 1;
  return Math.min(n, Math.max(8, Math.ceil(Math.sqrt(4 * n))));
}

/** Overview colour range: [min(0, lowest), highest] of the finite maxima ([0, 1] when none). */
export function overviewRange(maxima: ArrayLike<number>): { lo: number; hi: number } {
  let lo = 0;
  let hi = -Infinity;
  for (let i = 0; i < maxima.length; i++) {
    const v = maxima[i];
    if (!Number.isFinite(v)) continue;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return hi > lo ? { lo, hi } : { lo, hi: lo + 1 };
}

/** Symmetric range around 0 covering every finite activation of the examples (±1 when none). */
export function activationRange(examples: ReadonlyArray<Pick<Example, "activations">>): number {
  let m = 0;
  for (const e of examples) for (const v of e.activations) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
  return m > 0 ? m : 1;
}

/** Decode and check an `overview` reply. */
export function decodeOverview({ result, buffers }: Response): Overview {
  const neurons: number[] = Array.isArray(result?.neurons) ? result.neurons.map(Number) : [];
  const maxima = decodeArray(result.maxima as ArrayHeader, buffers);
  const filled = decodeArray(result.filled as ArrayHeader, buffers);
  if (maxima.shape.length !== 1 || maxima.shape[0] !== neurons.length || filled.shape[0] !== neurons.length) {
    throw new Error(
      `overview must hold one maximum per neuron (${neurons.length}), got shape [${maxima.shape.join(", ")}]`,
    );
  }
  return { neurons, maxima: asFloat32(maxima), filled: asInt32(filled) };
}

/** Decode and check an `examples` reply. */
export function decodeExamples({ result, buffers }: Response): NeuronExamples {
  return { neuron: Number(result?.neuron), examples: parseExamples(result, buffers, "examples reply") };
}

class TopExamplesView extends View<TopExamplesTraits> {
  private readonly toolbar: ScanToolbar;
  private readonly info: HTMLSpanElement;
  private readonly heatmap: CanvasHeatmap;
  private readonly readout: HTMLDivElement;
  private readonly title: HTMLDivElement;
  private readonly list: HTMLDivElement;
  private readonly examples: Resource<{ neuron: number }, NeuronExamples>;

  /** The overview's scale (neurons without examples yet as background) and the examples' (diverging). */
  private overviewCmap: Colormap;
  private stripCmap: Colormap;
  private overview: (Overview & { revision: number }) | null = null;
  private shown: (NeuronExamples & { revision: number }) | null = null;
  private strips: TokenStrip[] = [];
  private hovered: Cell | null = null;
  private cols = 1;

  constructor(model: ViewModel<TopExamplesTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-topex", testid: "top-examples" });
    this.overviewCmap = withEmptyCells(sequentialColormap(this.theme), this.theme);
    this.stripCmap = divergingColormap(this.theme);
    this.toolbar = new ScanToolbar({ scope: this.scope, root: this.root });
    this.info = el("span", "miw-topex-info", "info");
    this.toolbar.element.append(this.info);

    this.heatmap = new CanvasHeatmap(this.overviewCmap, {
      label: "neurons by their best activation so far: arrows move, Enter shows a neuron's top examples",
    });
    this.heatmap.focusElement.dataset.testid = "overview";
    this.readout = el("div", "miw-line miw-topex-readout", "readout");
    this.readout.setAttribute("role", "status");

    const panel = el("div", "miw-topex-panel");
    this.title = el("div", "miw-topex-title", "examples-title");
    this.list = el("div", "miw-topex-list", "examples");
    panel.append(this.title, this.list);

    this.root.append(this.toolbar.element, this.banner.element, this.heatmap.element, this.readout, panel);
    this.scope.onDispose(() => this.heatmap.dispose());

    this.wire();
    this.renderInfo();
    this.layout();
    this.banner.render();
    this.renderSelection();
    this.renderExamples();
    this.scope.resource({
      method: "overview",
      policy: "coalesce",
      decode: decodeOverview,
      draw: (data, { revision }) => {
        this.overview = { ...data, revision };
        this.root.dataset.revision = String(revision);
        this.draw();
      },
    });
    this.examples = this.scope.resource({
      method: "examples",
      policy: "coalesce",
      params: () => {
        const neuron = this.selected();
        return neuron === null ? null : { neuron };
      },
      decode: decodeExamples,
      draw: (data, { revision, params }) => {
        if (data.neuron !== params.neuron) return; // a reply naming another neuron
        this.shown = { ...data, revision };
        this.renderExamples();
      },
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:selected", () => {
      this.renderSelection();
      this.renderExamples();
      void this.examples.fetch(); // new params supersede: the old neuron's reply is never drawn
    });
    this.scope.on("change:neurons", () => {
      this.layout();
      this.draw();
    });
    this.scope.onChange(["hook", "n_windows", "n_tokens", "k", "window_name"], () => this.renderInfo());
    this.scope.onChange(["unit_labels"], () => {
      this.renderReadout();
      this.renderExamples();
    });
    this.heatmap.onHover(
      this.scope.guard("view", (cell: Cell | null) => {
        this.hovered = cell;
        this.renderReadout();
      }),
    );
    this.heatmap.onClick(this.scope.guard("view", (cell: Cell) => this.click(cell)));
    this.heatmap.onClear(this.scope.guard("view", () => this.select(null)));
    this.heatmap.onPaint((tag) => {
      if (tag !== null) this.root.dataset.painted = tag;
    });
  }

  // ---- model state ----------------------------------------------------------------------

  private neurons(): number[] {
    const raw: unknown = this.model.get("neurons");
    return Array.isArray(raw) ? raw.filter((n) => Number.isInteger(n)) : [];
  }

  private selected(): number | null {
    const raw = (this.model.get("selected") ?? {}) as { neuron?: unknown };
    return intOr(raw.neuron, null);
  }

  private select(neuron: number | null): void {
    this.model.set("selected", { neuron });
    this.model.save_changes();
  }

  /** The neuron drawn in an overview cell, or null past the end. */
  private neuronAt(cell: Cell): number | null {
    const i = cell.row * this.cols + cell.col;
    const neurons = this.neurons();
    return cell.col < this.cols && i < neurons.length ? neurons[i] : null;
  }

  private cellOf(neuron: number | null): Cell | null {
    const i = neuron === null ? -1 : this.neurons().indexOf(neuron);
    return i < 0 ? null : { row: Math.floor(i / this.cols), col: i % this.cols };
  }

  private click(cell: Cell): void {
    const neuron = this.neuronAt(cell);
    if (neuron !== null) this.select(neuron);
  }

  protected applyTheme(theme: Theme): void {
    this.overviewCmap = withEmptyCells(sequentialColormap(theme), theme);
    this.stripCmap = divergingColormap(theme);
    this.draw();
    this.paintStrips();
  }

  /** A neuron's given name (`unit_labels`), else "neuron 12". */
  private unitName(neuron: number): string {
    const labels = this.model.get("unit_labels");
    const name = Array.isArray(labels) ? labels[this.neurons().indexOf(neuron)] : undefined;
    return typeof name === "string" ? name : `neuron ${neuron}`;
  }

  private windowName(): string {
    const name = this.model.get("window_name");
    return typeof name === "string" && name !== "" ? name : "window";
  }

  // ---- rendering ------------------------------------------------------------------------

  private renderInfo(): void {
    const n = this.neurons().length;
    const windows = intOr(this.model.get("n_windows"), 0);
    const tokens = intOr(this.model.get("n_tokens"), 0);
    this.info.textContent = `${n} neurons of ${String(this.model.get("hook") ?? "?")} · top ${intOr(this.model.get("k"), 0)} · ${windows.toLocaleString("en-US")} ${this.windowName()}s, ${tokens.toLocaleString("en-US")} tokens`;
  }

  /** Grid shape and labels for the current neurons. */
  private layout(): void {
    const neurons = this.neurons();
    this.cols = gridColumns(neurons.length);
    const rows = Math.ceil(neurons.length / this.cols);
    const rowLabels = Array.from({ length: rows }, (_, r) => String(neurons[r * this.cols]));
    const colLabels = Array.from({ length: this.cols }, (_, c) => `+${c}`);
    this.heatmap.setLabels(rowLabels, colLabels);
    this.heatmap.element.style.height = `${Math.min(320, Math.max(110, rows * 28 + 70))}px`;
  }

  /** Paint the overview grid (cells past the last neuron and neurons without examples yet are empty). */
  private draw(): void {
    const neurons = this.neurons();
    const rows = Math.ceil(neurons.length / this.cols);
    const values = new Float32Array(rows * this.cols).fill(NaN);
    const o = this.overview;
    if (o !== null && o.neurons.length === neurons.length) values.set(o.maxima);
    const { lo, hi } = overviewRange(values);
    this.heatmap.setColormap(this.overviewCmap, lo, hi);
    this.heatmap.setData(rows > 0 ? values : null, rows, this.cols, o === null ? null : String(o.revision));
    this.heatmap.setLocked(this.cellOf(this.selected()));
    this.renderReadout();
  }

  private renderSelection(): void {
    const neuron = this.selected();
    this.root.dataset.selected = neuron === null ? "" : String(neuron);
    this.heatmap.setLocked(this.cellOf(neuron));
    this.renderReadout();
  }

  /** The hovered neuron, else the selected one, else a hint. */
  private renderReadout(): void {
    const hovered = this.hovered === null ? null : this.neuronAt(this.hovered);
    const neuron = hovered ?? this.selected();
    const o = this.overview;
    if (neuron === null) {
      setLine(
        this.readout,
        "Hover a neuron for its best activation; click (or Enter) to see its top examples (ex.selected).",
      );
      return;
    }
    const i = o === null ? -1 : o.neurons.indexOf(neuron);
    const best = i < 0 ? NaN : o!.maxima[i];
    const count = i < 0 ? 0 : o!.filled[i];
    setLine(
      this.readout,
      `${this.unitName(neuron)}: ${Number.isFinite(best) ? `max ${formatActivation(best)} · ${count} example${count === 1 ? "" : "s"}` : "no examples yet"}`,
    );
  }

  private renderExamples(): void {
    const neuron = this.selected();
    const shown = this.shown !== null && this.shown.neuron === neuron ? this.shown : null;
    this.strips = [];
    if (neuron === null) {
      this.title.textContent = "No neuron selected.";
      this.list.replaceChildren();
      delete this.root.dataset.examples;
      return;
    }
    if (shown === null) {
      this.title.textContent = `${this.unitName(neuron)}: loading…`;
      this.list.replaceChildren();
      delete this.root.dataset.examples;
      return;
    }
    const m = activationRange(shown.examples);
    this.title.textContent =
      shown.examples.length === 0
        ? `${this.unitName(neuron)}: no examples yet`
        : `${this.unitName(neuron)}: top ${shown.examples.length} example${shown.examples.length === 1 ? "" : "s"} · colour: activation, −${formatActivation(m)} … 0 … +${formatActivation(m)}`;
    const rows = shown.examples.map((e, i) => {
      const place = `${this.windowName()} ${e.window}, token ${e.position}`;
      const where = el("span", "miw-line miw-topex-where");
      setLine(where, place);
      const { row, strip } = exampleRow(e, i, {
        rowClass: "miw-topex-example",
        valueClass: "miw-topex-value",
        unit: this.unitName(neuron),
        value: formatActivation(e.value),
        wrapValue: (value) => {
          const meta = el("div", "miw-topex-meta");
          meta.append(value, where);
          return meta;
        },
      });
      // Hovering a token shows it and its activation in place of the example's window and position.
      strip.onHover(
        this.scope.guard("view", (t: number | null) => {
          setLine(
            where,
            t === null ? place : (quote) => `${quote(e.tokens[t])}: activation ${formatActivation(e.activations[t])}`,
          );
        }),
      );
      this.strips.push(strip);
      return row;
    });
    this.list.replaceChildren(...rows);
    this.paintStrips();
    this.root.dataset.examples = `${neuron}:${shown.revision}:${shown.examples.length}`;
  }

  private paintStrips(): void {
    const shown = this.shown;
    if (shown === null || shown.neuron !== this.selected()) return;
    const m = activationRange(shown.examples);
    this.strips.forEach((strip, i) => {
      strip.invalidateColors();
      strip.setWeights(shown.examples[i].activations, this.stripCmap, -m, m);
    });
  }
}

/** anywidget entry point: one TopExamplesView per rendered output. */
export default renderView<ViewModel<TopExamplesTraits>>(
  "TopExamples",
  (model, host) => new TopExamplesView(model, host),
);
