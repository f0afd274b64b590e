/**
 * FourierView front end (Python: `mi_widgets/widgets/fourier_view.py`, `mw.FourierView(model)`): how a
 * modular-addition model (a + b mod p) works in Fourier space.
 *
 * 1. A header: "P = 113 · key frequencies 21, 20, 7, 5, 42 · they explain 79.5% of the logits".
 * 2. Two BarCharts over frequencies k = 1..K (column 0 of the replies, the constant, left out): the
 *    embedding's Fourier norms and each frequency's share of the logits; key frequencies in the accent
 *    colour, the selected one outlined. A click, Enter or an arrow key on a chart sets
 *    `selected.frequency`; Escape sets it to null (none).
 * 3. Neuron clusters (neurons grouped by dominant frequency) as buttons: a click selects the frequency.
 *    For the selected frequency, its neurons (best first, at most NEURON_BUTTONS) as buttons that set
 *    `selected.neuron`.
 * 4. Two (a, b) CanvasHeatmaps: the selected neuron's activation and the selected head's attention from
 *    "=" to a (head buttons set `selected.head`). Hover reads "a, b: value" on both maps at once; a click
 *    (or Enter on a map's keyboard cursor) sets `selected.a` and `selected.b`.
 * 5. A LineChart over c of the logits and the key-frequency prediction for the selected (a, b), the answer
 *    marked, and the correlation of the two (over all pairs) as text.
 *
 * The one selection trait, `selected` = {frequency, neuron, head, a, b}, is written by both sides: the view
 * always writes the whole dict (a copy with one key changed, `model.set` + `save_changes`) and redraws from
 * it whenever it changes, whoever changed it (only the parts whose keys moved).
 *
 * Requests: `summary` (one resource), `grid` and `logits`. The two maps both read `grid`, and a resource
 * owns its method's requests (a newer one supersedes the older), so ONE `grid` resource serves both:
 * its params are the first wanted grid not yet drawn for this revision (the neuron's, then the head's),
 * and each draw asks for the next. Replies are cached per revision, so going back is instant.
 *
 * Keyboard: Tab reaches every bar chart (arrows/Home/End select a frequency, Enter, Escape clears),
 * the cluster, neuron and head buttons (Enter/Space; arrows/Home/End move between the buttons of a row)
 * and both heatmaps (arrows move a cursor, Enter selects the pair, +/-/0 zoom).
 *
 * data-testid (for end-to-end tests):
 *   fourier                      root; data-frequency (0: none), data-neuron (-1: none), data-head,
 *                                data-pair ("a,b" or ""),
 *                                data-revision (of the summary drawn), data-loading while a request is out
 *   fourier-header               the header line
 *   fourier-embed-bars           BarChart of embedding norms (…-canvas: focusable bars, …-readout)
 *   fourier-logit-bars           BarChart of the share of the logits (…-canvas, …-readout)
 *   fourier-clusters             the cluster row; each button fourier-cluster (data-frequency, aria-pressed)
 *   fourier-neurons              the neuron row; each button fourier-neuron (data-neuron, aria-pressed);
 *                                fourier-neurons-caption above it
 *   fourier-neuron-panel         the neuron map's box (data-index, data-revision, data-stale)
 *   fourier-neuron-grid          the neuron heatmap's focusable, clickable surface
 *   fourier-neuron-readout       its one-line readout
 *   fourier-attention-panel      the attention map's box (data-index, data-revision, data-stale)
 *   fourier-attention-grid       the attention heatmap's focusable, clickable surface
 *   fourier-attention-readout    its one-line readout
 *   fourier-heads                the head row; each button fourier-head (data-head, aria-pressed)
 *   fourier-logits-chart         LineChart of logits and prediction over c (…-canvas, …-readout)
 *   fourier-logits-caption       the pair, the answer and its logit/prediction/rank
 *   fourier-correlation          "prediction vs logits: r = 0.987 over all pairs"
 *   error, error-dismiss         the ErrorBanner
 */

import "../lib/base.css";
import "./fourier_view.css";

import { BarChart } from "../lib/bar_chart";
import { type ArrayHeader, asFloat32, asInt32, decodeArray } from "../lib/codec";
import { type Colormap, divergingColormap, sequentialColormap, type Theme } from "../lib/colormap";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import { formatValue, LineChart, type Series } from "../lib/line_chart";
import type { Response } from "../lib/protocol";
import type { Resource } from "../lib/resource";
import { setLine } from "../lib/text";
import { type BaseTraits, button, el, renderView, View, type ViewModel } from "../lib/view";

/** The FourierView widget's traits (Python: `mi_widgets/widgets/fourier_view.py`). */
export interface FourierTraits extends BaseTraits {
  p: number;
  n_neurons: number;
  n_heads: number;
  /** Largest first. */
  key_frequencies: number[];
  /** Share of the logits the key frequencies explain, 0..1. */
  key_fraction: number;
  /** Written by the view and by Python. */
  selected: FourierSelected;
}

