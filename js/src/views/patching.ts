/**
 * Patching front end (Python: `mi_widgets/widgets/patching.py`, classes `Patching` and
 * `PathPatching`): the results of activation patching, attribution patching or path patching.
 *
 * A scan toolbar (Start/Stop/progress), a caption with the metric on the clean and corrupted runs,
 * a legend, then one panel per component (resid_pre, head_out, ...) with a CanvasHeatmap of its
 * normalised effect (0 = `scale.low`, 1 = `scale.high`) on a diverging map centred at 0 with one
 * symmetric range for every panel, so panels compare by colour. Cells not patched yet (NaN) are
 * drawn empty. In attribution mode each panel also shows the attribution estimate on the same
 * scale, its correlation with the exact values so far and where the two disagree most.
 *
 * A click (or Enter on a heatmap's keyboard cursor) sets `selected`; the per-prompt panel then
 * shows that component's effect on each prompt. Results come by one `coalesce` resource
 * (`results`: a scan bumps `revision` once per batch), the per-prompt values by another
 * (`per_prompt`, also `coalesce`; refetched when `selected` or `revision` moves).
 */

import "../lib/base.css";
import "./patching.css";

import { type ArrayHeader, asFloat32, decodeArray } from "../lib/codec";
import { type Colormap, cssColor, divergingColormap, type Theme, withEmptyCells } from "../lib/colormap";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import type { Response } from "../lib/protocol";
import { ScanToolbar, type ScanTraits } from "../lib/scan_toolbar";
import { setLine, tokenLabel } from "../lib/text";
import { clamp, el, renderView, View, type ViewModel } from "../lib/view";

export type RowKind = "layer" | "layer_head";
export type ColKind = "position" | "head";

/** One patched component and the grid it is shown in (`components` trait). */
export interface ComponentInfo {
  name: string;
  title: string;
  rows: RowKind;
  cols: ColKind;
  n_rows: number;
  n_cols: number;
}

/** What a cell of a component means; fields the component does not have are null. */
export interface PatchingSelected {
  component: string | null;
  layer: number | null;
  head: number | null;
  position: number | null;
}

export type PatchingMethod = "exact" | "attribution" | "path";

/** The Patching / PathPatching widgets' traits (Python: `mi_widgets/widgets/patching.py`, plus `StreamingWidget`'s). */
export interface PatchingTraits extends ScanTraits {
  n_layers: number;
  n_heads: number;
  n_prompts: number;
  /** Position labels of the first clean prompt (untrusted text). */
  tokens: string[];
  components: ComponentInfo[];
  method: PatchingMethod;
  /** What the normalised values 0 (`low`) and 1 (`high`) stand for. */
  scale: { low: string; high: string };
  metric: { clean: number | null; corrupted: number | null; name: string };
  selected: PatchingSelected;
}

/** One component's values, row-major. */
export interface Grid {
  rows: number;
  cols: number;
  data: Float32Array;
}

export interface Disagreement {
  layer: number;
  head: number | null;
  position: number | null;
  exact: number;
  attribution: number;
}

export interface Agreement {
  /** Pearson r of attribution vs the exact values done so far; null until there are enough. */
  correlation: number | null;
  disagree: Disagreement[];
}

/** A decoded `results` reply. */
export interface PatchingResults {
  names: string[];
  values: Map<string, Grid>;
  /** The attribution-patching estimate per component (attribution mode only). */
  attribution: Map<string, Grid> | null;
  agreement: Map<string, Agreement>;
}

/** A decoded `per_prompt` reply. */
export interface PerPrompt {
  values: Float32Array;
  prompts: string[];
  attribution: Float32Array | null;
}

type PerPromptParams = {
  component: string;
  layer: number | null;
  head: number | null;
  position: number | null;
};

const ROW_KINDS: ReadonlyArray<string> = ["layer", "layer_head"];
const COL_KINDS: ReadonlyArray<string> = ["position", "head"];
const NO_SELECTION: PatchingSelected = { component: null, layer: null, head: null, position: null };
const METHOD_LABELS: Record<PatchingMethod, string> = {
  exact: "activation patching",
  attribution: "attribution patching",
  path: "path patching",
};

// ---- pure helpers -------------------------------------------------------------------------

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0;
}

function intOrNull(v: unknown): number | null {
  return typeof v === "number" && Number.isInteger(v) ? v : null;
}

function brief(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 120 ? `${s.slice(0, 119)}…` : s;
}

