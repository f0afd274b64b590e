/**
 * CompositionView front end: one writer x reader matrix over all heads (rows: the head that
 * writes, columns: the head that reads it through its queries, keys or values), with lines
 * between layers so each layer-to-layer block reads on its own. Q/K/V buttons switch the mode;
 * by default each score is shown minus the random baseline on a diverging scale, since raw
 * composition scores sit well above 0 even for random weights.
 *
 * Scores come by one resource (`scores`, params {mode}; see `resource.ts`: a reply for an old
 * revision is never drawn, a `revision` change refetches), cached per mode until `revision`
 * changes. Pairs whose writer is not in an earlier layer arrive as NaN and are drawn as empty.
 */

import "../lib/base.css";
import "./composition.css";

import { type ArrayHeader, asFloat32, decodeArray } from "../lib/codec";
import { type Colormap, divergingColormap, sequentialColormap, type Theme, withEmptyCells } from "../lib/colormap";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import type { Response } from "../lib/protocol";
import { setLine, signed } from "../lib/text";
import { type BaseTraits, button, el, intOr, renderView, View, type ViewModel } from "../lib/view";

export const MODES = ["Q", "K", "V"] as const;
export type Mode = (typeof MODES)[number];

/** The CompositionView widget's traits (Python: `mi_widgets/widgets/composition.py`). */
export interface CompositionTraits extends BaseTraits {
  n_layers: number;
  n_heads: number;
  mode: Mode;
  /** Show score minus the random baseline. */
  relative: boolean;
  baseline: number;
  /** [layer, head] each, or both null. */
  selected: { writer: [number, number] | null; reader: [number, number] | null };
}

export interface Head {
  layer: number;
  head: number;
}

export interface Scores {
  mode: Mode;
  baseline: number;
  /** Row-major [L*H writers, L*H readers], raw scores, NaN where the pair cannot compose. */
  data: Float32Array;
}

/** Scores as drawn, with the revision they were computed for. */
interface Shown extends Scores {
  revision: number;
}

/** Modes kept per revision: all of them. */
const SCORES_CACHE = MODES.length;

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

/** The scales of the two displays (relative: diverging, raw: sequential); pairs that cannot compose as background. */
function colormaps(theme: Theme): { relative: Colormap; raw: Colormap } {
  return {
    relative: withEmptyCells(divergingColormap(theme), theme),
    raw: withEmptyCells(sequentialColormap(theme), theme),
  };
}

/** Decode and check a `scores` reply for `n` heads in all. */
export function decodeScores({ result, buffers }: Response, n: number): Scores {
  const mode = String(result?.mode) as Mode;
  if (!MODES.includes(mode)) throw new Error(`scores reply has an unknown mode: ${JSON.stringify(result?.mode)}`);
  const decoded = decodeArray(result.scores as ArrayHeader, buffers);
  if (decoded.shape.length !== 2 || decoded.shape[0] !== n || decoded.shape[1] !== n) {
    throw new Error(`scores must have shape [${n}, ${n}] (all heads x all heads), got [${decoded.shape.join(", ")}]`);
  }
  return { mode, baseline: Number(result.baseline), data: asFloat32(decoded) };
}

class CompositionView extends View<CompositionTraits> {
  private readonly modeButtons: Map<Mode, HTMLButtonElement>;
  private readonly relativeBox: HTMLInputElement;
  private readonly relativeText: HTMLSpanElement;
  private readonly readout: HTMLDivElement;
  private readonly scale: HTMLSpanElement;
  private readonly heatmap: CanvasHeatmap;

  private cmaps: { relative: Colormap; raw: Colormap };
  private shown: Shown | null = null;
  private hovered: Cell | null = null;

