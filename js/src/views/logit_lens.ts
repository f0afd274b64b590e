/**
 * LogitLens front end: a layer x position heatmap of next-token predictions.
 *
 * Rows are the residual stream before block 0 ("embed") and after every block, each read through
 * the model's own final norm and unembedding; columns are the prompt's tokens. A cell's colour is
 * the target token's probability when a target is set, else the top-1 probability (both on
 * [0, 1]); its text is the top-1 token when cells are big enough. Hover or the keyboard show a
 * cell's top-k in the readout; a click selects it in Python (`lens.selected`).
 *
 * Data comes by one resource (`lens`), fetched again on every revision: int32 token ids, float16
 * probabilities and the strings of just the tokens that occur. The target box sends the command
 * `target` (a newer target supersedes an older one): the kernel re-reads the target row in the
 * background, with progress, and bumps `revision`, which refetches.
 */

import "../lib/base.css";
import "./logit_lens.css";

import { type ArrayHeader, asFloat32, asInt32, decodeArray, decodeShaped } from "../lib/codec";
import { type Colormap, sequentialColormap, type Theme, withEmptyCells } from "../lib/colormap";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import type { Progress, Response } from "../lib/protocol";
import { quoteToken, setLine, tokenLabel } from "../lib/text";
import { type BaseTraits, button, clamp, el, intOr, renderView, View, type ViewModel } from "../lib/view";

/** The LogitLens widget's traits (Python: `mi_widgets/widgets/logit_lens.py`). */
export interface LensTraits extends BaseTraits {
  n_layers: number;
  /** Row labels: "embed", then one per block. */
  rows: string[];
  tokens: string[];
  prompt: string;
  k: number;
  /** As given in Python: text, a token id, or none. */
  target: string | number | null;
  target_id: number | null;
  target_token: string;
  /** False for fixed predictions (`LogitLens.from_log_probs`): no target box. */
  can_retarget: boolean;
  selected: { layer: number | null; position: number | null };
}

/** One revision's lens, decoded. */
export interface LensData {
  rows: number;
  seq: number;
  k: number;
  /** [rows, seq, k] token ids, most likely first. */
  topIds: Int32Array;
  /** [rows, seq, k] their probabilities. */
  topProbs: Float32Array;
  /** [rows, seq] target probability and rank (1 = top), or null without a target. */
  targetProbs: Float32Array | null;
  targetRanks: Int32Array | null;
  targetId: number | null;
  targetToken: string;
  /** [rows, seq] a target per cell (-1: none; from_log_probs: the token that came next), or null for one target. */
  targetIds: Int32Array | null;
  /** Token id -> string, for the ids that occur. */
  vocab: Map<number, string>;
}

/** Decode and check a `lens` reply. */
export function decodeLens({ result, buffers }: Response): LensData {
  const rows = Number(result?.rows);
  const seq = Number(result?.seq);
  const k = Number(result?.k);
  if (![rows, seq, k].every((n) => Number.isInteger(n) && n >= 0))
    throw new Error(`lens reply has a bad shape: rows ${result?.rows}, seq ${result?.seq}, k ${result?.k}`);
  const get = (name: string, shape: number[]) => decodeShaped(result, buffers, name, shape, "lens");
  const topIds = asInt32(get("top_ids", [rows, seq, k]));
  const topProbs = asFloat32(get("top_probs", [rows, seq, k]));
  const hasTarget = result.target_probs != null;
  const targetProbs = hasTarget ? asFloat32(get("target_probs", [rows, seq])) : null;
  const targetRanks = hasTarget ? asInt32(get("target_ranks", [rows, seq])) : null;
  const ids = decodeArray(result.vocab_ids as ArrayHeader, buffers).data;
  const strings: unknown = result.vocab;
  if (!Array.isArray(strings) || strings.length !== ids.length)
    throw new Error("lens vocab must list one string per vocab id");
  const vocab = new Map<number, string>();
  for (let i = 0; i < ids.length; i++) vocab.set(ids[i], String(strings[i]));
  const targetId = intOr(result.target_id, null);
  const targetIds = result.target_ids != null ? asInt32(get("target_ids", [rows, seq])) : null;
  return {
    rows,
    seq,
    k,
    topIds,
    topProbs,
    targetProbs,
    targetRanks,
    targetId,
    targetToken: String(result.target_token ?? ""),
    targetIds,
    vocab,
  };
}