/** Check the `components` trait; throws naming the first bad entry. */
export function parseComponents(raw: unknown): ComponentInfo[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new Error(`components must be a list, got ${brief(raw)}`);
  return raw.map((c, i) => {
    if (
      !isRecord(c) ||
      typeof c.name !== "string" ||
      !ROW_KINDS.includes(String(c.rows)) ||
      !COL_KINDS.includes(String(c.cols)) ||
      !isCount(c.n_rows) ||
      !isCount(c.n_cols)
    ) {
      throw new Error(
        `components[${i}] must be {name, title, rows: "layer" | "layer_head", cols: "position" | "head", n_rows, n_cols}, got ${brief(c)}`,
      );
    }
    return {
      name: c.name,
      title: typeof c.title === "string" && c.title !== "" ? c.title : c.name,
      rows: c.rows as RowKind,
      cols: c.cols as ColKind,
      n_rows: c.n_rows,
      n_cols: c.n_cols,
    };
  });
}

/** Decode one 2-D grid `table[name]`, the shape checked against `want` when given. */
function decodeGrid(
  table: Record<string, unknown>,
  name: string,
  what: string,
  buffers: ReadonlyArray<DataView>,
  want: [number, number] | null,
): Grid {
  const header = table[name];
  if (!isRecord(header) || !Array.isArray(header.shape)) {
    throw new Error(`results ${what}[${name}] must be an array header, got ${brief(header)}`);
  }
  const a = decodeArray(header as unknown as ArrayHeader, buffers);
  if (a.shape.length !== 2) throw new Error(`results ${what}[${name}] must be 2-D, got shape [${a.shape.join(", ")}]`);
  const [rows, cols] = a.shape;
  if (want !== null && (rows !== want[0] || cols !== want[1])) {
    throw new Error(`results ${what}[${name}] must have shape [${want.join(", ")}], got [${a.shape.join(", ")}]`);
  }
  return { rows, cols, data: asFloat32(a) };
}

function decodeAgreement(name: string, raw: unknown): Agreement {
  if (!isRecord(raw)) throw new Error(`results agreement[${name}] must be {correlation, disagree}, got ${brief(raw)}`);
  const r = raw.correlation;
  if (r !== null && r !== undefined && typeof r !== "number") {
    throw new Error(`results agreement[${name}].correlation must be a number or null, got ${brief(r)}`);
  }
  const list = raw.disagree ?? [];
  if (!Array.isArray(list)) throw new Error(`results agreement[${name}].disagree must be a list, got ${brief(list)}`);
  const disagree = list.map((d, i) => {
    const optional = (v: unknown) => v === null || v === undefined || (typeof v === "number" && Number.isInteger(v));
    if (
      !isRecord(d) ||
      !(typeof d.layer === "number" && Number.isInteger(d.layer)) ||
      !optional(d.head) ||
      !optional(d.position) ||
      typeof d.exact !== "number" ||
      typeof d.attribution !== "number"
    ) {
      throw new Error(
        `results agreement[${name}].disagree[${i}] must be {layer, head, position, exact, attribution}, got ${brief(d)}`,
      );
    }
    return {
      layer: d.layer,
      head: intOrNull(d.head),
      position: intOrNull(d.position),
      exact: d.exact,
      attribution: d.attribution,
    };
  });
  // NaN or inf (too few values so far) reads as "not known yet".
  return { correlation: typeof r === "number" && Number.isFinite(r) ? r : null, disagree };
}

/**
 * Decode and check a `results` reply: one 2-D grid per name (shaped as `components` says where it
 * names the component), the attribution estimate in the same shape, and the agreement summaries.
 */
export function decodeResults({ result, buffers }: Response, components: ComponentInfo[] = []): PatchingResults {
  const rawNames: unknown = result?.names;
  if (!Array.isArray(rawNames) || !rawNames.every((n) => typeof n === "string")) {
    throw new Error(`results names must be a list of component names, got ${brief(rawNames)}`);
  }
  const names = rawNames as string[];
  const values = result.values;
  if (!isRecord(values)) throw new Error(`results values must map each name to an array, got ${brief(values)}`);
  const infos = new Map(components.map((c) => [c.name, c]));
  const out = new Map<string, Grid>();
  for (const name of names) {
    if (!(name in values)) throw new Error(`results has no values for ${JSON.stringify(name)}`);
    const info = infos.get(name);
    out.set(name, decodeGrid(values, name, "values", buffers, info ? [info.n_rows, info.n_cols] : null));
  }
  let attribution: Map<string, Grid> | null = null;
  if (result.attribution !== undefined && result.attribution !== null) {
    const table = result.attribution;
    if (!isRecord(table)) throw new Error(`results attribution must map names to arrays, got ${brief(table)}`);
    attribution = new Map();
    for (const name of names) {
      if (table[name] === undefined || table[name] === null) continue;
      const exact = out.get(name)!;
      attribution.set(name, decodeGrid(table, name, "attribution", buffers, [exact.rows, exact.cols]));
    }
  }
  const agreement = new Map<string, Agreement>();
  if (result.agreement !== undefined && result.agreement !== null) {
    if (!isRecord(result.agreement)) {
      throw new Error(`results agreement must map names to summaries, got ${brief(result.agreement)}`);
    }
    for (const [name, raw] of Object.entries(result.agreement)) agreement.set(name, decodeAgreement(name, raw));
  }
  return { names, values: out, attribution, agreement };
}

