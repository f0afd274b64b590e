/**
 * LogitAttribution front end: how much each head and each layer's attention and MLP add to
 * logit(answer) − logit(wrong) at one position.
 *
 * A layer x head heatmap (diverging, centred at 0, symmetric range; cell text = the value when
 * cells are big enough), per-layer bars for attention (heads + b_O) and MLP on their own
 * symmetric scale, the remaining terms (embeddings, biases) as one line of text, and the total.
 * Hover or focus shows the exact value; a click selects in Python (`attr.selected`):
 * a head as {layer, head, component: "head"}, a bar as {layer, head: null, component: "attn" | "mlp"}.
 * Bars are buttons: Tab reaches them, arrows move between them, Enter/Space select.
 *
 * The numbers come by one request (`attribution`) as float32 arrays.
 */

import "../lib/base.css";
import "./logit_attribution.css";

import { type ArrayHeader, asFloat32, decodeArray, decodeShaped } from "../lib/codec";
import { type Colormap, cssColor, divergingColormap, type Theme } from "../lib/colormap";
import { CanvasHeatmap, type Cell } from "../lib/heatmap";
import type { Response } from "../lib/protocol";
import { displayToken, quoteToken, setLine, signed } from "../lib/text";
import { type BaseTraits, clamp, el, intOr, renderView, View, type ViewModel } from "../lib/view";

/** The LogitAttribution widget's traits (Python: `mi_widgets/widgets/logit_attribution.py`). */
export interface AttributionTraits extends BaseTraits {
  n_layers: number;
  n_heads: number;
  has_mlp: boolean;
  tokens: string[];
  prompt: string;
  position: number;
  answer_token: string;
  wrong_token: string;
  answer_id: number;
  wrong_id: number;
  total: number;
  output_total: number;
  softcap: number | null;
  selected: { layer: number | null; head: number | null; component: Component | null };
}

export type Component = "head" | "attn" | "mlp";

export interface Selection {
  layer: number;
  head: number | null;
  component: Component;
}

export interface AttributionData {
  nLayers: number;
  nHeads: number;
  hasMlp: boolean;
  total: number;
  /** [layers * heads], layer-major. */
  heads: Float32Array;
  attn: Float32Array;
  attnBias: Float32Array;
  mlps: Float32Array;
  terms: Array<{ name: string; value: number }>;
}

/** Lives in lib/text.ts now (composition uses it too); still exported here, where the tests import it. */
export { signed };

/** Largest |value| over the arrays (1 when all are 0 or non-finite): the symmetric colour range. */
export function symmetricExtent(...arrays: ArrayLike<number>[]): number {
  let m = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i])) m = Math.max(m, Math.abs(a[i]));
  return m > 0 ? m : 1;
}

/** Decode and check an `attribution` reply. */
export function decodeAttribution({ result, buffers }: Response): AttributionData {
  const nLayers = Number(result?.n_layers);
  const nHeads = Number(result?.n_heads);
  if (!(Number.isInteger(nLayers) && Number.isInteger(nHeads) && nLayers > 0 && nHeads > 0)) {
    throw new Error(`attribution reply has a bad shape: ${result?.n_layers} layers, ${result?.n_heads} heads`);
  }
  const get = (name: string, shape: number[]) => asFloat32(decodeShaped(result, buffers, name, shape, "attribution"));
  const names: unknown = result.terms;
  const values = decodeArray(result.term_values as ArrayHeader, buffers).data;
  if (!Array.isArray(names) || names.length !== values.length)
    throw new Error("attribution terms must name one value each");
  return {
    nLayers,
    nHeads,
    hasMlp: result.has_mlp !== false,
    total: Number(result.total),
    heads: get("heads", [nLayers, nHeads]),
    attn: get("attn", [nLayers]),
    attnBias: get("attn_bias", [nLayers]),
    mlps: get("mlps", [nLayers]),
    terms: names.map((name, i) => ({ name: String(name), value: values[i] })),
  };
}