/** What the heatmap colours: the target's probability if there is one, else the top-1 probability. */
export function cellValues(lens: LensData): Float32Array {
  if (lens.targetProbs !== null) return lens.targetProbs;
  const out = new Float32Array(lens.rows * lens.seq);
  for (let i = 0; i < out.length; i++) out[i] = lens.k > 0 ? lens.topProbs[i * lens.k] : NaN;
  return out;
}

/** Probability as a short percentage: "41.2%", "0.03%", "<0.01%". */
export function percent(p: number): string {
  if (!Number.isFinite(p)) return String(p);
  const v = p * 100;
  if (v >= 1) return `${v.toFixed(1)}%`;
  if (v >= 0.01) return `${v.toPrecision(2)}%`;
  return v > 0 ? "<0.01%" : "0%";
}

/** The top-k of one cell as (id, token, probability). */
export function cellTop(lens: LensData, row: number, col: number): Array<{ id: number; token: string; prob: number }> {
  const base = (row * lens.seq + col) * lens.k;
  return Array.from({ length: lens.k }, (_, i) => {
    const id = lens.topIds[base + i];
    return { id, token: lens.vocab.get(id) ?? `<${id}>`, prob: lens.topProbs[base + i] };
  });
}

class LogitLensView extends View<LensTraits> {
  private readonly targetLabel: HTMLLabelElement;
  private readonly axes: HTMLDivElement;
  private readonly targetInput: HTMLInputElement;
  private readonly targetButton: HTMLButtonElement;
  private readonly targetInfo: HTMLSpanElement;
  private readonly progress: HTMLProgressElement;
  private readonly scale: HTMLSpanElement;
  private readonly heatmap: CanvasHeatmap;
  private readonly readout: HTMLDivElement;

  private cmap: Colormap;
  /** The lens drawn, and the revision it was computed for. */
  private lens: (LensData & { revision: number }) | null = null;
  private hovered: Cell | null = null;