/** The `selected` trait: what the view and Python have picked. */
export interface FourierSelected {
  /** 1..K, or null for none. */
  frequency: number | null;
  /** 0..n_neurons-1, or null for none. */
  neuron: number | null;
  /** 0..n_heads-1. */
  head: number;
  /** The pair (a, b), both 0..p-1. */
  a: number;
  b: number;
}

export interface Cluster {
  /** Dominant frequency 1..K; 0 = dead (no activation variance). */
  frequency: number;
  count: number;
  mean_fraction: number;
}

/** A decoded `summary` reply. */
export interface FourierSummary {
  p: number;
  keyFrequencies: number[];
  keyFraction: number;
  /** [K + 1]: column 0 the constant. */
  embedNorms: Float32Array;
  /** [K + 1]: column 0 (the constant) is 0. */
  logitFractions: Float32Array;
  /** [n_neurons]: 1..K, 0 = dead. */
  neuronFrequency: Int32Array;
  /** [n_neurons]: share of the neuron's variance its frequency explains. */
  neuronFraction: Float32Array;
  /** Largest group first. */
  clusters: Cluster[];
}

export type GridKind = "neuron" | "attention";

export interface GridParams extends Record<string, unknown> {
  kind: GridKind;
  index: number;
}

/** A decoded `grid` reply: values [p, p], row a, column b. */
export interface FourierGrid {
  kind: GridKind;
  index: number;
  p: number;
  values: Float32Array;
  min: number;
  max: number;
  label: string;
}

/** A decoded `logits` reply. */
export interface FourierLogits {
  a: number;
  b: number;
  answer: number;
  /** [p] over c. */
  logits: Float32Array;
  /** [p] the key-frequency model's logits. */
  prediction: Float32Array;
  /** Pearson r over all pairs and c; null when not known. */
  correlation: number | null;
}

/** Most neuron buttons shown for one frequency (best first). */
export const NEURON_BUTTONS = 64;
const HEATMAP_HEIGHT = 300;

// ---- pure helpers -------------------------------------------------------------------------

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

function brief(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 120 ? `${s.slice(0, 119)}…` : s;
}

/** Decode `result[name]` as a 1-D array of `length` values (any length when null). */
function vector(
  result: Record<string, unknown>,
  buffers: ReadonlyArray<DataView>,
  name: string,
  length: number | null,
  what: string,
) {
  const header = result[name];
  if (!isRecord(header) || !Array.isArray(header.shape)) {
    throw new Error(`${what} ${name} must be an array header, got ${brief(header)}`);
  }
  const a = decodeArray(header as unknown as ArrayHeader, buffers);
  if (a.shape.length !== 1 || (length !== null && a.shape[0] !== length)) {
    const want = length === null ? "1-D" : `shape [${length}]`;
    throw new Error(`${what} ${name} must have ${want}, got shape [${a.shape.join(", ")}]`);
  }
  return a;
}

/** Decode and check a `summary` reply. */
export function decodeSummary({ result, buffers }: Response): FourierSummary {
  if (!isRecord(result)) throw new Error(`summary reply must be an object, got ${brief(result)}`);
  const p = result.p;
  if (!isInt(p) || p < 3) throw new Error(`summary p must be a whole number of at least 3, got ${brief(p)}`);
  const K = Math.floor((p - 1) / 2);
  const embedNorms = asFloat32(vector(result, buffers, "embed_norms", K + 1, "summary"));
  const logitFractions = asFloat32(vector(result, buffers, "logit_fractions", K + 1, "summary"));
  const neuronFrequency = asInt32(vector(result, buffers, "neuron_frequency", null, "summary"));
  const neuronFraction = asFloat32(vector(result, buffers, "neuron_fraction", neuronFrequency.length, "summary"));
  const keys = result.key_frequencies;
  if (!Array.isArray(keys) || !keys.every(isInt)) {
    throw new Error(`summary key_frequencies must be a list of whole numbers, got ${brief(keys)}`);
  }
  const rawClusters = result.clusters ?? [];
  if (!Array.isArray(rawClusters)) throw new Error(`summary clusters must be a list, got ${brief(rawClusters)}`);
  const clusters = rawClusters.map((c, i) => {
    const mean = isRecord(c) ? c.mean_fraction : undefined;
    // A NaN mean (no neurons to average) may come as null.
    if (!isRecord(c) || !isInt(c.frequency) || !isInt(c.count) || !(typeof mean === "number" || mean === null)) {
      throw new Error(`summary clusters[${i}] must be {frequency, count, mean_fraction}, got ${brief(c)}`);
    }
    return { frequency: c.frequency, count: c.count, mean_fraction: typeof mean === "number" ? mean : NaN };
  });
  const fraction = result.key_fraction;
  return {
    p,
    keyFrequencies: keys as number[],
    keyFraction: typeof fraction === "number" ? fraction : NaN,
    embedNorms,
    logitFractions,
    neuronFrequency,
    neuronFraction,
    clusters,
  };
}