/** Decode and check a `per_prompt` reply: one value (and estimate) per prompt label. */
export function decodePerPrompt({ result, buffers }: Response, nPrompts: number | null = null): PerPrompt {
  const one = (name: string): Float32Array => {
    const header = result?.[name];
    if (!isRecord(header) || !Array.isArray(header.shape)) {
      throw new Error(`per_prompt ${name} must be an array header, got ${brief(header)}`);
    }
    const a = decodeArray(header as unknown as ArrayHeader, buffers);
    if (a.shape.length !== 1) throw new Error(`per_prompt ${name} must be 1-D, got shape [${a.shape.join(", ")}]`);
    return asFloat32(a);
  };
  const values = one("values");
  const n = values.length;
  if (nPrompts !== null && nPrompts > 0 && n !== nPrompts) {
    throw new Error(`per_prompt values must have one value per prompt (${nPrompts}), got ${n}`);
  }
  const prompts: unknown = result.prompts;
  if (!Array.isArray(prompts) || prompts.length !== n) {
    throw new Error(`per_prompt prompts must list ${n} labels, one per value, got ${brief(prompts)}`);
  }
  let attribution: Float32Array | null = null;
  if (result.attribution !== undefined && result.attribution !== null) {
    attribution = one("attribution");
    if (attribution.length !== n) {
      throw new Error(`per_prompt attribution must have ${n} values, one per prompt, got ${attribution.length}`);
    }
  }
  return { values, prompts: prompts.map(String), attribution };
}

/** Heads per layer for "layer_head" rows: the trait, else what the grid implies (never 0). */
function headsPerLayer(info: ComponentInfo, nHeads: number, nLayers = 0): number {
  if (nHeads > 0) return nHeads;
  return nLayers > 0 ? Math.max(1, Math.round(info.n_rows / nLayers)) : 1;
}

/** What cell (row, col) of `info` means, as the `selected` trait takes it. */
export function cellSelection(info: ComponentInfo, cell: Cell, nHeads: number): PatchingSelected {
  const sel: PatchingSelected = { component: info.name, layer: null, head: null, position: null };
  if (info.rows === "layer") sel.layer = cell.row;
  else {
    const h = headsPerLayer(info, nHeads);
    sel.layer = Math.floor(cell.row / h);
    sel.head = cell.row % h;
  }
  if (info.cols === "position") sel.position = cell.col;
  else sel.head = cell.col;
  return sel;
}

/** The cell of `info` that `sel` points at, or null (another component, a missing field, out of the grid). */
export function selectionCell(info: ComponentInfo, sel: PatchingSelected, nHeads: number): Cell | null {
  if (sel.component !== info.name || sel.layer === null) return null;
  let row: number;
  if (info.rows === "layer") row = sel.layer;
  else {
    if (sel.head === null) return null;
    row = sel.layer * headsPerLayer(info, nHeads) + sel.head;
  }
  const col = info.cols === "position" ? sel.position : sel.head;
  if (col === null || row < 0 || col < 0 || row >= info.n_rows || col >= info.n_cols) return null;
  return { row, col };
}

/** `data-selected`: "component:layer:head:position", a null field empty; "" for no selection. */
export function selectionKey(sel: PatchingSelected): string {
  if (sel.component === null) return "";
  const f = (v: number | null) => (v === null ? "" : String(v));
  return `${sel.component}:${f(sel.layer)}:${f(sel.head)}:${f(sel.position)}`;
}

/** Read the `selected` trait leniently (Python validates it). */
export function parseSelected(raw: unknown): PatchingSelected {
  if (!isRecord(raw) || typeof raw.component !== "string") return { ...NO_SELECTION };
  return {
    component: raw.component,
    layer: intOrNull(raw.layer),
    head: intOrNull(raw.head),
    position: intOrNull(raw.position),
  };
}

/** The half-width m of the shared colour range [-m, m]: max(1, largest finite |value|). */
export function symmetricRange(arrays: Iterable<ArrayLike<number>>): number {
  let m = 1;
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) {
      const v = Math.abs(a[i]);
      if (v > m && v !== Infinity) m = v;
    }
  }
  return m;
}