export function selectionLabel(s: Selection | null): string {
  if (s === null) return "";
  return s.component === "head" ? `L${s.layer}H${s.head}` : `L${s.layer} ${s.component}`;
}

class LogitAttributionView extends View<AttributionTraits> {
  private readonly summary: HTMLDivElement;
  private readonly heatmap: CanvasHeatmap;
  private readonly scale: HTMLSpanElement;
  private readonly bars: HTMLDivElement;
  private readonly barsScale: HTMLSpanElement;
  private readonly terms: HTMLDivElement;
  private readonly readout: HTMLDivElement;

  private cmap: Colormap;
  /** The attribution drawn, and the revision it was computed for. */
  private data: (AttributionData & { revision: number }) | null = null;
  private hovered: Selection | null = null;
  private barButtons: Array<{ sel: Selection; button: HTMLButtonElement }> = [];

  constructor(model: ViewModel<AttributionTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-dla", testid: "logit-attribution" });
    this.cmap = divergingColormap(this.theme);
    this.summary = el("div", "miw-dla-summary", "summary");
    const body = el("div", "miw-dla-body");
    const left = el("div", "miw-dla-heads");
    const headsTitle = el("div", "miw-dla-title");
    headsTitle.textContent = "heads (layer × head)";
    this.scale = el("span", "miw-dla-scale", "scale");
    this.heatmap = new CanvasHeatmap(this.cmap, {
      label: "direct logit attribution per head: layers in rows, heads in columns; arrows move, Enter selects",
    });
    this.heatmap.focusElement.dataset.testid = "heads-heatmap";
    left.append(headsTitle, this.heatmap.element, this.scale);
    const right = el("div", "miw-dla-layers");
    const barsTitle = el("div", "miw-dla-title");
    barsTitle.textContent = "per layer: attention (heads + b_O) and MLP";
    this.bars = el("div", "miw-dla-bars", "bars");
    this.bars.setAttribute("role", "group");
    this.bars.setAttribute("aria-label", "per-layer attention and MLP contributions");
    this.barsScale = el("span", "miw-dla-scale", "bars-scale");
    right.append(barsTitle, this.bars, this.barsScale);
    body.append(left, right);
    this.terms = el("div", "miw-dla-terms", "terms");
    this.readout = el("div", "miw-line miw-dla-readout", "readout");
    this.readout.setAttribute("role", "status");

    this.root.append(this.summary, this.banner.element, body, this.terms, this.readout);
    this.scope.onDispose(() => this.heatmap.dispose());

    this.wire();
    this.renderSummary();
    this.banner.render();
    this.renderReadout();
    this.scope.resource({
      method: "attribution",
      decode: decodeAttribution,
      draw: (data, { revision }) => {
        this.data = { ...data, revision };
        this.draw();
      },
    });
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:selected", () => this.renderSelection());
    this.scope.onChange(["total", "output_total", "softcap", "answer_token", "wrong_token", "position", "tokens"], () =>
      this.renderSummary(),
    );
    this.heatmap.onHover(
      this.scope.guard("view", (cell: Cell | null) =>
        this.hover(cell === null ? null : { layer: cell.row, head: cell.col, component: "head" }),
      ),
    );
    this.heatmap.onClick(
      this.scope.guard("view", (cell: Cell) => this.click({ layer: cell.row, head: cell.col, component: "head" })),
    );
    this.heatmap.onClear(this.scope.guard("view", () => this.select(null)));
    this.bars.addEventListener(
      "keydown",
      this.scope.guard("view", (ev: KeyboardEvent) => this.barKey(ev)),
    );
  }

  // ---- model state ----------------------------------------------------------------------

  private selected(): Selection | null {
    const raw = (this.model.get("selected") ?? {}) as { layer?: unknown; head?: unknown; component?: unknown };
    if (!Number.isInteger(raw.layer)) return null;
    const layer = raw.layer as number;
    if (raw.component === "attn" || raw.component === "mlp") return { layer, head: null, component: raw.component };
    return Number.isInteger(raw.head) ? { layer, head: raw.head as number, component: "head" } : null;
  }