/** Decode and check a `grid` reply (the kind and index it was asked for, when given). */
export function decodeGrid({ result, buffers }: Response, asked: GridParams | null = null): FourierGrid {
  if (!isRecord(result)) throw new Error(`grid reply must be an object, got ${brief(result)}`);
  const kind = result.kind;
  if (kind !== "neuron" && kind !== "attention") {
    throw new Error(`grid kind must be "neuron" or "attention", got ${brief(kind)}`);
  }
  const index = result.index;
  if (!isInt(index)) throw new Error(`grid index must be a whole number, got ${brief(index)}`);
  if (asked !== null && (asked.kind !== kind || asked.index !== index)) {
    throw new Error(`grid reply is for ${kind} ${index}, but ${asked.kind} ${asked.index} was asked for`);
  }
  const header = result.values;
  if (!isRecord(header) || !Array.isArray(header.shape)) {
    throw new Error(`grid values must be an array header, got ${brief(header)}`);
  }
  const a = decodeArray(header as unknown as ArrayHeader, buffers);
  if (a.shape.length !== 2 || a.shape[0] !== a.shape[1]) {
    throw new Error(`grid values must have shape [p, p], got [${a.shape.join(", ")}]`);
  }
  const num = (v: unknown) => (typeof v === "number" ? v : NaN);
  return {
    kind,
    index,
    p: a.shape[0],
    values: asFloat32(a),
    min: num(result.min),
    max: num(result.max),
    label: typeof result.label === "string" ? result.label : `${kind} ${index}`,
  };
}

/** Decode and check a `logits` reply. */
export function decodeLogits({ result, buffers }: Response, p: number | null = null): FourierLogits {
  if (!isRecord(result)) throw new Error(`logits reply must be an object, got ${brief(result)}`);
  const { a, b, answer } = result;
  if (!isInt(a) || !isInt(b) || !isInt(answer)) {
    throw new Error(`logits a, b and answer must be whole numbers, got ${brief({ a, b, answer })}`);
  }
  const logits = asFloat32(vector(result, buffers, "logits", p, "logits"));
  const prediction = asFloat32(vector(result, buffers, "prediction", logits.length, "logits"));
  const r = result.correlation;
  return {
    a,
    b,
    answer,
    logits,
    prediction,
    correlation: typeof r === "number" && Number.isFinite(r) ? r : null,
  };
}

/** 0.7953 -> "79.5%"; "—" when not a number. */
export function formatPercent(v: number, digits = 1): string {
  return Number.isFinite(v) ? `${(v * 100).toFixed(digits)}%` : "—";
}

/** "P = 113 · key frequencies 21, 20, 7 · they explain 79.5% of the logits". */
export function headerText(p: number | null, keys: readonly number[], fraction: number): string {
  const parts = [`P = ${p ?? "?"}`];
  parts.push(keys.length === 0 ? "no key frequencies yet" : `key frequencies ${keys.join(", ")}`);
  if (keys.length > 0 && Number.isFinite(fraction)) parts.push(`they explain ${formatPercent(fraction)} of the logits`);
  return parts.join(" · ");
}

/** The neurons whose dominant frequency is `k`, best explained first (ties by index), at most `limit`. */
export function clusterNeurons(
  frequency: ArrayLike<number>,
  fraction: ArrayLike<number>,
  k: number,
  limit = NEURON_BUTTONS,
): { neurons: number[]; total: number } {
  const all: number[] = [];
  for (let i = 0; i < frequency.length; i++) if (frequency[i] === k) all.push(i);
  const score = (i: number) => (Number.isFinite(fraction[i]) ? fraction[i] : -Infinity);
  all.sort((x, y) => score(y) - score(x) || x - y);
  return { neurons: all.slice(0, limit), total: all.length };
}

/** What a view reads of `selected`: each key checked on its own, a bad or missing one read as none. */
export interface Selection {
  frequency: number | null;
  neuron: number | null;
  head: number | null;
  pair: [number, number] | null;
}

/**
 * Read the `selected` trait leniently (Python validates it): whole numbers inside the known ranges
 * (`k`: K, `neurons`, `heads`, `p`; null when not known yet), else null. Frequency 0 is none.
 */
export function parseSelected(
  raw: unknown,
  limits: { k?: number | null; neurons?: number | null; heads?: number | null; p?: number | null } = {},
): Selection {
  const r = isRecord(raw) ? raw : {};
  const within = (v: unknown, lo: number, n: number | null | undefined): number | null =>
    isInt(v) && v >= lo && (n === null || n === undefined || v < n + (lo === 1 ? 1 : 0)) ? v : null;
  const a = within(r.a, 0, limits.p);
  const b = within(r.b, 0, limits.p);
  return {
    frequency: within(r.frequency, 1, limits.k),
    neuron: within(r.neuron, 0, limits.neurons),
    head: within(r.head, 0, limits.heads),
    pair: a === null || b === null ? null : [a, b],
  };
}

/** Rank (1 = largest) of `values[i]` among the finite values. */
export function rankOf(values: ArrayLike<number>, i: number): number {
  const v = values[i];
  let rank = 1;
  for (let j = 0; j < values.length; j++) if (values[j] > v) rank++;
  return rank;
}