  constructor(model: ViewModel<CompositionTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-comp", testid: "composition" });
    this.cmaps = colormaps(this.theme);

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

    this.heatmap = new CanvasHeatmap(this.cmaps.relative, {
      label: "composition scores: writer heads in rows, reader heads in columns; arrows move, Enter selects",
    });
    this.heatmap.focusElement.dataset.testid = "composition-heatmap";
    this.readout = el("div", "miw-line miw-comp-readout", "readout");
    this.readout.setAttribute("role", "status");
    const axes = el("div", "miw-comp-axes");
    axes.textContent = "rows: the head that writes · columns: the head in a later layer that reads it";

    this.root.append(toolbar, this.banner.element, axes, this.heatmap.element, this.readout);
    this.scope.onDispose(() => this.heatmap.dispose());

    this.wire();
    this.renderControls();
    this.renderLabels();
    this.banner.render();
    this.scope.resource({
      method: "scores",
      params: () => ({ mode: this.mode() }),
      decode: (reply) => decodeScores(reply, this.nLayers() * this.nHeads()),
      draw: (scores, { revision }) => {
        this.shown = { ...scores, revision };
        this.draw();
      },
      cache: SCORES_CACHE,
      refetchOn: ["mode"],
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:mode", () => this.renderControls()); // then `scores` refetches (refetchOn)
    this.scope.on("change:relative", () => {
      this.renderControls();
      this.draw();
    });
    this.scope.on("change:baseline", () => this.renderControls());
    this.scope.on("change:revision", () => this.renderReadout());
    this.scope.on("change:selected", () => this.renderSelection());
    this.heatmap.onHover(
      this.scope.guard("view", (cell: Cell | null) => {
        this.hovered = cell;
        this.renderReadout();
      }),
    );
    this.heatmap.onClick(this.scope.guard("view", (cell: Cell) => this.click(cell)));
    this.heatmap.onClear(this.scope.guard("view", () => this.select(null)));
  }

  protected override applyTheme(theme: Theme): void {
    this.cmaps = colormaps(theme);
    this.draw();
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
    const raw: { writer?: unknown; reader?: unknown } = this.model.get("selected") ?? {};
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

  /** The scores drawn, if they are the current mode's for the current revision (or a newer one). */
  private current(): Shown | null {
    const s = this.shown;
    return s !== null && s.mode === this.mode() && s.revision >= intOr(this.model.get("revision"), 0) ? s : null;
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

  /** Head labels and layer lines (`n_layers` and `n_heads` are read-only in Python: set before any view exists). */
  private renderLabels(): void {
    const H = this.nHeads();
    const labels = Array.from({ length: this.nLayers() * H }, (_, i) => headLabel(headAt(i, H)));
    this.heatmap.setLabels(labels, labels);
    this.heatmap.setGroups(H, H);
    // Small models get a compact square; big ones scroll and zoom inside 560 px.
    this.heatmap.element.style.height = `${Math.min(560, Math.max(240, labels.length * 36 + 110))}px`;
  }

  private draw(): void {
    const scores = this.current();
    if (scores === null) {
      this.heatmap.setData(null, 0, 0);
      return;
    }
    const n = this.nLayers() * this.nHeads(); // read-only in Python: the shape decodeScores checked
    const relative = this.relative();
    const { values, lo, hi } = displayValues(scores.data, scores.baseline, relative);
    this.heatmap.setColormap(relative ? this.cmaps.relative : this.cmaps.raw, lo, hi);
    this.heatmap.setData(values, n, n, `${scores.revision}:${this.mode()}:${relative}`);
    this.scale.textContent = relative
      ? `colour: ${signed(lo, 3)} … ${signed(hi, 3)} vs random`
      : `colour: 0 … ${hi.toFixed(3)}`;
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
    const scores = this.current();
    if (cell === null || scores === null || H === 0) {
      setLine(this.readout, "Hover a cell for its score; click to select the pair in Python (view.selected).");
      return;
    }
    const writer = headAt(cell.row, H);
    const reader = headAt(cell.col, H);
    const v = scores.data[cell.row * this.nLayers() * H + cell.col];
    setLine(
      this.readout,
      Number.isFinite(v)
        ? `${headLabel(writer)} → ${headLabel(reader)}: ${this.mode()}-composition ${v.toFixed(3)} (random ${scores.baseline.toFixed(3)}, ${signed(v - scores.baseline, 3)})`
        : `${headLabel(writer)} → ${headLabel(reader)}: no composition (the reading head must be in a later layer)`,
    );
  }
}

/** anywidget entry point: one CompositionView per rendered output. */
export default renderView<ViewModel<CompositionTraits>>(
  "CompositionView",
  (model, host) => new CompositionView(model, host),
);