  private select(sel: Selection | null): void {
    this.model.set("selected", sel === null ? { layer: null, head: null, component: null } : { ...sel });
    this.model.save_changes();
  }

  private click(sel: Selection): void {
    this.select(selectionLabel(this.selected()) === selectionLabel(sel) ? null : sel);
  }

  private hover(sel: Selection | null): void {
    this.hovered = sel;
    this.renderReadout();
  }

  private barKey(ev: KeyboardEvent): void {
    const index = this.barButtons.findIndex((b) => b.button === document.activeElement);
    if (index < 0) return;
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[ev.key];
    if (step === undefined) {
      if (ev.key === "Escape") this.select(null);
      else return;
    } else {
      this.barButtons[clamp(index + step, 0, this.barButtons.length - 1)].button.focus();
    }
    ev.preventDefault();
    ev.stopPropagation(); // keep notebook command-mode shortcuts (arrows move cells) from firing too
  }

  protected applyTheme(theme: Theme): void {
    this.cmap = divergingColormap(theme);
    this.draw();
  }

  // ---- rendering ------------------------------------------------------------------------

  private renderSummary(): void {
    const answer = String(this.model.get("answer_token") ?? "");
    const wrong = String(this.model.get("wrong_token") ?? "");
    const position = intOr(this.model.get("position"), 0);
    const tokens = this.model.get("tokens");
    const after = Array.isArray(tokens) && position < tokens.length ? String(tokens[position]) : null;
    const total = Number(this.model.get("total"));
    const softcap = this.model.get("softcap");
    // With a soft cap (Gemma 2) the parts add up to the difference before it; say so, with the model's own after it.
    const capped =
      typeof softcap === "number"
        ? ` before the soft cap ${softcap} (the model's own, after it: ${signed(Number(this.model.get("output_total")))})`
        : "";
    // Tokens shortened on screen, whole in the title.
    setLine(this.summary, (quote) => {
      const at = after === null ? "" : ` (after ${quote(displayToken(after))})`;
      return `logit(${quote(answer)}) − logit(${quote(wrong)}) at position ${position}${at} = ${signed(total)}${capped}`;
    });
  }

  private draw(): void {
    const data = this.data;
    if (data === null) return;
    const m = symmetricExtent(data.heads);
    this.heatmap.setColormap(this.cmap, -m, m);
    this.heatmap.setLabels(
      Array.from({ length: data.nLayers }, (_, l) => `L${l}`),
      Array.from({ length: data.nHeads }, (_, h) => `H${h}`),
    );
    this.heatmap.element.style.height = `${clamp(data.nLayers * 40 + 90, 180, 520)}px`;
    this.heatmap.setCellText((r, c) => signed(data.heads[r * data.nHeads + c], 2));
    this.heatmap.setData(data.heads, data.nLayers, data.nHeads, String(data.revision));
    this.scale.textContent = `colour: ${signed(-m, 3)} … ${signed(m, 3)} (blue: favours ${quoteToken(String(this.model.get("wrong_token") ?? ""))})`;
    this.renderBars(data);
    this.terms.textContent = data.terms.map((t) => `${t.name} ${signed(t.value)}`).join(" · ");
    this.root.dataset.revision = String(data.revision);
    this.renderSelection();
  }

