/**
 * AttentionView front end: prompt box, layer x head overview grid, the selected head's pattern
 * as a heatmap, and the prompt's tokens coloured by attention.
 *
 * Bulk data comes from two resources, `overview` (the thumbnails of every head) and `pattern`
 * (one head, cached per revision); `run` is a command that re-runs the model on a new prompt.
 * Past `EXACT_MAX_SEQ` tokens a head comes as level-of-detail `tile`s instead (`lib/tiles.ts`): the one
 * tile that holds the whole head max-pooled (its overview) first, then the tiles of the visible region at
 * the level the zoom needs (`CanvasHeatmap.setTiled`), with exact values for the readout and the token
 * strip from `line` requests (one query row or key column).
 * The kernel then bumps `revision`: the view clears what it drew for the old prompt and the
 * resources refetch (`lib/resource.ts`: a reply for an old revision is never drawn).
 */

import "../lib/base.css";
import "./attention.css";

import { type ArrayHeader, decodeArray } from "../lib/codec";
import {
  anchoredColormap,
  type Colormap,
  type ColorScale,
  DEFAULT_SCALE,
  parseScale,
  type Theme,
  withEmptyCells,
} from "../lib/colormap";
import { CanvasHeatmap, type Cell, colorPixels, type Tile } from "../lib/heatmap";
import { isCancelled, type Progress, RemoteError, type Response } from "../lib/protocol";
import type { Resource } from "../lib/resource";
import { setLine, tokenLabel } from "../lib/text";
import { LruCache, tileLevels } from "../lib/tiles";
import { TokenStrip } from "../lib/tokens";
import { type BaseTraits, button, clamp, el, intOr, renderView, View, type ViewModel } from "../lib/view";

export interface Selected {
  layer: number;
  head: number;
  query: number | null;
  key: number | null;
}

/** The AttentionView widget's traits (Python: `mi_widgets/widgets/attention.py`). */
export interface AttentionTraits extends BaseTraits {
  n_layers: number;
  n_heads: number;
  tokens: string[];
  prompt: string;
  can_rerun: boolean;
  /** One name per head, layer by layer; [] = "L0H3". */
  head_names: string[];
  /** The colour scale (`lib/colormap.ts` `anchoredColormap`); {} = 0..1 in the theme's own map. */
  color_scale: Partial<ColorScale>;
  /** Cells above the diagonal are drawn empty (CircuitsVis's `mask_upper_tri`). */
  mask_upper_tri: boolean;
  show_axis_labels: boolean;
  /** `{}` until the widget sets it; then all four keys (Python checks them). */
  selected: Partial<Selected>;
}

export type AttentionModel = ViewModel<AttentionTraits>;

type Mode = "to" | "by";
type State = "loading" | "ready" | "running" | "error";

export interface Overview {
  nLayers: number;
  nHeads: number;
  size: number;
  thumbs: Float32Array;
}

export interface Pattern {
  layer: number;
  head: number;
  seq: number;
  data: Float32Array;
}

/** Patterns kept per revision (by layer and head), shown again without asking. */
const PATTERN_CACHE = 16;
/** Longest prompt whose heads come whole (`pattern`); longer ones come as tiles (Python: `EXACT_MAX_SEQ`). */
export const EXACT_MAX_SEQ = 512;
/** Side of a tile, in cells of its level (Python: `TILE`). */
export const TILE = 512;
/** Decoded tiles kept (every head, every level; at most 1 MiB each). */
const TILE_CACHE = 48;
/** Tiled mode: overview tiles fetched ahead after a head is shown (the heads an arrow key reaches, then the rest of
 * its layer), at most this many heads, this many requests out at once. */
const PREFETCH_HEADS = 16;
const PREFETCH_OUT = 2;
/** Decoded query rows / key columns kept for the readout and the strip. */
const LINE_CACHE = 64;
const GRID_MARGIN_LEFT = 30;
const GRID_MARGIN_TOP = 16;

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  return v.toFixed(3);
}

/** Decode and check an `overview` reply: thumbnails [layers, heads, size, size]. */
export function decodeOverview({ result, buffers }: Response): Overview {
  const thumbs = decodeArray(result.thumbnails as ArrayHeader, buffers);
  const [nLayers, nHeads, size] = thumbs.shape;
  if (thumbs.shape.length !== 4 || thumbs.shape[3] !== size) {
    throw new Error(`thumbnails must have shape [layers, heads, size, size], got [${thumbs.shape.join(", ")}]`);
  }
  return { nLayers, nHeads, size, thumbs: thumbs.data as Float32Array };
}

/** Decode and check a `pattern` reply: one head's [seq, seq] pattern. */
export function decodePattern({ result, buffers }: Response): Pattern {
  const decoded = decodeArray(result.pattern as ArrayHeader, buffers);
  const [seq, seq2] = decoded.shape;
  if (decoded.shape.length !== 2 || seq !== seq2) {
    throw new Error(`pattern must have shape [seq, seq], got [${decoded.shape.join(", ")}]`);
  }
  return { layer: Number(result.layer), head: Number(result.head), seq, data: decoded.data as Float32Array };
}