/** A colour range for a grid: [min, max] of the reply, symmetric on a diverging map when it spans 0. */
export function gridScale(g: FourierGrid): { diverging: boolean; lo: number; hi: number } {
  let lo = g.min;
  let hi = g.max;
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    lo = Infinity;
    hi = -Infinity;
    for (const v of g.values) {
      if (v - v !== 0) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo > hi) [lo, hi] = [0, 1];
  }
  if (lo < 0 && hi > 0) {
    const m = Math.max(-lo, hi);
    return { diverging: true, lo: -m, hi: m };
  }
  if (g.kind === "attention") lo = Math.min(0, lo); // weights: 0 recedes into the background
  if (!(hi > lo)) hi = lo + 1;
  return { diverging: false, lo, hi };
}

// ---- the view -----------------------------------------------------------------------------

interface MapPanel {
  kind: GridKind;
  element: HTMLDivElement;
  caption: HTMLDivElement;
  heatmap: CanvasHeatmap;
  readout: HTMLDivElement;
  /** The grid drawn, and the revision it was computed for. */
  grid: (FourierGrid & { revision: number }) | null;
  /** The p the labels were set for. */
  labelled: number;
}

/** The type of `LineChart.setMarkers` (an optional API: used where the chart has it). */
type MarkerChart = { setMarkers?: (markers: Array<{ x: number; label?: string }>) => void };

class FourierView extends View<FourierTraits> {
  private readonly header: HTMLDivElement;
  private readonly embedBars: BarChart;
  private readonly logitBars: BarChart;
  private readonly clusterRow: HTMLDivElement;
  private readonly neuronCaption: HTMLDivElement;
  private readonly neuronRow: HTMLDivElement;
  private readonly headRow: HTMLDivElement;
  private readonly neuronMap: MapPanel;
  private readonly attentionMap: MapPanel;
  private readonly logitsChart: LineChart;
  private readonly logitsCaption: HTMLDivElement;
  private readonly correlation: HTMLDivElement;

  private summary: (FourierSummary & { revision: number }) | null = null;
  private logits: FourierLogits | null = null;
  /** The frequency the neuron buttons were built for (null: none yet). */
  private neuronsFor: { k: number; summary: FourierSummary | null } | null = null;
  private hovered: Cell | null = null;
  private builtHeads = -1;
  /** The selection last drawn, to redraw only what moved. */
  private shown: Selection = { frequency: null, neuron: null, head: null, pair: null };
  private readonly gridResource: Resource<GridParams, FourierGrid>;
  /** Grids whose request failed ("revision|kind:index"): skipped until the selection moves, so one
   * failing map does not keep the other from loading. */
  private readonly failedGrids = new Set<string>();