/** Number of finite values (patched cells). */
export function countFinite(a: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i])) n++;
  return n;
}

/** Row labels: `L{r}`, or `L{l}H{h}` for "layer_head" rows. */
export function rowLabels(info: ComponentInfo, nHeads: number): string[] {
  const h = headsPerLayer(info, nHeads);
  return Array.from({ length: info.n_rows }, (_, r) =>
    info.rows === "layer" ? `L${r}` : `L${Math.floor(r / h)}H${r % h}`,
  );
}

/** Column labels: the token at each position (printable, shortened; its index when there is none), or `H{c}`. */
export function colLabels(info: ComponentInfo, tokens: readonly string[]): string[] {
  return Array.from({ length: info.n_cols }, (_, c) =>
    info.cols === "head" ? `H${c}` : c < tokens.length ? tokenLabel(tokens[c]) : String(c),
  );
}

/** "L3H2", "L3 pos 5", "L3H2 pos 5". */
export function unitLabel(u: { layer: number | null; head: number | null; position: number | null }): string {
  const head = u.head === null ? "" : `H${u.head}`;
  const position = u.position === null ? "" : ` pos ${u.position}`;
  return `L${u.layer ?? "?"}${head}${position}`;
}

/** A normalised value to two decimals, with a real minus sign; NaN as "—" (not patched yet). */
export function formatValue(v: number, digits = 2): string {
  if (Number.isNaN(v)) return "—";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "−inf";
  const s = Math.abs(v).toFixed(digits);
  return v < 0 && Number(s) !== 0 ? `−${s}` : s;
}

/** "L3H2: exact 0.41, attribution 0.05". */
export function disagreementLine(d: Disagreement): string {
  return `${unitLabel(d)}: exact ${formatValue(d.exact)}, attribution ${formatValue(d.attribution)}`;
}

/** "attribution vs exact: r = 0.93". */
export function correlationLine(r: number | null): string {
  return r === null
    ? "attribution vs exact: r not known yet (too few exact values)"
    : `attribution vs exact: r = ${formatValue(r)}`;
}

/** A raw metric for the caption ("—" before it is computed). */
export function formatMetric(v: number | null | undefined): string {
  if (typeof v !== "number") return "—";
  if (!Number.isFinite(v)) return formatValue(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2).replace(/-/g, "−") : formatValue(v, 3);
}

// ---- the view -----------------------------------------------------------------------------

interface Panel {
  info: ComponentInfo;
  element: HTMLDivElement;
  exact: CanvasHeatmap;
  /** The attribution estimate beside it (attribution mode only). */
  attribution: CanvasHeatmap | null;
  agreement: HTMLDivElement | null;
  disagree: HTMLUListElement | null;
}

/** Heatmap height for a grid of `rows` rows: room for labels and a few rows at a readable size. */
function heatmapHeight(rows: number): number {
  return clamp(rows * 20 + 120, 170, 480);
}

class PatchingView extends View<PatchingTraits> {
  private readonly caption: HTMLDivElement;
  private readonly legend: HTMLDivElement;
  private readonly legendBar: HTMLDivElement;
  private readonly legendMin: HTMLSpanElement;
  private readonly legendMax: HTMLSpanElement;
  private readonly legendLow: HTMLSpanElement;
  private readonly legendHigh: HTMLSpanElement;
  private readonly legendTicks: [HTMLSpanElement, HTMLSpanElement];
  private readonly readout: HTMLDivElement;
  private readonly panelBox: HTMLDivElement;
  private readonly perPrompt: HTMLDivElement;

  private cmap: Colormap;
  private infos: ComponentInfo[] = [];
  private panels: Panel[] = [];
  /** Method the panels were built for. */
  private builtMethod: PatchingMethod = "exact";
  private results: (PatchingResults & { revision: number }) | null = null;
  /** Shared colour range [-m, m] of what is drawn. */
  private range = 1;
  private perPromptData: { data: PerPrompt; params: PerPromptParams } | null = null;
  private hovered: { info: ComponentInfo; cell: Cell } | null = null;