/** Decode and check a `tile` reply (a `zero` tile carries no values: every cell is 0). */
export function decodeTile({ result, buffers }: Response): Tile {
  const level = Number(result.level);
  const row = Number(result.row);
  const col = Number(result.col);
  if (result.zero === true) {
    const size = Number(result.size);
    const tile = Number(result.tile);
    const height = Math.min(tile, size - row * tile);
    const width = Math.min(tile, size - col * tile);
    if (!(height > 0 && width > 0)) throw new Error(`zero tile ${row},${col} lies outside a ${size}-cell level`);
    return { level, row, col, height, width, values: null };
  }
  const decoded = decodeArray(result.values as ArrayHeader, buffers);
  if (decoded.shape.length !== 2)
    throw new Error(`tile must have shape [rows, cols], got [${decoded.shape.join(", ")}]`);
  return { level, row, col, height: decoded.shape[0], width: decoded.shape[1], values: decoded.data as Float32Array };
}

/** A copy of a [seq, seq] pattern with the cells above the diagonal NaN (drawn empty: not shown). */
export function maskUpperTri(data: Float32Array, seq: number): Float32Array {
  const out = data.slice();
  for (let q = 0; q < seq; q++) out.fill(Number.NaN, q * seq + q + 1, (q + 1) * seq);
  return out;
}

class AttentionView extends View<AttentionTraits> {
  private readonly prompt: HTMLTextAreaElement;
  private readonly runButton: HTMLButtonElement;
  private readonly status: HTMLSpanElement;
  private readonly progress: HTMLProgressElement;
  private readonly grid: HTMLCanvasElement;
  private readonly gridSource: HTMLCanvasElement;
  private readonly heatmap: CanvasHeatmap;
  private readonly strip: TokenStrip;
  private readonly modeButton: HTMLButtonElement;
  private readonly readout: HTMLDivElement;
  private readonly patterns: Resource<{ layer: number; head: number }, Pattern>;

  private cmap: Colormap;
  /** The map for the pattern and the strip: `cmap`, with masked cells (NaN above the diagonal) drawn empty. */
  private cellMap: Colormap;
  private scale: ColorScale = DEFAULT_SCALE;
  private tokens: string[] = [];
  /** What is drawn, with the revision it was computed for (null: nothing). */
  private overview: (Overview & { revision: number }) | null = null;
  private pattern: (Pattern & { revision: number }) | null = null;
  private hover: { query: number | null; key: number | null } = { query: null, key: null };
  private mode: Mode = "to";
  /** Progress of the latest run; shown while a run is out. */
  private runProgress: Progress = { done: 0, total: 1, label: "" };
  private gridPitch = 0;
  /** Tiled mode: decoded tiles by `revision:layer:head:level:row:col`, requests out (id -> supersede key). */
  private readonly tileCache = new LruCache<Tile>(TILE_CACHE);
  private readonly tilesOut = new Map<string, { supersede: string; overview: boolean }>();
  /** Tiled mode: the head whose tiles the heatmap shows. */
  private tiledHead: { revision: number; layer: number; head: number } | null = null;
  /** Tiled mode: overview tiles still to fetch ahead, nearest to the shown head first. */
  private prefetch: Array<{ revision: number; layer: number; head: number }> = [];
  /** Tiled mode: exact rows/columns by `revision:layer:head:axis:index`, and the one out. */
  private readonly lineCache = new LruCache<Float32Array>(LINE_CACHE);
  private lineOut: string | null = null;
  /** An HTML export holds no `line`s: once one says so, the readout reads the tiles instead of asking again. */
  private linesExported = true;

