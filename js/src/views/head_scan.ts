/**
 * HeadScan front end: Start/Stop toolbar with progress, then one small layer x head heatmap per
 * score (previous token, duplicate token, induction, ...), filled in as the scan's partial scores
 * arrive. Cells are DOM buttons (at most a few hundred), coloured with the sequential colormap;
 * cells not yet scored (NaN) are hatched.
 *
 * Scores come by one resource (`scores`, `policy: "coalesce"`), fetched on render and again after
 * `revision` bumps: a scan bumps it once per batch, and bumps that arrive while a fetch is out fold
 * into one more fetch after it. A reply for an older revision is never drawn. Start/Stop, progress
 * and status are the shared scan toolbar's (lib/scan_toolbar.ts).
 */

import "../lib/base.css";
import "./head_scan.css";

import { type ArrayHeader, asFloat32, decodeArray } from "../lib/codec";
import { type Colormap, cssColor, sequentialColormap, type Theme } from "../lib/colormap";
import { cellTextColor } from "../lib/heatmap";
import type { Response } from "../lib/protocol";
import { type ScanStatus, ScanToolbar, type ScanTraits } from "../lib/scan_toolbar";
import { clamp, el, intOr, renderView, View, type ViewModel } from "../lib/view";

export type Status = ScanStatus;

export interface Selected {
  score: string;
  layer: number | null;
  head: number | null;
}

/** The HeadScan widget's traits (Python: `mi_widgets/widgets/head_scan.py`, plus `StreamingWidget`'s). */
export interface HeadScanTraits extends ScanTraits {
  n_layers: number;
  n_heads: number;
  score_names: string[];
  selected: Selected;
}

export interface Scores {
  names: string[];
  nLayers: number;
  nHeads: number;
  data: Float32Array;
}

interface Panel {
  name: string;
  grid: HTMLDivElement;
  cells: HTMLButtonElement[];
  cursor: { layer: number; head: number };
}

/** Cells at least this wide (px) show their value as text. */
const TEXT_MIN_CELL = 28;

/** Decode and check a `scores` reply: one [layers, heads] array per name. */
export function decodeScores({ result, buffers }: Response): Scores {
  const decoded = decodeArray(result.scores as ArrayHeader, buffers);
  const names = Array.isArray(result.names) ? result.names.map(String) : [];
  const [n, nLayers, nHeads] = decoded.shape;
  if (decoded.shape.length !== 3 || n !== names.length) {
    throw new Error(`scores must have shape [${names.length} names, layers, heads], got [${decoded.shape.join(", ")}]`);
  }
  return {
    names,
    nLayers,
    nHeads,
    data: asFloat32(decoded),
  };
}

/** "previous_token" -> "previous token". */
export function readableName(name: string): string {
  return name.replace(/[_-]+/g, " ").trim();
}

class HeadScanView extends View<HeadScanTraits> {
  private readonly panelBox: HTMLDivElement;

  private cmap: Colormap;
  private panels: Panel[] = [];
  private scores: Scores | null = null;