  constructor(model: ViewModel<PatchingTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-patch", testid: "patching" });
    this.cmap = divergingColormap(this.theme);
    const toolbar = new ScanToolbar({ scope: this.scope, root: this.root, unit: { one: "batch", many: "batches" } });
    this.caption = el("div", "miw-line miw-patch-caption", "metric");

    this.legend = el("div", "miw-patch-legend", "legend");
    this.legend.setAttribute("aria-hidden", "true"); // the caption and readout say the same in words
    this.legendMin = el("span", "miw-patch-legend-end", "legend-min");
    this.legendMax = el("span", "miw-patch-legend-end", "legend-max");
    const track = el("div", "miw-patch-legend-track");
    this.legendBar = el("div", "miw-patch-legend-bar");
    this.legendLow = el("span", "miw-patch-legend-mark miw-patch-legend-above", "legend-low");
    this.legendHigh = el("span", "miw-patch-legend-mark miw-patch-legend-below", "legend-high");
    this.legendTicks = [el("span", "miw-patch-legend-tick"), el("span", "miw-patch-legend-tick")];
    track.append(this.legendBar, ...this.legendTicks, this.legendLow, this.legendHigh);
    this.legend.append(this.legendMin, track, this.legendMax);

    this.readout = el("div", "miw-line miw-patch-readout", "readout");
    this.readout.setAttribute("role", "status");
    this.panelBox = el("div", "miw-patch-panels");
    this.perPrompt = el("div", "miw-patch-per-prompt", "per-prompt");
    this.perPrompt.setAttribute("aria-live", "polite");

    this.root.append(
      toolbar.element,
      this.banner.element,
      this.caption,
      this.legend,
      this.readout,
      this.panelBox,
      this.perPrompt,
    );
    this.scope.onDispose(() => this.disposePanels());

    this.wire();
    this.readComponents();
    this.buildPanels();
    this.renderCaption();
    this.renderLegend();
    this.renderReadout();
    this.renderPerPrompt();
    this.banner.render();

    this.scope.resource({
      method: "results",
      policy: "coalesce",
      refetchOn: ["components"],
      // The shape check needs the components the reply is checked against.
      key: () => this.infos.map((c) => `${c.name}:${c.n_rows}x${c.n_cols}`),
      decode: (reply) => decodeResults(reply, this.infos),
      draw: (results, { revision }) => {
        this.results = { ...results, revision };
        this.drawResults();
      },
    });
    this.scope.resource({
      method: "per_prompt",
      // Like `results`: a running scan bumps `revision` faster than some replies come.
      policy: "coalesce",
      refetchOn: ["selected"],
      params: () => {
        const sel = this.selected();
        return sel.component === null
          ? null
          : { component: sel.component, layer: sel.layer, head: sel.head, position: sel.position };
      },
      decode: (reply) => decodePerPrompt(reply, this.nPrompts()),
      draw: (data, { params }) => {
        this.perPromptData = { data, params };
        this.renderPerPrompt();
      },
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:selected", () => {
      this.renderSelection();
      this.renderPerPrompt();
    });
    this.scope.onChange(["components", "n_heads", "n_layers", "method"], () => {
      this.readComponents();
      this.buildPanels();
    });
    this.scope.onChange(["tokens"], () => {
      for (const p of this.panels) this.labelPanel(p);
      this.renderReadout();
    });
    this.scope.onChange(["metric", "method"], () => this.renderCaption());
    this.scope.on("change:scale", () => {
      this.renderLegend();
      this.renderPerPrompt();
    });
  }

  // ---- model state ----------------------------------------------------------------------

  private readComponents(): void {
    try {
      this.infos = parseComponents(this.model.get("components"));
      this.banner.clear("components");
    } catch (e) {
      this.infos = [];
      this.banner.fail("components", e);
    }
  }

  private nHeads(): number {
    const n = this.model.get("n_heads");
    return isCount(n) ? n : 0;
  }

  private nLayers(): number {
    const n = this.model.get("n_layers");
    return isCount(n) ? n : 0;
  }

  private nPrompts(): number | null {
    const n = this.model.get("n_prompts");
    return isCount(n) ? n : null;
  }

  private heads(info: ComponentInfo): number {
    return headsPerLayer(info, this.nHeads(), this.nLayers());
  }

  private method(): PatchingMethod {
    const m = this.model.get("method");
    return m === "attribution" || m === "path" ? m : "exact";
  }

  private tokens(): string[] {
    const t = this.model.get("tokens");
    return Array.isArray(t) ? t.map(String) : [];
  }

  private scaleLabels(): { low: string; high: string } {
    const s = this.model.get("scale") as unknown;
    const r = isRecord(s) ? s : {};
    return {
      low: typeof r.low === "string" && r.low !== "" ? r.low : "corrupted",
      high: typeof r.high === "string" && r.high !== "" ? r.high : "clean",
    };
  }

  private selected(): PatchingSelected {
    return parseSelected(this.model.get("selected"));
  }

  private select(sel: PatchingSelected): void {
    this.model.set("selected", sel);
    this.model.save_changes();
  }