  constructor(model: ViewModel<FourierTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-fourier", testid: "fourier" });

    this.header = el("div", "miw-line miw-fourier-header", "fourier-header");
    this.header.setAttribute("role", "heading");
    this.header.setAttribute("aria-level", "3");

    const bars = el("div", "miw-fourier-bars");
    this.embedBars = new BarChart({
      title: "Embedding: norm of each Fourier frequency",
      testid: "fourier-embed-bars",
      xOffset: 1,
      xLabel: "k",
    });
    this.logitBars = new BarChart({
      title: "Logits: share of each frequency",
      testid: "fourier-logit-bars",
      xOffset: 1,
      xLabel: "k",
      format: (v) => formatPercent(v),
    });
    for (const chart of [this.embedBars, this.logitBars]) {
      chart.onSelect(this.scope.guard("view", (i: number) => this.setFrequency(i + 1)));
      chart.onClear(this.scope.guard("view", () => this.setFrequency(0)));
      bars.append(chart.element);
      this.scope.onDispose(() => chart.dispose());
    }

    const clusters = el("div", "miw-fourier-section");
    const clusterTitle = el("div", "miw-fourier-title");
    clusterTitle.textContent = "Neuron clusters (by dominant frequency)";
    this.clusterRow = el("div", "miw-fourier-buttons", "fourier-clusters");
    this.clusterRow.setAttribute("role", "group");
    this.clusterRow.setAttribute("aria-label", "neuron clusters: pick a frequency");
    this.neuronCaption = el("div", "miw-line miw-fourier-muted", "fourier-neurons-caption");
    this.neuronRow = el("div", "miw-fourier-buttons", "fourier-neurons");
    this.neuronRow.setAttribute("role", "group");
    this.neuronRow.setAttribute("aria-label", "neurons of the selected frequency");
    clusters.append(clusterTitle, this.clusterRow, this.neuronCaption, this.neuronRow);

    this.neuronMap = this.mapPanel("neuron", "Neuron activation over (a, b)");
    this.attentionMap = this.mapPanel("attention", "Attention from “=” to a, over (a, b)");
    this.headRow = el("div", "miw-fourier-buttons", "fourier-heads");
    this.headRow.setAttribute("role", "group");
    this.headRow.setAttribute("aria-label", "attention head");
    this.attentionMap.caption.after(this.headRow);
    const maps = el("div", "miw-fourier-maps");
    maps.append(this.neuronMap.element, this.attentionMap.element);

    const logitsBox = el("div", "miw-fourier-section miw-fourier-logits");
    this.logitsChart = new LineChart({ title: "Logits over c", testid: "fourier-logits-chart", xLabel: "c" });
    this.scope.onDispose(() => this.logitsChart.dispose());
    this.logitsCaption = el("div", "miw-line", "fourier-logits-caption");
    this.correlation = el("div", "miw-line miw-fourier-muted", "fourier-correlation");
    logitsBox.append(this.logitsChart.element, this.logitsCaption, this.correlation);

    this.root.append(this.banner.element, this.header, bars, clusters, maps, logitsBox);
    for (const row of [this.clusterRow, this.neuronRow, this.headRow]) this.arrowKeys(row);

    this.wire();
    this.shown = this.selection();
    this.applyTheme(this.theme);
    this.renderHeader();
    this.renderClusters();
    this.renderHeads();
    this.renderSelection();
    this.renderLogits();
    this.banner.render();

    this.scope.resource({
      method: "summary",
      decode: decodeSummary,
      draw: (summary, { revision }) => {
        this.summary = { ...summary, revision };
        this.drawSummary();
      },
    });
    this.gridResource = this.scope.resource<GridParams, FourierGrid>({
      method: "grid",
      lazy: true, // fetched by fetchGrids, which watches for failures
      cache: 16,
      params: () => this.nextGrid(),
      decode: (reply) => decodeGrid(reply),
      draw: (grid, { revision }) => {
        const panel = grid.kind === "neuron" ? this.neuronMap : this.attentionMap;
        panel.grid = { ...grid, revision };
        this.paintMap(panel);
        this.fetchGrids(); // the other map's grid, if it still wants one
      },
    });
    this.fetchGrids();
    this.scope.resource({
      method: "logits",
      refetchOn: ["selected", "p"],
      cache: 8,
      params: () => {
        const pair = this.pair();
        return pair === null ? null : { a: pair[0], b: pair[1] };
      },
      decode: (reply) => decodeLogits(reply, this.p()),
      draw: (logits) => {
        this.logits = logits;
        this.renderLogits();
      },
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    // Registered before the resources, so this runs before their own refetch on a revision change.
    this.scope.on("change:revision", () => this.fetchGrids());
    this.scope.onChange(["n_heads", "n_neurons"], () => {
      this.renderHeads();
      this.selectionChanged(true);
    });
    this.scope.onChange(["p", "key_frequencies", "key_fraction"], () => {
      this.renderHeader();
      this.renderHighlights();
    });
    this.scope.on("change:selected", () => this.selectionChanged(false));
  }

  /** Redraw what shows the parts of `selected` that moved (`all`: every part). */
  private selectionChanged(all: boolean): void {
    const now = this.selection();
    const was = this.shown;
    this.shown = now;
    const moved = (key: keyof Selection) => all || JSON.stringify(now[key]) !== JSON.stringify(was[key]);
    this.renderSelection();
    if (moved("frequency")) this.renderNeurons();
    if (moved("head")) this.renderHeads();
    if (moved("neuron")) this.paintMap(this.neuronMap);
    if (moved("head")) this.paintMap(this.attentionMap);
    if (moved("neuron") || moved("head")) {
      this.failedGrids.clear(); // the user moved: try again what failed
      this.fetchGrids();
    }
    if (moved("pair")) this.renderLogits();
  }

  /** ArrowLeft/ArrowRight/Home/End move the focus between the buttons of `row`. */
  private arrowKeys(row: HTMLElement): void {
    const onKey = (ev: KeyboardEvent) => {
      const buttons = [...row.querySelectorAll<HTMLButtonElement>("button")];
      const at = buttons.indexOf(ev.target as HTMLButtonElement);
      if (at < 0 || buttons.length === 0) return;
      let next: number;
      if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") next = Math.max(0, at - 1);
      else if (ev.key === "ArrowRight" || ev.key === "ArrowDown") next = Math.min(buttons.length - 1, at + 1);
      else if (ev.key === "Home") next = 0;
      else if (ev.key === "End") next = buttons.length - 1;
      else return;
      buttons[next].focus();
      ev.preventDefault();
      ev.stopPropagation(); // not the notebook's command-mode arrows
    };
    row.addEventListener("keydown", onKey);
    this.scope.onDispose(() => row.removeEventListener("keydown", onKey));
  }

  private mapPanel(kind: GridKind, title: string): MapPanel {
    const element = el("div", "miw-fourier-map", `fourier-${kind}-panel`);
    const caption = el("div", "miw-fourier-title");
    caption.textContent = title;
    const heatmap = new CanvasHeatmap(sequentialColormap(this.theme), {
      label: `${title}: a in rows, b in columns; arrows move, Enter selects the pair`,
    });
    heatmap.element.style.height = `${HEATMAP_HEIGHT}px`;
    heatmap.focusElement.dataset.testid = `fourier-${kind}-grid`;
    const readout = el("div", "miw-line miw-fourier-readout", `fourier-${kind}-readout`);
    readout.setAttribute("role", "status");
    const axes = el("div", "miw-fourier-muted");
    axes.textContent = "rows: a · columns: b";
    element.append(caption, axes, heatmap.element, readout);
    heatmap.onHover(this.scope.guard("view", (cell: Cell | null) => this.hover(cell)));
    heatmap.onClick(this.scope.guard("view", (cell: Cell) => this.setPair(cell.row, cell.col)));
    this.scope.onDispose(() => heatmap.dispose());
    return { kind, element, caption, heatmap, readout, grid: null, labelled: -1 };
  }

  // ---- model state ----------------------------------------------------------------------

  private count(name: "p" | "n_neurons" | "n_heads"): number | null {
    const v = this.model.get(name);
    return isInt(v) && v > 0 ? v : null;
  }

  private p(): number | null {
    return this.count("p") ?? this.summary?.p ?? null;
  }

  /** K = (p - 1) // 2, the highest frequency; null while p is unknown. */
  private maxFrequency(): number | null {
    const p = this.p();
    return p === null ? null : Math.floor((p - 1) / 2);
  }

  private keyFrequencies(): number[] {
    const v = this.model.get("key_frequencies");
    if (Array.isArray(v) && v.length > 0 && v.every(isInt)) return v;
    return this.summary?.keyFrequencies ?? [];
  }

  private keyFraction(): number {
    const v = this.model.get("key_fraction");
    return typeof v === "number" && Number.isFinite(v) ? v : (this.summary?.keyFraction ?? NaN);
  }

  private selection(): Selection {
    return parseSelected(this.model.get("selected"), {
      k: this.maxFrequency(),
      neurons: this.count("n_neurons"),
      heads: this.count("n_heads"),
      p: this.p(),
    });
  }

  private frequency(): number | null {
    return this.selection().frequency;
  }

  private neuron(): number | null {
    return this.selection().neuron;
  }

  private head(): number | null {
    return this.selection().head;
  }

  private pair(): [number, number] | null {
    return this.selection().pair;
  }

  /** Write `selected`: the whole dict as it is, with `change` applied. */
  private write(change: Partial<FourierSelected>): void {
    const raw = this.model.get("selected") as unknown;
    const current = isRecord(raw) ? raw : {};
    const next = { frequency: null, neuron: null, head: 0, a: 0, b: 0, ...current, ...change } as FourierSelected;
    this.model.set("selected", next);
    this.model.save_changes();
  }

  private setFrequency(k: number): void {
    this.write({ frequency: k > 0 ? k : null });
  }

  private setPair(a: number, b: number): void {
    this.write({ a, b });
  }

  /**
   * Ask for the next wanted grid. When the request settles with that grid still wanted, not drawn and
   * nothing else out, it failed (the banner says why): skip it, so the other map still loads.
   */
  private fetchGrids(): void {
    const resource = this.gridResource as Resource<GridParams, FourierGrid> | undefined;
    if (resource === undefined) return; // not declared yet (the constructor's first fetch comes then)
    const asked = this.nextGrid();
    const revision = this.revision();
    void resource.fetch().then(() => {
      if (asked === null || resource.loading) return;
      const now = this.nextGrid();
      if (now === null || now.kind !== asked.kind || now.index !== asked.index || this.revision() !== revision) return;
      this.failedGrids.add(`${revision}|${asked.kind}:${asked.index}`);
      this.fetchGrids();
    });
  }

  private revision(): number {
    return Number(this.model.get("revision")) || 0;
  }

  /** The first wanted grid that is not drawn for the current revision (and did not fail): the neuron's, then the head's. */
  private nextGrid(): GridParams | null {
    const revision = this.revision();
    const wanted: GridParams[] = [];
    const n = this.neuron();
    if (n !== null) wanted.push({ kind: "neuron", index: n });
    const h = this.head();
    if (h !== null) wanted.push({ kind: "attention", index: h });
    for (const w of wanted) {
      const g = (w.kind === "neuron" ? this.neuronMap : this.attentionMap).grid;
      if (this.failedGrids.has(`${revision}|${w.kind}:${w.index}`)) continue;
      if (g === null || g.index !== w.index || g.revision < revision) return w;
    }
    return null;
  }

  protected applyTheme(theme: Theme): void {
    this.embedBars.setTheme(theme);
    this.logitBars.setTheme(theme);
    this.logitsChart.setTheme(theme);
    this.paintMap(this.neuronMap);
    this.paintMap(this.attentionMap);
  }

  // ---- rendering ------------------------------------------------------------------------

  private renderHeader(): void {
    setLine(this.header, headerText(this.p(), this.keyFrequencies(), this.keyFraction()));
  }

  private drawSummary(): void {
    const s = this.summary;
    if (s === null) return;
    this.root.dataset.revision = String(s.revision);
    this.embedBars.setData(s.embedNorms.subarray(1));
    this.logitBars.setData(s.logitFractions.subarray(1));
    this.renderHeader();
    this.renderHighlights();
    this.renderClusters();
    this.renderSelection();
    this.renderNeurons();
  }

  private renderHighlights(): void {
    const indices = this.keyFrequencies().map((k) => k - 1);
    this.embedBars.setHighlight(indices);
    this.logitBars.setHighlight(indices);
  }

  /** One button per cluster (rebuilt only when a summary comes); the dead group is text. */
  private renderClusters(): void {
    const s = this.summary;
    if (s === null) {
      const wait = el("span", "miw-fourier-muted");
      wait.textContent = "Loading the clusters…";
      this.clusterRow.replaceChildren(wait);
      return;
    }
    const items = s.clusters.map((c) => {
      const text = `k ${c.frequency} · ${c.count} neuron${c.count === 1 ? "" : "s"} · ${formatPercent(c.mean_fraction, 0)}`;
      if (c.frequency === 0) {
        const dead = el("span", "miw-fourier-dead");
        dead.textContent = `dead · ${c.count} neuron${c.count === 1 ? "" : "s"}`;
        dead.title = "neurons with no activation variance over (a, b)";
        return dead;
      }
      const b = button(text, "miw-button miw-fourier-cluster", "fourier-cluster");
      b.dataset.frequency = String(c.frequency);
      b.title = `frequency ${c.frequency}: ${c.count} neurons; on average ${formatPercent(c.mean_fraction)} of a neuron's variance`;
      b.addEventListener(
        "click",
        this.scope.guard("view", () => this.setFrequency(c.frequency)),
      );
      return b;
    });
    if (items.length === 0) {
      const none = el("span", "miw-fourier-muted");
      none.textContent = "no clusters";
      items.push(none);
    }
    this.clusterRow.replaceChildren(...items);
  }

  /** The selected frequency's neurons as buttons: rebuilt when the frequency or the summary changes. */
  private renderNeurons(): void {
    const k = this.frequency();
    const s = this.summary;
    if (this.neuronsFor !== null && this.neuronsFor.k === (k ?? 0) && this.neuronsFor.summary === s) {
      this.markNeurons();
      return;
    }
    this.neuronsFor = { k: k ?? 0, summary: s };
    if (k === null || s === null) {
      setLine(this.neuronCaption, s === null ? "" : "Pick a frequency (a bar or a cluster) to list its neurons.");
      this.neuronRow.replaceChildren();
      return;
    }
    const { neurons, total } = clusterNeurons(s.neuronFrequency, s.neuronFraction, k);
    setLine(
      this.neuronCaption,
      total === 0
        ? `No neuron has frequency ${k} as its dominant one.`
        : `Neurons of frequency ${k}: ${total}${total > neurons.length ? `, the best ${neurons.length} shown` : ""} (share of variance explained)`,
    );
    this.neuronRow.replaceChildren(
      ...neurons.map((n) => {
        const b = button(
          `#${n} ${formatPercent(s.neuronFraction[n], 0)}`,
          "miw-button miw-button-small miw-fourier-neuron",
          "fourier-neuron",
        );
        b.dataset.neuron = String(n);
        b.title = `neuron ${n}: frequency ${k} explains ${formatPercent(s.neuronFraction[n])} of its variance`;
        b.addEventListener(
          "click",
          this.scope.guard("view", () => this.write({ neuron: n })),
        );
        return b;
      }),
    );
    this.markNeurons();
  }

  private markNeurons(): void {
    const n = this.neuron();
    for (const b of this.neuronRow.querySelectorAll<HTMLButtonElement>("button")) {
      b.setAttribute("aria-pressed", String(b.dataset.neuron === String(n)));
    }
  }

  private renderHeads(): void {
    const count = this.count("n_heads") ?? 0;
    if (count !== this.builtHeads) {
      this.builtHeads = count;
      this.headRow.replaceChildren(
        ...Array.from({ length: count }, (_, h) => {
          const b = button(`H${h}`, "miw-button miw-button-small", "fourier-head");
          b.dataset.head = String(h);
          b.title = `head ${h}`;
          b.addEventListener(
            "click",
            this.scope.guard("view", () => this.write({ head: h })),
          );
          return b;
        }),
      );
    }
    const h = this.head();
    for (const b of this.headRow.querySelectorAll<HTMLButtonElement>("button")) {
      b.setAttribute("aria-pressed", String(b.dataset.head === String(h)));
    }
  }

  /** Everything that marks the selection: bars, cluster and neuron buttons, locked cells, root attributes. */
  private renderSelection(): void {
    const k = this.frequency();
    this.embedBars.setSelected(k === null ? null : k - 1);
    this.logitBars.setSelected(k === null ? null : k - 1);
    for (const b of this.clusterRow.querySelectorAll<HTMLButtonElement>("button")) {
      b.setAttribute("aria-pressed", String(b.dataset.frequency === String(k)));
    }
    this.markNeurons();
    const pair = this.pair();
    const cell = pair === null ? null : { row: pair[0], col: pair[1] };
    this.neuronMap.heatmap.setLocked(cell);
    this.attentionMap.heatmap.setLocked(cell);
    const d = this.root.dataset;
    d.frequency = String(k ?? 0);
    d.neuron = String(this.neuron() ?? -1);
    d.head = String(this.head() ?? "");
    d.pair = pair === null ? "" : pair.join(",");
    this.renderReadouts();
  }

  /** Colour a map with its grid (kept, dimmed, while another is on its way), or clear it. */
  private paintMap(panel: MapPanel): void {
    const wantIndex = panel.kind === "neuron" ? this.neuron() : this.head();
    const grid = panel.grid;
    const h = panel.heatmap;
    if (wantIndex === null || grid === null) {
      h.setData(null, 0, 0);
      panel.element.dataset.index = "";
      panel.element.dataset.stale = "false";
      panel.element.classList.remove("miw-fourier-stale");
      this.renderReadouts();
      return;
    }
    const revision = this.revision();
    const stale = grid.index !== wantIndex || grid.revision < revision;
    panel.element.dataset.stale = String(stale);
    panel.element.classList.toggle("miw-fourier-stale", stale);
    panel.element.dataset.index = String(grid.index);
    panel.element.dataset.revision = String(grid.revision);
    const scale = gridScale(grid);
    const cmap: Colormap = scale.diverging ? divergingColormap(this.theme) : sequentialColormap(this.theme);
    h.setColormap(cmap, scale.lo, scale.hi);
    if (panel.labelled !== grid.p) {
      panel.labelled = grid.p;
      const labels = Array.from({ length: grid.p }, (_, i) => String(i));
      h.setLabels(labels, labels);
    }
    h.setData(grid.values, grid.p, grid.p, `${grid.kind}:${grid.index}:${grid.revision}`);
    this.renderReadouts();
  }

  private hover(cell: Cell | null): void {
    this.hovered = cell;
    for (const m of [this.neuronMap, this.attentionMap]) m.heatmap.highlight(cell?.row ?? null, cell?.col ?? null);
    this.renderReadouts();
  }

  /** Each map's line: the hovered cell, else the selected pair: "neuron 12 · a 5, b 7: 0.314". */
  private renderReadouts(): void {
    const pair = this.pair();
    const cell = this.hovered ?? (pair === null ? null : { row: pair[0], col: pair[1] });
    for (const m of [this.neuronMap, this.attentionMap]) {
      const want = m.kind === "neuron" ? this.neuron() : this.head();
      const g = m.grid;
      let text: string;
      if (want === null) {
        text = m.kind === "neuron" ? "Pick a neuron (a cluster, then a neuron button)." : "Pick a head.";
      } else if (g === null) {
        text = "Loading…";
      } else {
        const name = g.label || `${g.kind} ${g.index}`;
        if (cell === null || cell.row >= g.p || cell.col >= g.p) {
          text = `${name} · hover a cell; click it (or Enter) to pick the pair`;
        } else {
          const v = g.values[cell.row * g.p + cell.col];
          text = `${name} · a ${cell.row}, b ${cell.col}: ${formatValue(v)}`;
        }
      }
      setLine(m.readout, text);
    }
  }

  private renderLogits(): void {
    const pair = this.pair();
    const data = this.logits;
    const marked = this.logitsChart as LineChart & MarkerChart;
    if (pair === null || data === null) {
      this.logitsChart.setSeries([]);
      marked.setMarkers?.([]);
      setLine(this.logitsCaption, pair === null ? "Pick a pair (a cell of a map)." : "Loading the logits…");
      setLine(this.correlation, "");
      delete this.correlation.dataset.r;
      return;
    }
    const { a, b, answer, logits, prediction } = data;
    const p = logits.length;
    const xs = Float32Array.from({ length: p }, (_, i) => i);
    const series: Series[] = [
      { label: "logits", x: xs, y: logits },
      { label: "key-frequency prediction", x: xs, y: prediction },
    ];
    this.logitsChart.setTitle(`Logits over c for a = ${a}, b = ${b}`);
    this.logitsChart.setSeries(series);
    marked.setMarkers?.([{ x: answer, label: `answer ${answer}` }]);
    const stale = a !== pair[0] || b !== pair[1];
    const inRange = answer >= 0 && answer < p;
    setLine(
      this.logitsCaption,
      `${a} + ${b} mod ${p} = ${answer}` +
        (inRange
          ? ` · its logit ${formatValue(logits[answer])} (rank ${rankOf(logits, answer)} of ${p}) · prediction ${formatValue(prediction[answer])}`
          : "") +
        (stale ? " · loading the new pair…" : ""),
    );
    this.logitsCaption.dataset.answer = String(answer);
    const r = data.correlation;
    setLine(
      this.correlation,
      r === null
        ? "prediction vs logits: r not known"
        : `prediction vs logits: r = ${r.toFixed(3)} over all pairs (a, b) and answers c`,
    );
    this.correlation.dataset.r = r === null ? "" : String(r);
  }
}

/** anywidget entry point. */
export default renderView<ViewModel<FourierTraits>>("FourierView", (model, host) => new FourierView(model, host));