  private renderBars(data: AttributionData): void {
    const m = symmetricExtent(data.attn, data.hasMlp ? data.mlps : []);
    const focused = this.barButtons.findIndex((b) => b.button === document.activeElement);
    this.barButtons = [];
    this.bars.replaceChildren();
    for (let layer = 0; layer < data.nLayers; layer++) {
      const row = el("div", "miw-dla-bar-row");
      const label = el("span", "miw-dla-bar-label");
      label.textContent = `L${layer}`;
      row.append(label);
      const parts: Array<[Component, number]> = [["attn", data.attn[layer]]];
      if (data.hasMlp) parts.push(["mlp", data.mlps[layer]]);
      for (const [component, value] of parts) {
        const sel: Selection = { layer, head: null, component };
        const b = el("button", "miw-dla-bar", `bar-${component}-${layer}`);
        b.type = "button";
        b.setAttribute("aria-label", `layer ${layer} ${component === "attn" ? "attention" : "MLP"}: ${signed(value)}`);
        const name = el("span", "miw-dla-bar-name");
        name.textContent = component;
        const track = el("span", "miw-dla-bar-track");
        const fill = el("span", "miw-dla-bar-fill");
        const width = (Math.min(1, Math.abs(value) / m) * 50).toFixed(2);
        fill.style.width = `${width}%`;
        fill.style.left = value < 0 ? `${(50 - Number(width)).toFixed(2)}%` : "50%";
        fill.style.background = cssColor(this.cmap, value, -m, m);
        track.append(fill);
        const text = el("span", "miw-dla-bar-value");
        text.textContent = signed(value, 3);
        b.append(name, track, text);
        b.addEventListener(
          "click",
          this.scope.guard("view", () => this.click(sel)),
        );
        b.addEventListener(
          "mouseenter",
          this.scope.guard("view", () => this.hover(sel)),
        );
        b.addEventListener(
          "mouseleave",
          this.scope.guard("view", () => this.hover(null)),
        );
        b.addEventListener(
          "focus",
          this.scope.guard("view", () => this.hover(sel)),
        );
        b.addEventListener(
          "blur",
          this.scope.guard("view", () => this.hover(null)),
        );
        row.append(b);
        this.barButtons.push({ sel, button: b });
      }
      this.bars.append(row);
    }
    this.barsScale.textContent = `bars: ${signed(-m, 3)} … ${signed(m, 3)}`;
    if (focused >= 0 && focused < this.barButtons.length) this.barButtons[focused].button.focus();
  }

  private renderSelection(): void {
    const sel = this.selected();
    this.heatmap.setLocked(
      sel !== null && sel.component === "head" ? { row: sel.layer, col: sel.head as number } : null,
    );
    const label = selectionLabel(sel);
    for (const { sel: s, button } of this.barButtons) {
      const on = selectionLabel(s) === label;
      button.setAttribute("aria-pressed", String(on));
      button.classList.toggle("miw-dla-bar-selected", on);
    }
    this.root.dataset.selected = label;
    this.renderReadout();
  }

  /** The hovered head or bar, else the selected one, with its exact value. */
  private renderReadout(): void {
    const data = this.data;
    const sel = this.hovered ?? this.selected();
    if (data === null || sel === null || sel.layer >= data.nLayers) {
      setLine(
        this.readout,
        "Hover a head or a bar for its exact contribution; click to select it in Python (attr.selected).",
      );
      return;
    }
    const share = (v: number) =>
      data.total !== 0 && Number.isFinite(data.total) ? ` (${((100 * v) / data.total).toFixed(1)}% of the total)` : "";
    let text: string;
    if (sel.component === "head" && sel.head !== null && sel.head < data.nHeads) {
      const v = data.heads[sel.layer * data.nHeads + sel.head];
      text = `L${sel.layer}H${sel.head}: ${signed(v, 6)}${share(v)}`;
    } else if (sel.component === "attn") {
      const v = data.attn[sel.layer];
      text = `L${sel.layer} attention: ${signed(v, 6)}${share(v)} = heads ${signed(v - data.attnBias[sel.layer], 6)} + b_O ${signed(data.attnBias[sel.layer], 6)}`;
    } else if (sel.component === "mlp") {
      const v = data.mlps[sel.layer];
      text = `L${sel.layer} MLP: ${signed(v, 6)}${share(v)}`;
    } else {
      text = "";
    }
    setLine(this.readout, text);
  }
}

/** anywidget entry point: one LogitAttribution view per rendered output. */
export default renderView<ViewModel<AttributionTraits>>(
  "LogitAttribution",
  (model, host) => new LogitAttributionView(model, host),
);