  constructor(model: ViewModel<LensTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-lens", testid: "logit-lens" });
    this.cmap = sequentialColormap(this.theme);
    const toolbar = el("div", "miw-lens-toolbar");
    const label = el("label", "miw-lens-target");
    this.targetLabel = label;
    const labelText = el("span", "");
    labelText.textContent = "target token";
    this.targetInput = el("input", "miw-lens-target-input", "target-input");
    this.targetInput.type = "text";
    this.targetInput.placeholder = "e.g. ' Mary' (one token; empty: none)";
    this.targetInput.spellcheck = false;
    label.append(labelText, this.targetInput);
    this.targetButton = button("Set", "miw-button", "target-button");
    this.targetInfo = el("span", "miw-lens-target-info", "target-info");
    this.progress = el("progress", "", "progress");
    this.progress.hidden = true;
    this.scale = el("span", "miw-lens-scale", "scale");
    toolbar.append(label, this.targetButton, this.progress, this.targetInfo, this.scale);

    const axes = el("div", "miw-lens-axes");
    this.axes = axes;
    this.heatmap = new CanvasHeatmap(this.cmap, {
      label: "logit lens: layers in rows, positions in columns; arrows move, Enter selects",
      fit: "rows", // a long prompt scrolls sideways at a readable cell size
    });
    this.heatmap.focusElement.dataset.testid = "lens-heatmap";
    this.readout = el("div", "miw-lens-readout", "readout");
    this.readout.setAttribute("role", "status");

    this.root.append(toolbar, this.banner.element, axes, this.heatmap.element, this.readout);
    this.scope.onDispose(() => this.heatmap.dispose());

    this.wire();
    this.syncTargetBox();
    this.syncLabels();
    this.banner.render();
    this.renderReadout();
    this.scope.resource({
      method: "lens",
      decode: decodeLens,
      draw: (lens, { revision }) => {
        this.lens = { ...lens, revision };
        this.draw();
      },
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.onChange(["rows", "tokens"], () => this.syncLabels());
    this.scope.onChange(["target", "target_token", "can_retarget"], () => this.syncTargetBox());
    this.scope.on("change:selected", () => this.renderSelection());

    this.targetButton.addEventListener(
      "click",
      this.scope.guard("target", () => this.setTarget()),
    );
    this.targetInput.addEventListener("keydown", (ev) => {
      ev.stopPropagation(); // typing belongs to the box, not to notebook shortcuts
      if (ev.key === "Enter" && !ev.isComposing) {
        ev.preventDefault();
        this.scope.guard("target", () => this.setTarget())();
      }
    });
    this.heatmap.onHover(
      this.scope.guard("view", (cell: Cell | null) => {
        this.hovered = cell;
        this.heatmap.highlight(cell?.row ?? null, cell?.col ?? null);
        this.renderReadout();
      }),
    );
    this.heatmap.onClick(this.scope.guard("view", (cell: Cell) => this.click(cell)));
    this.heatmap.onClear(this.scope.guard("view", () => this.select(null)));
    this.heatmap.onPaint((tag) => {
      // the lens drawn: its revision (tests and benchmarks wait for this)
      if (tag === null) delete this.root.dataset.painted;
      else this.root.dataset.painted = tag;
    });
  }

  // ---- model state ----------------------------------------------------------------------

  private labels(name: "rows" | "tokens"): string[] {
    const v = this.model.get(name);
    return Array.isArray(v) ? v.map(String) : [];
  }

  private selected(): Cell | null {
    const raw = (this.model.get("selected") ?? {}) as { layer?: unknown; position?: unknown };
    return Number.isInteger(raw.layer) && Number.isInteger(raw.position)
      ? { row: raw.layer as number, col: raw.position as number }
      : null;
  }

  private select(cell: Cell | null): void {
    this.model.set(
      "selected",
      cell === null ? { layer: null, position: null } : { layer: cell.row, position: cell.col },
    );
    this.model.save_changes();
  }

  private click(cell: Cell): void {
    const sel = this.selected();
    this.select(sel !== null && sel.row === cell.row && sel.col === cell.col ? null : cell);
  }

  /** Ask the kernel to re-read the target row; on success it bumps `revision`, which refetches the lens. */
  private setTarget(): void {
    this.progress.removeAttribute("value"); // indeterminate until the first progress message
    const onProgress = (p: Progress) => {
      this.progress.max = Math.max(1, p.total);
      this.progress.value = clamp(p.done, 0, p.total);
    };
    void this.scope.command("target", { target: this.targetInput.value }, { onProgress });
  }

  /** The progress bar and `data-targeting` show while a `target` command is out (the newest one). */
  protected loadingChanged(): void {
    const targeting = this.scope.busy("target");
    this.progress.hidden = !targeting;
    if (targeting) this.root.dataset.targeting = "true";
    else delete this.root.dataset.targeting;
  }

  protected applyTheme(theme: Theme): void {
    this.cmap = sequentialColormap(theme);
    this.draw();
  }

  // ---- rendering ------------------------------------------------------------------------

  private syncTargetBox(): void {
    const fixed = this.model.get("can_retarget") === false;
    this.targetLabel.hidden = fixed;
    this.targetButton.hidden = fixed;
    this.axes.textContent = fixed
      ? "the given log probs (as probabilities) · columns: the next-token prediction at each position"
      : "rows: the residual stream after each layer, read through the model's final norm and unembedding · columns: the next-token prediction at each position";
    const target = this.model.get("target");
    const token = String(this.model.get("target_token") ?? "");
    if (document.activeElement !== this.targetInput)
      this.targetInput.value = typeof target === "string" ? target : token;
    this.root.dataset.target = token;
  }

  private syncLabels(): void {
    const rows = this.labels("rows");
    this.heatmap.setLabels(
      rows,
      this.labels("tokens").map((t) => tokenLabel(t)),
    );
    this.heatmap.element.style.height = `${clamp(rows.length * 48 + 150, 220, 560)}px`;
  }

  private draw(): void {
    const lens = this.lens;
    if (lens === null) {
      this.heatmap.setData(null, 0, 0);
      return;
    }
    // A per-cell target can be missing (the last position has no next token): drawn empty, not as bad data.
    this.heatmap.setColormap(lens.targetIds !== null ? withEmptyCells(this.cmap, this.theme) : this.cmap, 0, 1);
    this.heatmap.setCellText(lens.k > 0 ? (r, c) => tokenLabel(cellTop(lens, r, c)[0].token) : null);
    this.heatmap.setData(cellValues(lens), lens.rows, lens.seq, String(lens.revision));
    const target = lens.targetId !== null ? quoteToken(lens.targetToken) : null;
    this.scale.textContent = target !== null ? `colour: P(${target}) 0 … 1` : "colour: top-1 probability 0 … 1";
    this.targetInfo.textContent = target !== null ? `target ${target} (id ${lens.targetId})` : "no target";
    if (lens.targetIds !== null) {
      this.scale.textContent = "colour: P(the token that came next) 0 … 1";
      this.targetInfo.textContent = "target: the token that came next";
    }
    this.root.dataset.revision = String(lens.revision);
    this.renderSelection();
  }

  private renderSelection(): void {
    const sel = this.selected();
    this.heatmap.setLocked(sel);
    this.root.dataset.selected = sel === null ? "" : `${sel.row}:${sel.col}`;
    this.renderReadout();
  }

  /**
   * The hovered cell, else the selected one: its top-k and the target's probability and rank, in
   * three lines of fixed height (tokens shortened, whole in titles), so hovering moves nothing.
   */
  private renderReadout(): void {
    const lens = this.lens;
    const cell = this.hovered ?? this.selected();
    this.readout.replaceChildren();
    if (lens === null || cell === null || cell.row >= lens.rows || cell.col >= lens.seq) {
      const hint = el("div", "miw-line");
      setLine(hint, "Hover a cell for its top predictions; click to select it in Python (lens.selected).");
      this.readout.append(hint);
      return;
    }
    const rows = this.labels("rows");
    const tokens = this.labels("tokens");
    const head = el("div", "miw-line miw-lens-readout-head", "readout-head");
    setLine(
      head,
      (quote) =>
        `${rows[cell.row] ?? `row ${cell.row}`} · position ${cell.col} ${quote(tokens[cell.col] ?? "")} → next token:`,
    );
    const list = el("ol", "miw-lens-top", "readout-top");
    for (const { id, token, prob } of cellTop(lens, cell.row, cell.col)) {
      const item = el("li", "");
      const tok = el("span", "miw-lens-token");
      tok.textContent = tokenLabel(token);
      tok.title = `${JSON.stringify(token)} · id ${id}`;
      const p = el("span", "miw-lens-prob");
      p.textContent = percent(prob);
      item.append(tok, p);
      list.append(item);
    }
    this.readout.append(head, list);
    if (lens.targetProbs !== null && lens.targetRanks !== null) {
      const i = cell.row * lens.seq + cell.col;
      const odds = `${percent(lens.targetProbs[i])} (rank ${lens.targetRanks[i]})`;
      const t = el("div", "miw-line miw-lens-readout-target", "readout-target");
      const id = lens.targetIds === null ? null : lens.targetIds[i];
      if (id === null) setLine(t, (quote) => `target ${quote(lens.targetToken)}: ${odds}`);
      else if (id < 0) setLine(t, "no next token here");
      else setLine(t, (quote) => `next token ${quote(lens.vocab.get(id) ?? `<${id}>`)}: ${odds}`);
      this.readout.append(t);
    }
  }
}

/** anywidget entry point: one LogitLens view per rendered output. */
export default renderView<ViewModel<LensTraits>>("LogitLens", (model, host) => new LogitLensView(model, host));