  constructor(model: ViewModel<HeadScanTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-scan", testid: "head-scan" });
    this.cmap = sequentialColormap(this.theme);
    const toolbar = new ScanToolbar({ scope: this.scope, root: this.root });
    this.panelBox = el("div", "miw-scan-panels");
    this.root.append(toolbar.element, this.banner.element, this.panelBox);

    this.wire();
    this.buildPanels();
    this.banner.render();
    this.scope.resource({
      method: "scores",
      policy: "coalesce",
      decode: decodeScores,
      draw: (scores, { revision }) => this.drawScores(scores, revision),
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:selected", () => this.syncSelected());
    this.scope.onChange(["n_layers", "n_heads", "score_names"], () => this.buildPanels());
  }

  // ---- model state ----------------------------------------------------------------------

  private nLayers(): number {
    return Math.max(0, intOr(this.model.get("n_layers"), 0));
  }

  private nHeads(): number {
    return Math.max(0, intOr(this.model.get("n_heads"), 0));
  }

  private scoreNames(): string[] {
    const raw = this.model.get("score_names");
    const names = Array.isArray(raw) ? raw.map(String) : [];
    return names.length > 0 ? names : (this.scores?.names ?? []);
  }

  private selected(): Selected {
    const raw = (this.model.get("selected") ?? {}) as Partial<Selected>;
    return { score: String(raw.score ?? ""), layer: intOr(raw.layer, null), head: intOr(raw.head, null) };
  }

  private select(score: string, layer: number, head: number): void {
    this.model.set("selected", { score, layer, head });
    this.model.save_changes();
  }

  protected applyTheme(theme: Theme): void {
    this.cmap = sequentialColormap(theme);
    this.paintCells();
  }

  // ---- drawing --------------------------------------------------------------------------

  private drawScores(scores: Scores, revision: number): void {
    this.scores = scores;
    this.root.dataset.revision = String(revision);
    // Without `score_names` the panels follow the reply's names.
    if (this.scoreNames().join("\n") !== this.panels.map((p) => p.name).join("\n")) this.buildPanels();
    else this.paintCells();
  }

  // ---- rendering ------------------------------------------------------------------------

  /** (Re)build one heatmap per score name for the current shape. */
  private buildPanels(): void {
    const L = this.nLayers();
    const H = this.nHeads();
    const cell = clamp(Math.floor(Math.min(336 / Math.max(H, 1), 400 / Math.max(L, 1))), 14, 40);
    const sel = this.selected();
    this.panels = this.scoreNames().map((name) => {
      const panel = el("div", "miw-scan-panel");
      const title = el("div", "miw-scan-title");
      title.textContent = readableName(name);
      const grid = el("div", "miw-scan-grid", "score-heatmap");
      grid.dataset.score = name;
      grid.tabIndex = 0;
      grid.setAttribute("role", "group");
      grid.setAttribute("aria-label", `${readableName(name)} scores, layers by heads: arrows move, Enter selects`);
      grid.style.gridTemplateColumns = `auto repeat(${H}, ${cell}px)`;
      grid.style.gridTemplateRows = `auto repeat(${L}, ${cell}px)`;
      grid.classList.toggle("miw-scan-text", cell >= TEXT_MIN_CELL);
      grid.append(el("span", ""));
      for (let h = 0; h < H; h++) grid.append(this.label(`H${h}`, "miw-scan-col"));
      const cells: HTMLButtonElement[] = [];
      for (let l = 0; l < L; l++) {
        grid.append(this.label(`L${l}`, "miw-scan-row"));
        for (let h = 0; h < H; h++) {
          const c = el("button", "miw-scan-cell", "score-cell");
          c.type = "button";
          c.tabIndex = -1;
          c.dataset.layer = String(l);
          c.dataset.head = String(h);
          c.addEventListener(
            "click",
            this.scope.guard("view", () => this.cellClick(p, l, h)),
          );
          cells.push(c);
          grid.append(c);
        }
      }
      const here = sel.score === name && sel.layer !== null && sel.head !== null;
      const p: Panel = {
        name,
        grid,
        cells,
        cursor: here ? { layer: sel.layer!, head: sel.head! } : { layer: 0, head: 0 },
      };
      grid.addEventListener(
        "keydown",
        this.scope.guard("view", (ev: KeyboardEvent) => this.gridKey(p, ev)),
      );
      panel.append(title, grid);
      return p;
    });
    this.panelBox.replaceChildren(...this.panels.map((p) => p.grid.parentElement!));
    this.paintCells();
  }

  private label(text: string, cls: string): HTMLSpanElement {
    const s = el("span", `miw-scan-label ${cls}`);
    s.textContent = text;
    return s;
  }

  private value(name: string, layer: number, head: number): number {
    const s = this.scores;
    const k = s === null ? -1 : s.names.indexOf(name);
    if (s === null || k < 0 || layer >= s.nLayers || head >= s.nHeads) return NaN;
    return s.data[(k * s.nLayers + layer) * s.nHeads + head];
  }

  private paintCells(): void {
    const H = this.nHeads();
    for (const p of this.panels) {
      p.cells.forEach((c, i) => {
        const layer = Math.floor(i / H);
        const head = i % H;
        const v = this.value(p.name, layer, head);
        const known = Number.isFinite(v);
        c.dataset.value = known ? String(v) : "";
        c.classList.toggle("miw-scan-nan", !known);
        c.textContent = known ? v.toFixed(2) : "";
        c.title = `${readableName(p.name)} L${layer}H${head}: ${known ? v.toFixed(3) : "not scored yet"}`;
        if (known) {
          c.style.background = cssColor(this.cmap, v, 0, 1);
          c.style.color = cellTextColor(v, this.cmap, 0, 1);
        } else {
          c.style.background = "";
          c.style.color = "";
        }
      });
    }
    this.markSelection();
  }

  /** Outline the selected cell, and each heatmap's keyboard cursor. */
  private markSelection(): void {
    const sel = this.selected();
    const H = this.nHeads();
    for (const p of this.panels) {
      const mine = sel.score === p.name;
      p.cells.forEach((c, i) => {
        const layer = Math.floor(i / H);
        const head = i % H;
        const selected = mine && sel.layer === layer && sel.head === head;
        c.classList.toggle("miw-scan-selected", selected);
        c.setAttribute("aria-pressed", String(selected));
        c.classList.toggle("miw-scan-cursor", p.cursor.layer === layer && p.cursor.head === head);
      });
    }
  }

  private syncSelected(): void {
    const sel = this.selected();
    const p = this.panels.find((q) => q.name === sel.score);
    if (p !== undefined && sel.layer !== null && sel.head !== null) p.cursor = { layer: sel.layer, head: sel.head };
    this.markSelection();
  }

  private cellClick(p: Panel, layer: number, head: number): void {
    p.cursor = { layer, head };
    this.select(p.name, layer, head);
  }

  private gridKey(p: Panel, ev: KeyboardEvent): void {
    const moves: Record<string, [number, number]> = {
      ArrowUp: [-1, 0],
      ArrowDown: [1, 0],
      ArrowLeft: [0, -1],
      ArrowRight: [0, 1],
    };
    const move = moves[ev.key];
    if (move === undefined && ev.key !== "Enter" && ev.key !== " ") return;
    ev.preventDefault();
    ev.stopPropagation(); // keep notebook shortcuts out of the heatmap
    if (this.nLayers() === 0 || this.nHeads() === 0) return;
    if (move === undefined) {
      this.select(p.name, p.cursor.layer, p.cursor.head);
      return;
    }
    p.cursor = {
      layer: clamp(p.cursor.layer + move[0], 0, this.nLayers() - 1),
      head: clamp(p.cursor.head + move[1], 0, this.nHeads() - 1),
    };
    this.markSelection();
  }
}

/** anywidget entry point: one HeadScanView per rendered output. */
export default renderView<ViewModel<HeadScanTraits>>("HeadScan", (model, host) => new HeadScanView(model, host));