  constructor(model: AttentionModel, host: HTMLElement) {
    super(model, host, { className: "miw-attn", testid: "attention-view" });
    this.scale = parseScale(model.get("color_scale"));
    this.cmap = anchoredColormap(this.theme, this.scale);
    this.cellMap = this.masked() ? withEmptyCells(this.cmap, this.theme) : this.cmap;

    const header = el("div", "miw-attn-header");
    this.prompt = el("textarea", "miw-attn-prompt", "prompt-input");
    this.prompt.rows = 2;
    this.prompt.placeholder = "Prompt (Enter runs, Shift+Enter for a new line)";
    this.prompt.setAttribute("aria-label", "prompt");
    this.runButton = button("Run", "miw-button miw-button-primary", "run-button");
    const statusBox = el("div", "miw-attn-status");
    this.status = el("span", "", "status");
    this.status.setAttribute("role", "status");
    this.progress = el("progress", "", "progress");
    this.progress.hidden = true;
    statusBox.append(this.status, this.progress);
    header.append(this.prompt, this.runButton, statusBox);

    const body = el("div", "miw-attn-body");
    const gridPanel = el("div", "miw-attn-grid-panel");
    this.grid = el("canvas", "miw-attn-grid", "head-grid");
    this.grid.tabIndex = 0;
    this.grid.setAttribute("role", "grid");
    this.grid.setAttribute("aria-label", "attention heads: arrows move, left/right = head, up/down = layer");
    this.gridSource = document.createElement("canvas");
    const gridHint = el("span", "miw-muted");
    gridHint.textContent = "layers × heads";
    gridPanel.append(this.grid, gridHint);

    const main = el("div", "miw-attn-main");
    this.heatmap = new CanvasHeatmap(this.cellMap, { label: "attention pattern: query rows, key columns" });
    this.heatmap.setColormap(this.cellMap, this.scale.lo, this.scale.hi);
    this.heatmap.focusElement.dataset.testid = "pattern-heatmap";
    this.scope.onDispose(() => this.heatmap.dispose());
    this.readout = el("div", "miw-line miw-attn-readout", "readout");
    this.readout.setAttribute("aria-live", "polite");
    const stripBar = el("div", "miw-attn-strip-bar");
    this.modeButton = el("button", "miw-button", "strip-mode");
    this.modeButton.type = "button";
    stripBar.append(this.modeButton, this.readout);
    this.strip = new TokenStrip({ label: "prompt tokens" });
    this.strip.element.dataset.testid = "token-strip";
    main.append(this.heatmap.element, stripBar, this.strip.element);
    body.append(gridPanel, main);

    this.root.append(header, this.banner.element, body);

    this.wire();
    this.syncPromptBox();
    this.syncTokens();
    this.syncMode();
    this.banner.render();
    this.drawGrid();
    this.scope.resource({
      method: "overview",
      decode: decodeOverview,
      draw: (o, { revision }) => {
        this.overview = { ...o, revision };
        this.renderThumbs();
        this.drawGrid();
      },
    });
    this.patterns = this.scope.resource({
      method: "pattern",
      params: () => {
        if (this.nLayers() === 0 || this.nHeads() === 0 || this.tiled()) return null;
        const { layer, head } = this.selected();
        return { layer, head };
      },
      decode: decodePattern,
      draw: (p, { revision }) => this.showPattern({ ...p, revision }),
      cache: PATTERN_CACHE,
      refetchOn: ["n_layers", "n_heads"],
    });
    this.syncTiles();
    this.updateSelection();
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:revision", () => this.clearOldPrompt());
    this.scope.on("change:tokens", () => this.syncTokens());
    this.scope.on("change:selected", () => this.syncSelected());
    this.scope.onChange(["n_layers", "n_heads"], () => this.drawGrid());
    this.scope.onChange(["prompt", "can_rerun"], () => this.syncPromptBox());
    this.scope.onChange(["color_scale", "mask_upper_tri"], () => this.applyTheme(this.theme));
    this.scope.onChange(["head_names", "show_axis_labels"], () => {
      this.syncLabels();
      this.drawGrid();
      this.updateSelection();
    });

    this.runButton.addEventListener(
      "click",
      this.scope.guard("run", () => this.run()),
    );
    this.prompt.addEventListener("keydown", (ev) => {
      // Text input belongs to the prompt, not to notebook shortcuts (Shift+Enter runs the cell there).
      ev.stopPropagation();
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.scope.guard("run", () => this.run())();
      }
    });

    this.grid.addEventListener(
      "click",
      this.scope.guard("view", (ev: MouseEvent) => this.gridClick(ev)),
    );
    this.grid.addEventListener(
      "keydown",
      this.scope.guard("view", (ev: KeyboardEvent) => this.gridKey(ev)),
    );
    this.grid.addEventListener("mousemove", (ev) => {
      const hit = this.gridHit(ev);
      this.grid.title = hit ? this.headName(hit.layer, hit.head) : "";
    });

    this.heatmap.onHover(
      this.scope.guard("view", (cell: Cell | null) => this.setHover(cell ? { query: cell.row, key: cell.col } : null)),
    );
    this.heatmap.onClick(this.scope.guard("view", (cell: Cell) => this.toggleLock(cell.row, cell.col)));
    this.heatmap.onClear(this.scope.guard("view", () => this.unlock()));
    this.heatmap.onTilesWanted((level, missing) => this.tilesWanted(level, missing));
    this.heatmap.onPaint((tag) => {
      if (tag === null) delete this.root.dataset.painted;
      else this.root.dataset.painted = tag;
    });

    this.strip.onHover(
      this.scope.guard("view", (i: number | null) =>
        this.setHover(i === null ? null : this.mode === "to" ? { query: i, key: null } : { query: null, key: i }),
      ),
    );
    this.strip.onClick(
      this.scope.guard("view", (i: number) =>
        this.mode === "to" ? this.toggleLock(i, null) : this.toggleLock(null, i),
      ),
    );
    this.strip.onClear(this.scope.guard("view", () => this.unlock()));