  protected applyTheme(theme: Theme): void {
    this.cmap = divergingColormap(theme);
    this.paintPanels();
    this.renderLegend();
    this.renderPerPrompt();
  }

  // ---- panels ---------------------------------------------------------------------------

  private disposePanels(): void {
    for (const p of this.panels) {
      p.exact.dispose();
      p.attribution?.dispose();
    }
    this.panels = [];
  }

  /** (Re)build one panel per component for the current components and method. */
  private buildPanels(): void {
    this.disposePanels();
    this.hovered = null;
    this.builtMethod = this.method();
    const withAttribution = this.builtMethod === "attribution";
    this.panels = this.infos.map((info) => {
      const element = el("div", "miw-patch-panel", "patching-panel");
      element.dataset.component = info.name;
      // A position grid can be 1024 columns wide: give it the whole row.
      element.classList.toggle("miw-patch-panel-wide", info.cols === "position");
      const title = el("div", "miw-patch-title");
      title.textContent = info.title;
      const maps = el("div", "miw-patch-maps");
      const axes = `${info.rows === "layer" ? "layers" : "layers and heads"} in rows, ${info.cols === "position" ? "positions" : "heads"} in columns`;
      const exact = this.heatmap(info, `${info.title}: patching effect, ${axes}; arrows move, Enter selects`);
      exact.focusElement.dataset.testid = "patching-heatmap";
      exact.focusElement.dataset.component = info.name;
      const panel: Panel = { info, element, exact, attribution: null, agreement: null, disagree: null };
      if (withAttribution) {
        const attribution = this.heatmap(
          info,
          `${info.title}: attribution estimate, ${axes}; arrows move, Enter selects`,
        );
        attribution.focusElement.dataset.testid = "attribution-heatmap";
        attribution.focusElement.dataset.component = info.name;
        panel.attribution = attribution;
        maps.append(this.mapBox("exact", exact), this.mapBox("attribution estimate", attribution));
        panel.agreement = el("div", "miw-line miw-patch-agreement", "agreement");
        panel.disagree = el("ul", "miw-patch-disagree", "disagree");
        element.append(title, maps, panel.agreement, panel.disagree);
      } else {
        maps.append(this.mapBox("", exact));
        element.append(title, maps);
      }
      this.labelPanel(panel);
      return panel;
    });
    this.panelBox.replaceChildren(...this.panels.map((p) => p.element));
    this.paintPanels();
  }

  private mapBox(caption: string, heatmap: CanvasHeatmap): HTMLDivElement {
    const box = el("div", "miw-patch-map");
    if (caption !== "") {
      const c = el("div", "miw-patch-map-caption");
      c.textContent = caption;
      box.append(c);
    }
    box.append(heatmap.element);
    return box;
  }

  private heatmap(info: ComponentInfo, label: string): CanvasHeatmap {
    const h = new CanvasHeatmap(withEmptyCells(this.cmap, this.theme), { label });
    h.element.style.height = `${heatmapHeight(info.n_rows)}px`;
    h.onHover(this.scope.guard("view", (cell: Cell | null) => this.hover(info, cell)));
    h.onClick(this.scope.guard("view", (cell: Cell) => this.select(cellSelection(info, cell, this.heads(info)))));
    h.onClear(this.scope.guard("view", () => this.select({ ...NO_SELECTION })));
    return h;
  }

  private labelPanel(p: Panel): void {
    const rows = rowLabels(p.info, this.heads(p.info));
    const cols = colLabels(p.info, this.tokens());
    const groups = p.info.rows === "layer_head" ? this.heads(p.info) : 0; // a line between layers
    for (const h of [p.exact, p.attribution]) {
      h?.setLabels(rows, cols);
      h?.setGroups(groups, 0);
    }
  }

  // ---- drawing --------------------------------------------------------------------------

  private drawResults(): void {
    if (this.method() !== this.builtMethod) this.buildPanels();
    else this.paintPanels();
  }

  /** Colour every panel on the shared range; count what is filled. */
  private paintPanels(): void {
    const results = this.results;
    const shown: Float32Array[] = [];
    for (const p of this.panels) {
      const exact = results?.values.get(p.info.name);
      const estimate = p.attribution !== null ? results?.attribution?.get(p.info.name) : undefined;
      if (exact) shown.push(exact.data);
      if (estimate) shown.push(estimate.data);
    }
    const m = symmetricRange(shown);
    this.range = m;
    const cmap = withEmptyCells(this.cmap, this.theme); // NaN: not patched yet, not bad data
    let filled = 0;
    for (const p of this.panels) {
      const exact = results?.values.get(p.info.name) ?? null;
      if (exact !== null) filled += countFinite(exact.data);
      this.paintMap(p.exact, exact, cmap, m, results?.revision ?? null);
      if (p.attribution !== null) {
        this.paintMap(
          p.attribution,
          results?.attribution?.get(p.info.name) ?? null,
          cmap,
          m,
          results?.revision ?? null,
        );
        this.renderAgreement(p);
      }
      p.element.dataset.filled = String(exact === null ? 0 : countFinite(exact.data));
    }
    if (results !== null) {
      this.root.dataset.revision = String(results.revision);
      this.root.dataset.filled = String(filled);
      this.root.dataset.range = String(m);
    }
    this.renderLegend();
    this.renderSelection();
  }

