/**
 * CompositionView front end: one writer x reader matrix over all heads (rows: the head that
 * writes, columns: the head that reads it through its queries, keys or values), with lines
 * between layers so each layer-to-layer block reads on its own. Q/K/V buttons switch the mode;
 * by default each score is shown minus the random baseline on a diverging scale, since raw
 * composition scores sit well above 0 even for random weights.
 *
 * Scores come by request (`scores`, one mode each), cached per mode until `revision` changes.
 * Pairs whose writer is not in an earlier layer arrive as NaN and are drawn as empty.
 */

import "../lib/base.css";
import "./composition.css";

import { type ArrayHeader, decodeArray } from "../lib/codec";
import { detectTheme, divergingColormap, sequentialColormap, type Theme, withEmptyCells } from "../lib/colormap";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import type { RequestClient } from "../lib/protocol";
import { setLine } from "../lib/text";
import { button, type ErrorBanner, el, intOr, renderView, type ViewModel, ViewScope } from "../lib/view";

export const MODES = ["Q", "K", "V"] as const;
export type Mode = (typeof MODES)[number];

export type CompositionModel = ViewModel;

export interface Head {
  layer: number;
  head: number;
}

interface Scores {
  revision: number;
  baseline: number;
  /** Row-major [L*H writers, L*H readers], raw scores, NaN where the pair cannot compose. */
  data: Float32Array;
}

/** "L0H2" */
export function headLabel(h: Head): string {
  return `L${h.layer}H${h.head}`;
}

/** The head at flat index `i` of a layer-major list of all heads. */
export function headAt(i: number, nHeads: number): Head {
  return { layer: Math.floor(i / nHeads), head: i % nHeads };
}

/** The values drawn and their colour range: score − baseline on a symmetric scale, or raw scores on [0, max]. */
export function displayValues(
  data: Float32Array,
  baseline: number,
  relative: boolean,
): { values: Float32Array; lo: number; hi: number } {
  const values = new Float32Array(data.length);
  let extent = 0;
  for (let i = 0; i < data.length; i++) {
    const v = relative ? data[i] - baseline : data[i];
    values[i] = v;
    if (Number.isFinite(v)) extent = Math.max(extent, Math.abs(v));
  }
  const m = extent > 0 ? extent : 1;
  return relative ? { values, lo: -m, hi: m } : { values, lo: 0, hi: m };
}

function signed(v: number): string {
  return `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(3)}`;
}

class CompositionView {
  private readonly model: CompositionModel;
  private readonly root: HTMLDivElement;
  private readonly scope: ViewScope;
  private readonly client: RequestClient;
  private readonly modeButtons: Map<Mode, HTMLButtonElement>;
  private readonly relativeBox: HTMLInputElement;
  private readonly relativeText: HTMLSpanElement;
  private readonly readout: HTMLDivElement;
  private readonly scale: HTMLSpanElement;
  private readonly banner: ErrorBanner;
  private readonly heatmap: CanvasHeatmap;

  private theme: Theme;
  private cache = new Map<Mode, Scores>();
  private hovered: Cell | null = null;

  constructor(model: CompositionModel, host: HTMLElement) {
    this.model = model;
    this.theme = detectTheme(host);
    this.scope = new ViewScope(model);
    this.client = this.scope.client;
    this.banner = this.scope.banner;
    this.root = el("div", "miw-root miw-comp", "composition");

    const toolbar = el("div", "miw-comp-toolbar");
    const modes = el("div", "miw-comp-modes");
    modes.setAttribute("role", "group");
    modes.setAttribute("aria-label", "composition mode");
    this.modeButtons = new Map(
      MODES.map((m) => {
        const b = button(`${m}-composition`, "miw-button", `mode-${m}`);
        b.title = `${m}-composition: how much a later head's ${({ Q: "queries", K: "keys", V: "values" } as const)[m]} read an earlier head's output`;
        b.addEventListener(
          "click",
          this.scope.guard("mode", () => this.setMode(m)),
        );
        modes.append(b);
        return [m, b] as const;
      }),
    );
    const relative = el("label", "miw-comp-relative");
    this.relativeBox = el("input", "", "relative");
    this.relativeBox.type = "checkbox";
    this.relativeBox.addEventListener(
      "change",
      this.scope.guard("view", () => this.setRelative(this.relativeBox.checked)),
    );
    this.relativeText = el("span", "");
    relative.append(this.relativeBox, this.relativeText);
    this.scale = el("span", "miw-comp-scale", "scale");
    toolbar.append(modes, relative, this.scale);

    this.heatmap = new CanvasHeatmap(divergingColormap(this.theme), {
      label: "composition scores: writer heads in rows, reader heads in columns; arrows move, Enter selects",
    });
    this.heatmap.focusElement.dataset.testid = "composition-heatmap";
    this.readout = el("div", "miw-line miw-comp-readout", "readout");
    this.readout.setAttribute("role", "status");
    const axes = el("div", "miw-comp-axes");
    axes.textContent = "rows: the head that writes · columns: the head in a later layer that reads it";

    this.root.append(toolbar, this.banner.element, axes, this.heatmap.element, this.readout);
    host.append(this.root);
    this.scope.onDispose(() => this.root.remove());

    this.wire();
    this.renderControls();
    this.renderLabels();
    this.banner.render();
    this.fetch();
  }