    this.modeButton.addEventListener(
      "click",
      this.scope.guard("view", () => {
        this.mode = this.mode === "to" ? "by" : "to";
        this.syncMode();
      }),
    );

    if (typeof IntersectionObserver === "function") {
      // Windowed notebooks wipe canvases of cells scrolled out of view.
      const io = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting)) this.drawGrid();
      });
      io.observe(this.grid);
      this.scope.onDispose(() => io.disconnect());
    }
  }

  // ---- model state ----------------------------------------------------------------------

  private revision(): number {
    return intOr(this.model.get("revision"), 0);
  }

  private nLayers(): number {
    return Math.max(0, intOr(this.model.get("n_layers"), 0));
  }

  private nHeads(): number {
    return Math.max(0, intOr(this.model.get("n_heads"), 0));
  }

  private masked(): boolean {
    return this.model.get("mask_upper_tri") === true;
  }

  /** A head's given name (`head_names`), else `L{layer}H{head}`. */
  private headName(layer: number, head: number): string {
    const names = this.model.get("head_names");
    const name = Array.isArray(names) ? names[layer * this.nHeads() + head] : undefined;
    return typeof name === "string" ? name : `L${layer}H${head}`;
  }

  /** `selected` cleaned up: layer/head inside the model, query/key inside the prompt or null. */
  private selected(): Selected {
    const raw: Partial<Selected> = this.model.get("selected") ?? {};
    const seq = this.pattern?.seq ?? this.tokens.length;
    const pos = (v: unknown) => {
      const i = intOr(v, null);
      return i !== null && i >= 0 && i < seq ? i : null;
    };
    return {
      layer: clamp(intOr(raw.layer, 0), 0, Math.max(0, this.nLayers() - 1)),
      head: clamp(intOr(raw.head, 0), 0, Math.max(0, this.nHeads() - 1)),
      query: pos(raw.query),
      key: pos(raw.key),
    };
  }

  private select(patch: Partial<Selected>): void {
    this.model.set("selected", { ...this.selected(), ...patch });
    this.model.save_changes();
  }

  /**
   * A new prompt (`revision` moved): clear what was drawn for the old one. The resources refetch
   * by themselves; what is already drawn for this revision or a newer one stays (the kernel can
   * answer before its `revision` change reaches the view, and that reply is not asked for again).
   */
  private clearOldPrompt(): void {
    const revision = this.revision();
    if (this.overview !== null && this.overview.revision < revision) {
      this.overview = null;
      this.drawGrid();
    }
    if (this.pattern !== null && this.pattern.revision < revision) {
      this.pattern = null;
      this.heatmap.setData(null, 0, 0);
      this.syncLabels();
    }
    if (this.tiledHead !== null && this.tiledHead.revision < revision) {
      this.tiledHead = null;
      this.heatmap.setData(null, 0, 0);
    }
    const current = (key: string) => Number(key.slice(0, key.indexOf(":"))) >= revision;
    this.tileCache.prune(current);
    this.lineCache.prune(current);
    this.syncTokens();
    this.syncTiles();
    this.updateSelection();
  }

  private syncTokens(): void {
    const raw = this.model.get("tokens");
    const tokens = Array.isArray(raw) ? raw.map(String) : [];
    if (
      tokens.length === this.tokens.length &&
      tokens.every((t, i) => t === this.tokens[i]) &&
      this.strip.length === tokens.length
    ) {
      return;
    }
    this.tokens = tokens;
    // params() is null now: nothing asked, nothing drawn (in the constructor the resource comes later)
    if (this.tiled() && this.patterns !== undefined) void this.patterns.fetch();
    this.strip.setTokens(this.tokens);
    this.strip.invalidateColors();
    this.syncLabels();
    this.updateSelection();
  }

  /** Heatmap axis labels; falls back to indices where the pattern is longer than the tokens. */
  private syncLabels(): void {
    if (this.model.get("show_axis_labels") === false) {
      this.heatmap.setLabels([], []);
      return;
    }
    const seq = this.pattern?.seq ?? this.tokens.length;
    const labels = Array.from({ length: seq }, (_, i) =>
      i < this.tokens.length ? tokenLabel(this.tokens[i]) : `#${i}`,
    );
    this.heatmap.setLabels(labels, labels);
  }

  /** Another head asks for its pattern; an echo that keeps layer/head asks nothing (the resource skips it). */
  private syncSelected(): void {
    void this.patterns.fetch();
    this.syncTiles();
    this.drawGrid();
    this.updateSelection();
  }

  private syncPromptBox(): void {
    const canRerun = this.model.get("can_rerun") !== false;
    this.prompt.hidden = !canRerun;
    this.runButton.hidden = !canRerun;
    this.prompt.disabled = !canRerun;
    this.runButton.disabled = !canRerun;
    if (document.activeElement !== this.prompt) this.prompt.value = String(this.model.get("prompt") ?? "");
  }

  private syncMode(): void {
    this.modeButton.textContent = this.mode === "to" ? "attends to" : "attended by";
    this.modeButton.dataset.mode = this.mode;
    this.modeButton.title =
      this.mode === "to"
        ? "Tokens coloured by how much the hovered token (as query) attends to them. Click to switch."
        : "Tokens coloured by how much they (as queries) attend to the hovered token. Click to switch.";
    this.updateSelection();
  }

  protected applyTheme(theme: Theme): void {
    this.scale = parseScale(this.model.get("color_scale"));
    this.cmap = anchoredColormap(theme, this.scale);
    this.cellMap = this.masked() ? withEmptyCells(this.cmap, theme) : this.cmap;
    this.heatmap.setColormap(this.cellMap, this.scale.lo, this.scale.hi);
    if (this.pattern !== null) this.showPattern(this.pattern);
    this.strip.invalidateColors();
    this.renderThumbs();
    this.drawGrid();
    this.updateSelection();
  }

  protected loadingChanged(): void {
    this.updateState();
  }

  protected bannerChanged(): void {
    this.updateState();
  }

  // ---- data -----------------------------------------------------------------------------

  /** Heads come as tiles (the prompt is longer than `EXACT_MAX_SEQ`). */
  private tiled(): boolean {
    return this.tokens.length > EXACT_MAX_SEQ;
  }

  private topLevel(): number {
    return tileLevels(this.tokens.length, TILE) - 1;
  }

  private tileId(revision: number, layer: number, head: number, level: number, row: number, col: number): string {
    return `${revision}:${layer}:${head}:${level}:${row}:${col}`;
  }

  /** Tiled mode: show the selected head's overview tile (cached or asked for); its finer tiles follow. */
  private syncTiles(): void {
    if (!this.tiled() || this.nLayers() === 0 || this.nHeads() === 0) return;
    const revision = this.revision();
    const { layer, head } = this.selected();
    const h = this.tiledHead;
    if (h !== null && h.revision === revision && h.layer === layer && h.head === head) return;
    const top = this.topLevel();
    const overview = this.tileCache.get(this.tileId(revision, layer, head, top, 0, 0));
    if (overview !== undefined) this.showTiles(revision, layer, head, overview);
    else this.requestTile(revision, layer, head, top, 0, 0);
  }

  private showTiles(revision: number, layer: number, head: number, overview: Tile): void {
    const seq = this.tokens.length;
    if (this.pattern !== null) {
      this.pattern = null;
      this.syncLabels();
    }
    this.tiledHead = { revision, layer, head };
    this.heatmap.setTiled(seq, seq, { tile: TILE, levels: this.topLevel() + 1 }, `${revision}:${layer}:${head}`);
    this.heatmap.putTile(overview);
    this.updateSelection();
    // Then, a few at a time (a click on a head not here yet is not queued behind them all), the heads an arrow key
    // reaches (beside it, then above and below) and the rest of this layer, nearest first: a switch to them is
    // drawn without a round trip.
    const heads = Array.from({ length: this.nHeads() }, (_, h) => h).filter((h) => h !== head);
    heads.sort((a, b) => Math.abs(a - head) - Math.abs(b - head) || b - a); // the next head before the previous
    const near = heads.slice(0, 2).map((h) => ({ revision, layer, head: h }));
    const across = [layer + 1, layer - 1]
      .filter((l) => l >= 0 && l < this.nLayers())
      .map((l) => ({ revision, layer: l, head }));
    const rest = heads.slice(2).map((h) => ({ revision, layer, head: h }));
    this.prefetch = [...near, ...across, ...rest].slice(0, PREFETCH_HEADS);
    this.prefetchNext();
  }

  /** Ask for the next overview tiles to fetch ahead while fewer than `PREFETCH_OUT` overview tiles are out. */
  private prefetchNext(): void {
    const top = this.topLevel();
    while (this.prefetch.length > 0) {
      let out = 0;
      for (const t of this.tilesOut.values()) if (t.overview) out++;
      if (out >= PREFETCH_OUT) return;
      const { revision, layer, head } = this.prefetch.shift()!;
      if (revision !== this.revision()) continue;
      if (!this.tileCache.has(this.tileId(revision, layer, head, top, 0, 0)))
        this.requestTile(revision, layer, head, top, 0, 0);
    }
  }

  /** The heatmap's frame wants these tiles of the shown head: put the cached ones, ask for the rest. */
  private tilesWanted(level: number, missing: Array<{ row: number; col: number }>): void {
    const h = this.tiledHead;
    if (h === null) return;
    const wanted = new Set<string>();
    for (const { row, col } of missing) {
      const id = this.tileId(h.revision, h.layer, h.head, level, row, col);
      wanted.add(id);
      const hit = this.tileCache.get(id);
      if (hit !== undefined) this.heatmap.putTile(hit);
      else this.requestTile(h.revision, h.layer, h.head, level, row, col);
    }
    // Tiles that scrolled away (or of a level the zoom left) are not waited for.
    for (const [id, out] of this.tilesOut)
      if (!out.overview && !wanted.has(id)) {
        this.tilesOut.delete(id);
        this.scope.client.cancel(out.supersede);
      }
  }

  private requestTile(revision: number, layer: number, head: number, level: number, row: number, col: number): void {
    const id = this.tileId(revision, layer, head, level, row, col);
    if (this.tilesOut.has(id)) return;
    const overview = level === this.topLevel();
    const supersede = `tile:${id}`;
    this.tilesOut.set(id, { supersede, overview });
    this.scope.client
      .request("tile", { layer, head, level, row, col }, { supersede })
      .then(
        (reply) => {
          if (this.tilesOut.get(id)?.supersede === supersede) this.tilesOut.delete(id);
          if (Number(reply.result?.revision) !== revision || revision < this.revision()) return; // another prompt's
          let tile: Tile;
          try {
            tile = decodeTile(reply);
          } catch (e) {
            this.banner.fail("tile", e);
            return;
          }
          this.banner.clear("tile");
          this.tileCache.set(id, tile);
          const h = this.tiledHead;
          const shown = h !== null && h.revision === revision && h.layer === layer && h.head === head;
          const sel = this.selected();
          if (shown) this.heatmap.putTile(tile);
          else if (overview && sel.layer === layer && sel.head === head) this.showTiles(revision, layer, head, tile);
        },
        (e) => {
          if (this.tilesOut.get(id)?.supersede === supersede) this.tilesOut.delete(id);
          if (isCancelled(e)) return;
          // An HTML export holds every head's overview and the selected head's tiles: a finer tile it lacks
          // leaves the coarser one showing.
          if (!overview && e instanceof RemoteError && e.type === "NotExported") return;
          // A head fetched ahead and not selected: asked again (and its error shown) if it is selected.
          const sel = this.selected();
          if (overview && (sel.layer !== layer || sel.head !== head)) return;
          this.banner.fail("tile", e);
        },
      )
      .then(() => {
        if (overview) this.prefetchNext(); // after the tile is cached: it is not asked for again
      });
  }

  /** Tiled mode: the row or column the readout and the strip need now (null: none). */
  private lineWanted(focus: { query: number | null; key: number | null }): { axis: string; index: number } | null {
    if (!this.tiled() || !this.linesExported) return null;
    if (this.mode === "to" && focus.query !== null) return { axis: "query", index: focus.query };
    if (this.mode === "by" && focus.key !== null) return { axis: "key", index: focus.key };
    return null;
  }

  /** The exact row/column for `want` if here; else ask for it (a newer want supersedes) and return null. */
  private line(want: { axis: string; index: number }): Float32Array | null {
    const revision = this.revision();
    const { layer, head } = this.selected();
    const id = `${revision}:${layer}:${head}:${want.axis}:${want.index}`;
    const hit = this.lineCache.get(id);
    if (hit !== undefined) return hit;
    if (this.lineOut === id) return null;
    this.lineOut = id;
    this.scope.client.request("line", { layer, head, ...want }, { supersede: "line" }).then(
      (reply) => {
        if (this.lineOut === id) this.lineOut = null;
        if (Number(reply.result?.revision) !== revision) return;
        try {
          const decoded = decodeArray(reply.result.values as ArrayHeader, reply.buffers);
          this.lineCache.set(id, decoded.data as Float32Array);
        } catch (e) {
          this.banner.fail("line", e);
          return;
        }
        this.updateSelection();
      },
      (e) => {
        if (this.lineOut === id) this.lineOut = null;
        if (isCancelled(e)) return;
        if (e instanceof RemoteError && e.type === "NotExported") {
          this.linesExported = false;
          this.updateSelection();
          return;
        }
        this.banner.fail("line", e);
      },
    );
    return null;
  }

  private showPattern(p: Pattern & { revision: number }): void {
    const resized = this.pattern?.seq !== p.seq;
    if (this.masked()) p = { ...p, data: maskUpperTri(p.data, p.seq) };
    this.pattern = p;
    if (resized) this.syncLabels();
    this.heatmap.setData(p.data, p.seq, p.seq, `${p.revision}:${p.layer}:${p.head}`);
    this.updateSelection();
  }

  /** Re-run the model on the prompt box; the kernel bumps `revision` and the resources refetch. */
  private run(): void {
    if (this.model.get("can_rerun") === false) return;
    this.runProgress = { done: 0, total: Math.max(1, this.nLayers()), label: "" };
    void this.scope.command(
      "run",
      { prompt: this.prompt.value },
      {
        onProgress: (p) => {
          this.runProgress = p;
          this.updateState();
        },
      },
    );
  }

  // ---- rendering ------------------------------------------------------------------------

  private updateState(): void {
    const sel = this.selected();
    const running = this.scope.busy("run");
    let state: State;
    if (running) state = "running";
    else if (this.scope.loading) state = "loading";
    else if (this.banner.visible) state = "error";
    else state = "ready";
    const d = this.root.dataset;
    d.state = state;
    d.revision = String(this.revision());
    d.layer = String(sel.layer);
    d.head = String(sel.head);

    this.progress.hidden = !running;
    if (running) {
      const p = this.runProgress;
      this.progress.max = Math.max(1, p.total);
      this.progress.value = clamp(p.done, 0, p.total);
      this.status.textContent = `running: layer ${p.done}/${p.total}`;
      this.status.title = p.label;
    } else {
      this.status.title = "";
      this.status.textContent =
        state === "loading"
          ? "loading…"
          : state === "error"
            ? "error"
            : `${this.tokens.length} tokens · ${this.nLayers()}×${this.nHeads()} heads`;
    }
  }

  /** Propagate lock/hover to the heatmap crosshair, token colours, marks and the readout. */
  private updateSelection(): void {
    const sel = this.selected();
    const locked = sel.query !== null || sel.key !== null;
    const focus = locked ? { query: sel.query, key: sel.key } : this.hover;
    const p = this.pattern;
    this.heatmap.setLocked(sel.query !== null && sel.key !== null ? { row: sel.query, col: sel.key } : null);
    this.heatmap.highlight(focus.query, focus.key);
    this.strip.setLocked(this.mode === "to" ? sel.query : sel.key);
    this.strip.setMarks(focus.query, focus.key);

    let weights: Float32Array | null = null;
    const want = this.lineWanted(focus);
    const line = want === null ? null : this.line(want);
    if (line !== null) weights = line;
    else if (p !== null) {
      if (this.mode === "to" && focus.query !== null && focus.query < p.seq) {
        weights = p.data.subarray(focus.query * p.seq, (focus.query + 1) * p.seq);
      } else if (this.mode === "by" && focus.key !== null && focus.key < p.seq) {
        weights = new Float32Array(p.seq);
        for (let q = 0; q < p.seq; q++) weights[q] = p.data[q * p.seq + focus.key];
      }
    }
    this.strip.setWeights(weights, this.cellMap, this.scale.lo, this.scale.hi);

    // One line with each token shortened (whole in the title): a long token must not reflow the strip bar.
    setLine(this.readout, (quote) => {
      const tok = (i: number) => quote(this.tokens[i] ?? "");
      let text = this.headName(sel.layer, sel.head);
      if (focus.query !== null) text += `  query ${focus.query} ${tok(focus.query)}`;
      if (focus.key !== null) text += `${focus.query !== null ? " ->" : " "} key ${focus.key} ${tok(focus.key)}`;
      if (focus.query !== null && focus.key !== null && p !== null && focus.query < p.seq && focus.key < p.seq) {
        const masked = this.masked() && focus.key > focus.query;
        text += masked ? ": masked" : `: ${formatValue(p.data[focus.query * p.seq + focus.key])}`;
      } else if (focus.query !== null && focus.key !== null && this.tiled()) {
        const masked = this.masked() && focus.key > focus.query;
        const value = line === null ? null : line[this.mode === "to" ? focus.key : focus.query];
        if (masked) text += ": masked";
        else if (value !== null && value !== undefined) text += `: ${formatValue(value)}`;
        else if (!this.linesExported) text += this.tileReadout(focus.query, focus.key);
        else text += ": …";
      }
      if (focus.query === null && focus.key === null) text += "  hover a cell or token; click to lock";
      return text;
    });
    this.updateState();
  }

  /** Without exact lines (an HTML export): the cell's value in the finest tile held, as quantised for colour. */
  private tileReadout(query: number, key: number): string {
    const held = this.heatmap.tileValue(query, key);
    if (held === null) return ": …";
    const side = 2 ** held.level;
    return held.level === 0
      ? `: ≈${formatValue(held.value)}`
      : `: ≈${formatValue(held.value)} (the extreme of its ${side}×${side} block; zoom in for the cell)`;
  }

  private setHover(h: { query: number | null; key: number | null } | null): void {
    this.hover = h ?? { query: null, key: null };
    this.updateSelection();
  }

  /** Click on what is locked unlocks; anything else locks it. */
  private toggleLock(query: number | null, key: number | null): void {
    const sel = this.selected();
    if (sel.query === query && sel.key === key) this.unlock();
    else this.select({ query, key });
  }

  private unlock(): void {
    const sel = this.selected();
    if (sel.query !== null || sel.key !== null) this.select({ query: null, key: null });
  }

  // ---- head grid ------------------------------------------------------------------------

  /** Colour the overview thumbnails into one source image: heads across, layers down. */
  private renderThumbs(): void {
    const o = this.overview;
    const ctx = this.gridSource.getContext("2d");
    if (o === null || ctx === null || o.size === 0 || o.nLayers === 0 || o.nHeads === 0) return;
    const { nLayers: L, nHeads: H, size: s, thumbs } = o;
    const width = H * s;
    const arranged = new Float32Array(L * H * s * s);
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        const src = (l * H + h) * s * s;
        for (let i = 0; i < s; i++)
          arranged.set(thumbs.subarray(src + i * s, src + (i + 1) * s), (l * s + i) * width + h * s);
      }
    }
    this.gridSource.width = width;
    this.gridSource.height = L * s;
    const image = ctx.createImageData(width, L * s);
    colorPixels(arranged, this.cmap, this.scale.lo, this.scale.hi, image.data);
    ctx.putImageData(image, 0, 0);
  }

  private drawGrid(): void {
    const L = this.nLayers();
    const H = this.nHeads();
    const pitch = clamp(Math.floor(Math.min(300 / Math.max(H, 1), 520 / Math.max(L, 1))), 8, 36);
    this.gridPitch = pitch;
    const width = GRID_MARGIN_LEFT + H * pitch;
    const height = GRID_MARGIN_TOP + L * pitch;
    const c = this.grid;
    const d = c.dataset;
    d.originX = String(GRID_MARGIN_LEFT);
    d.originY = String(GRID_MARGIN_TOP);
    d.cellWidth = String(pitch);
    d.cellHeight = String(pitch);
    c.style.width = `${width}px`;
    c.style.height = `${height}px`;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(width * dpr)) c.width = Math.round(width * dpr);
    if (c.height !== Math.round(height * dpr)) c.height = Math.round(height * dpr);
    const ctx = c.getContext("2d");
    if (ctx === null) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(this.root);
    const text = style.color || "#333";
    const accent = style.getPropertyValue("--jp-brand-color1").trim() || "#1976d2";
    const muted = style.getPropertyValue("--jp-layout-color2").trim() || "rgba(128,128,128,0.2)";
    const gap = pitch >= 12 ? 1 : 0;
    const o = this.overview;
    const thumbsReady = o !== null && o.nLayers === L && o.nHeads === H && o.size > 0;
    if (thumbsReady) ctx.imageSmoothingEnabled = o.size > pitch;
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        const x = GRID_MARGIN_LEFT + h * pitch;
        const y = GRID_MARGIN_TOP + l * pitch;
        if (thumbsReady)
          ctx.drawImage(this.gridSource, h * o.size, l * o.size, o.size, o.size, x, y, pitch - gap, pitch - gap);
        else {
          ctx.fillStyle = muted;
          ctx.fillRect(x, y, pitch - gap, pitch - gap);
        }
      }
    }
    ctx.fillStyle = text;
    ctx.font = `10px ${style.getPropertyValue("--jp-ui-font-family").trim() || "sans-serif"}`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    const rowStride = Math.ceil(12 / pitch);
    for (let l = 0; l < L; l += rowStride)
      ctx.fillText(`L${l}`, GRID_MARGIN_LEFT - 4, GRID_MARGIN_TOP + (l + 0.5) * pitch);
    ctx.textAlign = "center";
    const colStride = Math.ceil(22 / pitch);
    for (let h = 0; h < H; h += colStride)
      ctx.fillText(`H${h}`, GRID_MARGIN_LEFT + (h + 0.5) * pitch, GRID_MARGIN_TOP / 2);
    if (L > 0 && H > 0) {
      const { layer, head } = this.selected();
      ctx.strokeStyle = accent;
      ctx.lineWidth = 2;
      ctx.strokeRect(GRID_MARGIN_LEFT + head * pitch - 1, GRID_MARGIN_TOP + layer * pitch - 1, pitch + 1, pitch + 1);
    }
  }

  private gridHit(ev: MouseEvent): { layer: number; head: number } | null {
    const rect = this.grid.getBoundingClientRect();
    const pitch = this.gridPitch;
    if (pitch <= 0) return null;
    const head = Math.floor((ev.clientX - rect.left - GRID_MARGIN_LEFT) / pitch);
    const layer = Math.floor((ev.clientY - rect.top - GRID_MARGIN_TOP) / pitch);
    if (layer < 0 || head < 0 || layer >= this.nLayers() || head >= this.nHeads()) return null;
    return { layer, head };
  }

  private gridClick(ev: MouseEvent): void {
    const hit = this.gridHit(ev);
    if (hit !== null) this.select(hit);
  }

  private gridKey(ev: KeyboardEvent): void {
    const { layer, head } = this.selected();
    const moves: Record<string, [number, number]> = {
      ArrowUp: [-1, 0],
      ArrowDown: [1, 0],
      ArrowLeft: [0, -1],
      ArrowRight: [0, 1],
    };
    const move = moves[ev.key];
    if (move === undefined) return;
    ev.preventDefault();
    ev.stopPropagation();
    const next = {
      layer: clamp(layer + move[0], 0, Math.max(0, this.nLayers() - 1)),
      head: clamp(head + move[1], 0, Math.max(0, this.nHeads() - 1)),
    };
    if (next.layer !== layer || next.head !== head) this.select(next);
  }
}

/** anywidget entry point: one AttentionView per rendered output. */
export default renderView<AttentionModel>("AttentionView", (model, host) => new AttentionView(model, host));