  private paintMap(h: CanvasHeatmap, grid: Grid | null, cmap: Colormap, m: number, revision: number | null): void {
    h.setColormap(cmap, -m, m);
    if (grid === null) {
      h.setCellText(null);
      h.setData(null, 0, 0);
      return;
    }
    h.setCellText((r, c) => {
      const v = grid.data[r * grid.cols + c];
      return Number.isFinite(v) ? formatValue(v) : "";
    });
    h.setData(grid.data, grid.rows, grid.cols, revision === null ? null : String(revision));
  }

  private renderAgreement(p: Panel): void {
    if (p.agreement === null || p.disagree === null) return;
    const a = this.results?.agreement.get(p.info.name);
    setLine(p.agreement, a === undefined ? correlationLine(null) : correlationLine(a.correlation));
    p.agreement.dataset.correlation = a?.correlation === null || a === undefined ? "" : String(a.correlation);
    p.disagree.replaceChildren(
      ...(a?.disagree ?? []).map((d) => {
        const item = el("li", "miw-line");
        setLine(item, disagreementLine(d));
        return item;
      }),
    );
  }

  private renderCaption(): void {
    const raw = this.model.get("metric") as unknown;
    const metric = isRecord(raw) ? raw : {};
    const name = typeof metric.name === "string" && metric.name !== "" ? metric.name : "metric";
    const clean = typeof metric.clean === "number" ? metric.clean : null;
    const corrupted = typeof metric.corrupted === "number" ? metric.corrupted : null;
    setLine(
      this.caption,
      `${METHOD_LABELS[this.method()]} · ${name}: clean run ${formatMetric(clean)}, corrupted run ${formatMetric(corrupted)}`,
    );
    this.root.dataset.method = this.method();
  }

  /** The diverging scale [-m, m] with where 0 (`scale.low`) and 1 (`scale.high`) fall on it. */
  private renderLegend(): void {
    const m = this.range;
    const { low, high } = this.scaleLabels();
    const stops = Array.from({ length: 11 }, (_, i) => cssColor(this.cmap, i / 10, 0, 1));
    this.legendBar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
    this.legendMin.textContent = formatValue(-m);
    this.legendMax.textContent = formatValue(m);
    const place = (mark: HTMLSpanElement, tick: HTMLSpanElement, v: number, text: string) => {
      const at = ((v + m) / (2 * m)) * 100;
      mark.textContent = text;
      mark.title = text;
      mark.style.left = `${at}%`;
      // Keep a mark at the track's end inside it.
      mark.style.transform = at > 80 ? "translateX(-100%)" : at < 20 ? "none" : "translateX(-50%)";
      tick.style.left = `${at}%`;
    };
    place(this.legendLow, this.legendTicks[0], 0, `0 = ${low}`);
    place(this.legendHigh, this.legendTicks[1], 1, `1 = ${high}`);
  }

  private renderSelection(): void {
    const sel = this.selected();
    for (const p of this.panels) {
      const cell = selectionCell(p.info, sel, this.heads(p.info));
      p.exact.setLocked(cell);
      p.attribution?.setLocked(cell);
      p.element.classList.toggle("miw-patch-panel-selected", cell !== null);
    }
    this.root.dataset.selected = selectionKey(sel);
    this.renderReadout();
  }

  private hover(info: ComponentInfo, cell: Cell | null): void {
    this.hovered = cell === null ? null : { info, cell };
    for (const p of this.panels) {
      const on = p.info.name === info.name && cell !== null;
      // Both maps of the hovered panel: the exact value and its estimate side by side.
      p.exact.highlight(on ? cell.row : null, on ? cell.col : null);
      p.attribution?.highlight(on ? cell.row : null, on ? cell.col : null);
    }
    this.renderReadout();
  }