  dispose(): void {
    this.heatmap.dispose();
    this.scope.dispose();
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:mode", () => {
      this.renderControls();
      this.fetch();
    });
    this.scope.on("change:relative", () => {
      this.renderControls();
      this.draw();
    });
    this.scope.on("change:baseline", () => this.renderControls());
    this.scope.on("change:revision", () => {
      this.cache.clear();
      this.fetch();
    });
    const reshape = () => {
      this.renderLabels();
      this.cache.clear();
      this.fetch();
    };
    this.scope.on("change:n_layers", reshape);
    this.scope.on("change:n_heads", reshape);
    this.scope.on("change:selected", () => this.renderSelection());
    this.heatmap.onHover(
      this.scope.guard("view", (cell: Cell | null) => {
        this.hovered = cell;
        this.renderReadout();
      }),
    );
    this.heatmap.onClick(this.scope.guard("view", (cell: Cell) => this.click(cell)));
    this.heatmap.onClear(this.scope.guard("view", () => this.select(null)));
    this.scope.followTheme(this.root, (t) => this.applyTheme(t));
  }

  // ---- model state ----------------------------------------------------------------------

  private mode(): Mode {
    const m = this.model.get("mode");
    return (MODES as readonly string[]).includes(m) ? (m as Mode) : "K";
  }

  private relative(): boolean {
    return this.model.get("relative") !== false;
  }

  private nHeads(): number {
    return Math.max(0, intOr(this.model.get("n_heads"), 0));
  }

  private nLayers(): number {
    return Math.max(0, intOr(this.model.get("n_layers"), 0));
  }

  private selected(): { writer: Head; reader: Head } | null {
    const raw = (this.model.get("selected") ?? {}) as { writer?: unknown; reader?: unknown };
    const pair = (v: unknown): Head | null =>
      Array.isArray(v) && v.length === 2 && Number.isInteger(v[0]) && Number.isInteger(v[1])
        ? { layer: v[0], head: v[1] }
        : null;
    const writer = pair(raw.writer);
    const reader = pair(raw.reader);
    return writer !== null && reader !== null ? { writer, reader } : null;
  }

  private setMode(mode: Mode): void {
    this.model.set("mode", mode);
    this.model.save_changes();
  }

  private setRelative(on: boolean): void {
    this.model.set("relative", on);
    this.model.save_changes();
  }

  private select(pair: { writer: Head; reader: Head } | null): void {
    this.model.set(
      "selected",
      pair === null
        ? { writer: null, reader: null }
        : { writer: [pair.writer.layer, pair.writer.head], reader: [pair.reader.layer, pair.reader.head] },
    );
    this.model.save_changes();
  }

  private click(cell: Cell): void {
    const H = this.nHeads();
    const writer = headAt(cell.row, H);
    const reader = headAt(cell.col, H);
    if (writer.layer >= reader.layer) {
      setLine(
        this.readout,
        `${headLabel(writer)} → ${headLabel(reader)}: no composition (the reading head must be in a later layer)`,
      );
      return;
    }
    const sel = this.selected();
    const same =
      sel !== null && headLabel(sel.writer) === headLabel(writer) && headLabel(sel.reader) === headLabel(reader);
    this.select(same ? null : { writer, reader });
  }

  private applyTheme(theme: Theme): void {
    if (theme === this.theme) return;
    this.theme = theme;
    this.draw();
  }

  // ---- requests -------------------------------------------------------------------------

  private fetch(): void {
    const mode = this.mode();
    if (this.cache.has(mode)) {
      this.draw();
      return;
    }
    this.root.dataset.loading = "true";
    this.client.request("scores", { mode }, { supersede: "scores" }).then(
      ({ result, buffers }) => {
        try {
          this.banner.clear("scores");
          this.take(result, buffers);
        } catch (e) {
          this.banner.fail("scores", e);
        }
      },
      (e) => this.banner.fail("scores", e),
    );
  }

  private take(result: any, buffers: DataView[]): void {
    const mode = String(result?.mode) as Mode;
    if (!MODES.includes(mode)) throw new Error(`scores reply has an unknown mode: ${JSON.stringify(result?.mode)}`);
    const revision = Number(result?.revision);
    if (revision !== intOr(this.model.get("revision"), 0)) return; // computed before a refresh: a newer fetch follows
    const decoded = decodeArray(result.scores as ArrayHeader, buffers);
    const n = this.nLayers() * this.nHeads();
    if (decoded.shape.length !== 2 || decoded.shape[0] !== n || decoded.shape[1] !== n) {
      throw new Error(`scores must have shape [${n}, ${n}] (all heads x all heads), got [${decoded.shape.join(", ")}]`);
    }
    this.cache.set(mode, { revision, baseline: Number(result.baseline), data: Float32Array.from(decoded.data) });
    if (mode === this.mode()) this.draw();
  }

  // ---- rendering ------------------------------------------------------------------------

  private renderControls(): void {
    const mode = this.mode();
    for (const [m, b] of this.modeButtons) {
      b.setAttribute("aria-pressed", String(m === mode));
      b.classList.toggle("miw-button-primary", m === mode);
    }
    this.relativeBox.checked = this.relative();
    const baseline = Number(this.model.get("baseline"));
    this.relativeText.textContent = `relative to random heads (${Number.isFinite(baseline) ? baseline.toFixed(3) : "?"})`;
    this.root.dataset.mode = mode;
    this.root.dataset.relative = String(this.relative());
  }

  private renderLabels(): void {
    const H = this.nHeads();
    const labels = Array.from({ length: this.nLayers() * H }, (_, i) => headLabel(headAt(i, H)));
    this.heatmap.setLabels(labels, labels);
    this.heatmap.setGroups(H, H);
    // Small models get a compact square; big ones scroll and zoom inside 560 px.
    this.heatmap.element.style.height = `${Math.min(560, Math.max(240, labels.length * 36 + 110))}px`;
  }

  private draw(): void {
    const scores = this.cache.get(this.mode());
    const n = this.nLayers() * this.nHeads();
    if (scores === undefined || scores.data.length !== n * n) {
      this.heatmap.setData(null, 0, 0);
      return;
    }
    const relative = this.relative();
    const { values, lo, hi } = displayValues(scores.data, scores.baseline, relative);
    const cmap = withEmptyCells(relative ? divergingColormap(this.theme) : sequentialColormap(this.theme), this.theme);
    this.heatmap.setColormap(cmap, lo, hi);
    this.heatmap.setData(values, n, n, `${scores.revision}:${this.mode()}:${relative}`);
    this.scale.textContent = relative
      ? `colour: ${signed(lo)} … ${signed(hi)} vs random`
      : `colour: 0 … ${hi.toFixed(3)}`;
    delete this.root.dataset.loading;
    this.root.dataset.revision = String(scores.revision);
    this.renderSelection();
  }

  private renderSelection(): void {
    const sel = this.selected();
    const H = this.nHeads();
    const index = (h: Head) => h.layer * H + h.head;
    this.heatmap.setLocked(sel === null ? null : { row: index(sel.writer), col: index(sel.reader) });
    this.root.dataset.selected = sel === null ? "" : `${headLabel(sel.writer)}>${headLabel(sel.reader)}`;
    this.renderReadout();
  }

  /** What a person reads: the hovered pair, else the selected one, else a hint. */
  private renderReadout(): void {
    const H = this.nHeads();
    const sel = this.selected();
    const cell =
      this.hovered ??
      (sel === null
        ? null
        : { row: sel.writer.layer * H + sel.writer.head, col: sel.reader.layer * H + sel.reader.head });
    const scores = this.cache.get(this.mode());
    if (cell === null || scores === undefined || H === 0) {
      setLine(this.readout, "Hover a cell for its score; click to select the pair in Python (view.selected).");
      return;
    }
    const writer = headAt(cell.row, H);
    const reader = headAt(cell.col, H);
    const v = scores.data[cell.row * this.nLayers() * H + cell.col];
    setLine(
      this.readout,
      Number.isFinite(v)
        ? `${headLabel(writer)} → ${headLabel(reader)}: ${this.mode()}-composition ${v.toFixed(3)} (random ${scores.baseline.toFixed(3)}, ${signed(v - scores.baseline)})`
        : `${headLabel(writer)} → ${headLabel(reader)}: no composition (the reading head must be in a later layer)`,
    );
  }
}

/** anywidget entry point: one CompositionView per rendered output. */
export default renderView<CompositionModel>("CompositionView", (model, host) => new CompositionView(model, host));