  /** The hovered cell, else the selected one: what it is and its values, on one fixed line. */
  private renderReadout(): void {
    let target = this.hovered;
    if (target === null) {
      const sel = this.selected();
      const info = this.infos.find((c) => c.name === sel.component);
      const cell = info ? selectionCell(info, sel, this.heads(info)) : null;
      target = info && cell ? { info, cell } : null;
    }
    if (target === null) {
      setLine(this.readout, "Hover a cell for its effect; click it (or Enter) to see it per prompt.");
      return;
    }
    const { info, cell } = target;
    const sel = cellSelection(info, cell, this.heads(info));
    const tokens = this.tokens();
    const exact = this.results?.values.get(info.name);
    const estimate = this.results?.attribution?.get(info.name);
    const at = (g: Grid | undefined) =>
      g !== undefined && cell.row < g.rows && cell.col < g.cols ? g.data[cell.row * g.cols + cell.col] : NaN;
    const v = at(exact);
    setLine(this.readout, (quote) => {
      const token = sel.position !== null && sel.position < tokens.length ? ` ${quote(tokens[sel.position])}` : "";
      const value = Number.isFinite(v) ? formatValue(v, 3) : "not patched yet";
      const est = estimate !== undefined ? ` · attribution ${formatValue(at(estimate), 3)}` : "";
      return `${info.title} · ${unitLabel(sel)}${token}: ${value}${est}`;
    });
  }

  // ---- per prompt -----------------------------------------------------------------------

  /** The selected component's effect on each prompt, as labelled bars on a diverging axis. */
  private renderPerPrompt(): void {
    const sel = this.selected();
    const drawn = this.perPromptData;
    const box = this.perPrompt;
    const head = el("div", "miw-line miw-patch-per-prompt-title", "per-prompt-title");
    if (sel.component === null || drawn === null) {
      setLine(
        head,
        sel.component === null ? "Select a cell to see its effect on each prompt." : "Loading the effect per prompt…",
      );
      box.replaceChildren(head);
      box.classList.remove("miw-patch-stale");
      box.dataset.selected = "";
      delete box.dataset.count;
      return;
    }
    const { data, params } = drawn;
    const p: PatchingSelected = params;
    const { low, high } = this.scaleLabels();
    const info = this.infos.find((c) => c.name === params.component);
    setLine(head, `${info?.title ?? params.component} · ${unitLabel(p)}: effect per prompt (0 = ${low}, 1 = ${high})`);
    const m = symmetricRange(data.attribution === null ? [data.values] : [data.values, data.attribution]);
    const list = el("div", "miw-patch-bars");
    list.setAttribute("role", "list");
    for (let i = 0; i < data.prompts.length; i++) {
      const v = data.values[i];
      const a = data.attribution === null ? null : data.attribution[i];
      const row = el("div", "miw-patch-bar-row", "per-prompt-row");
      row.setAttribute("role", "listitem");
      row.dataset.value = Number.isFinite(v) ? String(v) : "";
      if (a !== null) row.dataset.attribution = Number.isFinite(a) ? String(a) : "";
      const label = el("span", "miw-patch-bar-label", "per-prompt-label");
      label.textContent = data.prompts[i]; // untrusted: text only
      label.title = data.prompts[i];
      const track = el("span", "miw-patch-bar-track");
      const one = el("span", "miw-patch-bar-one"); // where 1 (= high) falls
      one.style.left = `${(50 + 50 / m).toFixed(2)}%`;
      track.append(one, this.bar(v, m, "miw-patch-bar-fill"));
      if (a !== null) track.append(this.bar(a, m, "miw-patch-bar-attr"));
      const text = el("span", "miw-patch-bar-value");
      text.textContent = a === null ? formatValue(v) : `${formatValue(v)} · attr ${formatValue(a)}`;
      row.append(label, track, text);
      list.append(row);
    }
    box.replaceChildren(head, list);
    box.dataset.selected = selectionKey(p);
    // Another cell's values stay until the new ones come: dim them meanwhile.
    box.classList.toggle("miw-patch-stale", selectionKey(p) !== selectionKey(sel));
    box.dataset.count = String(data.prompts.length);
  }

  private bar(v: number, m: number, cls: string): HTMLSpanElement {
    const fill = el("span", cls);
    if (!Number.isFinite(v)) {
      fill.hidden = true;
      return fill;
    }
    const width = Math.min(1, Math.abs(v) / m) * 50;
    fill.style.width = `${width.toFixed(2)}%`;
    fill.style.left = v < 0 ? `${(50 - width).toFixed(2)}%` : "50%";
    fill.style.background = cssColor(this.cmap, v, -m, m);
    return fill;
  }
}

/** anywidget entry point: one view per rendered output, for Patching and PathPatching alike. */
export default renderView<ViewModel<PatchingTraits>>("Patching", (model, host) => new PatchingView(model, host));
