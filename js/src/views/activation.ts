/**
 * ActivationView front end: one TokenStrip per prompt, tokens coloured by one neuron (or a
 * direction) of the hooked layer on a diverging scale centred at zero; a layer picker, a neuron
 * box, and a readout with the hovered (else selected) token's value and its top neurons, each a
 * button that selects that neuron.
 *
 * Two resources (`resource.ts`: a reply for an old revision is never drawn, a `revision` change
 * refetches): `values` ({layer, neuron}: one float16 array for all prompts cut by int32 offsets,
 * plus max |value|), cached per revision and unit; `top` ({layer, prompt_index, position, k}) per
 * hovered token, cached too. `data-state` on the root says where the values are (loading, ready,
 * error), and on the top list where the top neurons are (loading, ready).
 */

import "../lib/base.css";
import "./activation.css";

import { type ArrayHeader, asFloat32, decodeArray } from "../lib/codec";
import {
  anchoredColormap,
  type Colormap,
  type ColorScale,
  divergingColormap,
  parseScale,
  type Theme,
} from "../lib/colormap";
import type { Response } from "../lib/protocol";
import type { Resource } from "../lib/resource";
import { setLine } from "../lib/text";
import { TokenStrip } from "../lib/tokens";
import {
  type BaseTraits,
  button,
  clamp,
  el,
  intOr,
  parseUnitId,
  renderView,
  type UnitIdSpec,
  View,
  type ViewModel,
} from "../lib/view";

export interface Selected {
  layer: number;
  /** null: the direction. */
  neuron: number | null;
  prompt_index: number | null;
  position: number | null;
}

/** The ActivationView widget's traits (Python: `mi_widgets/widgets/activation.py`). */
export interface ActivationTraits extends BaseTraits {
  hook: string;
  /** Full hook name per available layer. */
  hooks: string[];
  /** Model layer numbers that can be shown. */
  layers: number[];
  n_layers: number;
  /** Width of the hooked activations. */
  d: number;
  /** Token labels per prompt. */
  tokens: string[][];
  has_direction: boolean;
  /** What the layer axis and a unit are called ("layer", "neuron"; CircuitsVis's dimension names). */
  layer_name: string;
  unit_name: string;
  /** Per layer / unit / prompt; [] = "L0" / "n12" / the prompt's index. */
  layer_labels: string[];
  unit_labels: string[];
  prompt_labels: string[];
  /** {} = each unit over +-its max |value| (diverging); else a fixed, zero-anchored scale. */
  color_scale: Partial<ColorScale>;
  selected: Selected;
}

/** A fixed colour scale, or null for the shown unit's own +-max |value|. */
export function fixedScale(raw: unknown): ColorScale | null {
  return raw !== null && typeof raw === "object" && "lo" in raw && "hi" in raw ? parseScale(raw) : null;
}

/** `labels[i]` when the list has it, else `fallback`. */
function labelAt(labels: unknown, i: number, fallback: string): string {
  const v = Array.isArray(labels) ? labels[i] : undefined;
  return typeof v === "string" ? v : fallback;
}

export interface Values {
  /** Max |value| over all prompts (0 when none is finite and non-zero). */
  range: number;
  /** Where each prompt's values start in `data`, plus the end. */
  offsets: Int32Array;
  data: Float32Array;
}

/** Values as drawn: for which revision and unit ("revision:layer:unit", the root's `data-painted`). */
interface Shown extends Values {
  key: string;
  layer: number;
  neuron: number | null;
}

export interface Top {
  indices: Int32Array;
  values: Float32Array;
}

interface Focus {
  prompt_index: number;
  position: number;
}

interface ValuesParams extends Record<string, unknown> {
  layer: number;
  neuron: number | null;
}

interface TopParams extends Record<string, unknown> {
  prompt_index: number;
  position: number;
  layer: number;
  k: number;
}

export const TOP_K = 10;
const VALUES_CACHE = 16;
const TOP_CACHE = 256;

/** "n12", or "direction". */
export function unitLabel(neuron: number | null): string {
  return neuron === null ? "direction" : `n${neuron}`;
}

/** A signed, fixed-width number for readouts ("+1.234", "−0.050", "NaN"). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+inf" : "−inf";
  const a = Math.abs(v);
  const text = a !== 0 && (a >= 1e4 || a < 1e-3) ? a.toExponential(2) : a.toFixed(3);
  return `${v < 0 ? "−" : "+"}${text}`;
}

/** How the neuron box reads what the user typed (see parseUnitId): "-1" is a neuron out of range. */
export const NEURON_ID: UnitIdSpec = { unit: "neuron", none: "this view has no neurons", signed: true };

/** Decode and check a `values` reply against the prompts' token counts. */
export function decodeValues({ result, buffers }: Response, tokens: string[][]): Values {
  const data = asFloat32(decodeArray(result.values as ArrayHeader, buffers));
  const offsets = decodeArray(result.offsets as ArrayHeader, buffers).data;
  const n = tokens.length;
  if (!(offsets instanceof Int32Array) || offsets.length !== n + 1) {
    throw new Error(`values reply needs ${n + 1} int32 offsets (one per prompt, plus the end), got ${offsets.length}`);
  }
  for (let p = 0; p < n; p++) {
    const length = offsets[p + 1] - offsets[p];
    if (length !== tokens[p].length)
      throw new Error(`values reply has ${length} values for prompt ${p}, which has ${tokens[p].length} tokens`);
  }
  if (data.length !== offsets[n]) throw new Error(`values reply has ${data.length} values, offsets say ${offsets[n]}`);
  const range = Number(result.range);
  return { range: Number.isFinite(range) && range > 0 ? range : 0, offsets, data };
}

/** Decode and check a `top` reply. */
export function decodeTop({ result, buffers }: Response): Top {
  const indices = decodeArray(result.indices as ArrayHeader, buffers).data;
  const values = asFloat32(decodeArray(result.values as ArrayHeader, buffers));
  if (!(indices instanceof Int32Array) || indices.length !== values.length) {
    throw new Error(
      `top reply needs int32 indices and values of one length, got ${indices.length} and ${values.length}`,
    );
  }
  return { indices, values };
}

class ActivationView extends View<ActivationTraits> {
  private readonly layerSelect: HTMLSelectElement;
  private readonly layerName: HTMLSpanElement;
  private readonly unitName: HTMLSpanElement;
  private readonly layerLabel: HTMLSpanElement;
  private readonly neuronInput: HTMLInputElement;
  private readonly neuronRange: HTMLSpanElement;
  private readonly neuronMessage: HTMLSpanElement;
  private readonly directionButton: HTMLButtonElement;
  private readonly scale: HTMLSpanElement;
  private readonly stripsBox: HTMLDivElement;
  private readonly readoutText: HTMLDivElement;
  private readonly topList: HTMLOListElement;
  private readonly values: Resource<ValuesParams, Values>;
  private readonly top: Resource<TopParams, Top>;

  private cmap: Colormap;
  private fixed: ColorScale | null = null;
  private strips: TokenStrip[] = [];
  private tokens: string[][] = [];
  private layersShown = "";
  private shown: Shown | null = null;
  private hover: Focus | null = null;

  constructor(model: ViewModel<ActivationTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-act", testid: "activation-view" });
    this.cmap = divergingColormap(this.theme);
    this.setScale(this.theme);

    const toolbar = el("div", "miw-act-toolbar");
    const layerBox = el("label", "miw-act-field");
    this.layerName = el("span", "", "layer-name");
    layerBox.append(this.layerName);
    this.layerSelect = el("select", "miw-act-select", "layer-select");
    this.layerSelect.setAttribute("aria-label", "layer");
    this.layerLabel = el("span", "miw-act-layer", "layer-label");
    layerBox.append(this.layerSelect, this.layerLabel);

    const neuronBox = el("label", "miw-act-field");
    this.unitName = el("span", "", "unit-name");
    neuronBox.append(this.unitName);
    this.neuronInput = el("input", "miw-act-neuron", "neuron-input");
    this.neuronInput.type = "text";
    this.neuronInput.inputMode = "numeric";
    this.neuronInput.autocomplete = "off";
    this.neuronInput.spellcheck = false;
    this.neuronInput.setAttribute("role", "spinbutton");
    this.neuronInput.setAttribute("aria-label", "neuron (Enter selects, arrows step, Shift+arrows step by 10)");
    this.neuronRange = el("span", "miw-muted", "neuron-range");
    neuronBox.append(this.neuronInput, this.neuronRange);
    this.neuronMessage = el("span", "miw-act-message", "neuron-message");
    this.neuronMessage.setAttribute("role", "status");
    this.directionButton = button("direction", "miw-button", "direction-button");
    this.directionButton.title = "Colour tokens by the direction given in Python (acts @ direction)";
    this.scale = el("span", "miw-act-scale", "scale");
    toolbar.append(layerBox, neuronBox, this.directionButton, this.neuronMessage, this.scale);

    this.stripsBox = el("div", "miw-act-strips", "strips");
    const readout = el("div", "miw-act-readout", "readout");
    this.readoutText = el("div", "miw-line miw-act-readout-text", "readout-text");
    this.readoutText.setAttribute("aria-live", "polite");
    this.topList = el("ol", "miw-act-top", "top-list");
    this.topList.setAttribute("aria-label", "top neurons at this token: click to select");
    readout.append(this.readoutText, this.topList);

    this.root.append(toolbar, this.banner.element, this.stripsBox, readout);

    // Declared before anything draws (lazy: fetched once the strips exist).
    this.values = this.scope.resource({
      method: "values",
      params: () => {
        const sel = this.selected();
        return { layer: sel.layer, neuron: sel.neuron };
      },
      key: () => this.tokens, // checked against them: values for other tokens are never drawn
      decode: (reply) => decodeValues(reply, this.tokens),
      draw: (v, { revision, params }) => {
        const key = `${revision}:${params.layer}:${params.neuron === null ? "direction" : params.neuron}`;
        this.show({ ...v, key, layer: params.layer, neuron: params.neuron });
      },
      cache: VALUES_CACHE,
      lazy: true,
    });
    this.top = this.scope.resource({
      method: "top",
      params: () => this.topParams(),
      decode: decodeTop,
      draw: (top) => this.renderTop(top),
      cache: TOP_CACHE,
      lazy: true,
    });

    this.wire();
    this.banner.render();
    this.syncControls();
    this.syncTokens();
    void this.values.fetch();
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:selected", () => {
      this.syncControls();
      void this.values.fetch();
      this.renderSelection();
    });
    // After the resources refetched (the scope listens first): the readout's value waits for the new values.
    this.scope.on("change:revision", () => {
      this.renderReadout();
      this.renderState();
    });
    this.scope.onChange(["layers", "hooks", "d", "has_direction", "layer_name", "unit_name", "layer_labels"], () =>
      this.syncControls(),
    );
    this.scope.onChange(["unit_labels"], () => {
      this.syncControls();
      this.renderReadout();
    });
    this.scope.onChange(["prompt_labels"], () => this.syncTokens());
    this.scope.onChange(["color_scale"], () => this.applyTheme(this.theme));
    // Read-only in Python, but `set_trait` can still replace it (tests/e2e/test_long_tokens_lab.py).
    this.scope.on("change:tokens", () => {
      this.syncTokens();
      void this.values.fetch(); // new tokens: a new key
    });

    this.layerSelect.addEventListener(
      "change",
      this.scope.guard("view", () => this.select({ layer: Number(this.layerSelect.value) })),
    );
    this.neuronInput.addEventListener(
      "keydown",
      this.scope.guard("view", (ev: KeyboardEvent) => this.neuronKey(ev)),
    );
    this.neuronInput.addEventListener(
      "change",
      this.scope.guard("view", () => this.commitNeuron()),
    );
    this.directionButton.addEventListener(
      "click",
      this.scope.guard("view", () => this.select({ neuron: null })),
    );
    this.topList.addEventListener(
      "click",
      this.scope.guard("view", (ev: MouseEvent) => {
        const b = (ev.target as Element | null)?.closest?.("[data-neuron]") as HTMLElement | null;
        if (b !== null && this.topList.contains(b)) this.select({ neuron: Number(b.dataset.neuron) });
      }),
    );
  }

  protected override loadingChanged(): void {
    this.renderState();
  }

  protected override bannerChanged(): void {
    this.renderState();
  }

  protected override applyTheme(theme: Theme): void {
    this.setScale(theme);
    for (const s of this.strips) s.invalidateColors();
    this.paint();
  }

  /** The theme's diverging map over +-max |value|, or the fixed scale's anchored map. */
  private setScale(theme: Theme): void {
    this.fixed = fixedScale(this.model.get("color_scale"));
    this.cmap = this.fixed === null ? divergingColormap(theme) : anchoredColormap(theme, this.fixed);
  }

  // ---- model state ----------------------------------------------------------------------

  private layerText(layer: number): string {
    return labelAt(this.model.get("layer_labels"), this.layers().indexOf(layer), `L${layer}`);
  }

  private unitText(neuron: number | null): string {
    return neuron === null ? "direction" : labelAt(this.model.get("unit_labels"), neuron, unitLabel(neuron));
  }

  private unitNoun(): string {
    const name = this.model.get("unit_name");
    return typeof name === "string" && name !== "" ? name : "neuron";
  }

  private layers(): number[] {
    const raw = this.model.get("layers");
    return Array.isArray(raw) ? raw.filter((l) => Number.isInteger(l)) : [];
  }

  private d(): number {
    return Math.max(0, intOr(this.model.get("d"), 0));
  }

  private hasDirection(): boolean {
    return this.model.get("has_direction") === true;
  }

  /** `selected` cleaned up: a known layer, a neuron in range (or null with a direction), a real token or nulls. */
  private selected(): Selected {
    const raw: Partial<Selected> = this.model.get("selected") ?? {};
    const layers = this.layers();
    const layer = intOr(raw.layer, null);
    const neuron = intOr(raw.neuron, null);
    const prompt = intOr(raw.prompt_index, null);
    const position = intOr(raw.position, null);
    const validPrompt = prompt !== null && prompt >= 0 && prompt < this.tokens.length ? prompt : null;
    const validPosition =
      validPrompt !== null && position !== null && position >= 0 && position < this.tokens[validPrompt].length
        ? position
        : null;
    return {
      layer: layer !== null && layers.includes(layer) ? layer : (layers[0] ?? 0),
      neuron: neuron !== null && neuron >= 0 && neuron < this.d() ? neuron : this.hasDirection() ? null : 0,
      prompt_index: validPosition === null ? null : validPrompt,
      position: validPosition,
    };
  }

  private select(patch: Partial<Selected>): void {
    this.model.set("selected", { ...this.selected(), ...patch });
    this.model.save_changes();
  }

  // ---- controls -------------------------------------------------------------------------

  private syncControls(): void {
    const layers = this.layers();
    const hooks = this.model.get("hooks") ?? [];
    const sel = this.selected();
    const signature = JSON.stringify([layers, hooks, this.model.get("layer_labels")]);
    if (signature !== this.layersShown) {
      this.layersShown = signature;
      this.layerSelect.replaceChildren(
        ...layers.map((layer, i) => {
          const option = document.createElement("option");
          option.value = String(layer);
          option.textContent = this.layerText(layer);
          option.title = String(hooks[i] ?? "");
          return option;
        }),
      );
    }
    const several = layers.length > 1;
    this.layerSelect.hidden = !several;
    this.layerSelect.value = String(sel.layer);
    const hook = hooks[layers.indexOf(sel.layer)] ?? "";
    this.layerLabel.textContent = several ? hook : `${this.layerText(sel.layer)} ${hook}`.trim();
    const layerName = this.model.get("layer_name");
    this.layerName.textContent = `${typeof layerName === "string" && layerName !== "" ? layerName : "layer"} `;
    this.unitName.textContent = `${this.unitNoun()} `;
    this.neuronInput.setAttribute(
      "aria-label",
      `${this.unitNoun()} (Enter selects, arrows step, Shift+arrows step by 10)`,
    );

    const d = this.d();
    const named = sel.neuron !== null && Array.isArray(this.model.get("unit_labels"));
    const unitLabelText = named ? labelAt(this.model.get("unit_labels"), sel.neuron ?? -1, "") : "";
    this.neuronRange.textContent = `of 0..${Math.max(0, d - 1)}${unitLabelText ? `: ${unitLabelText}` : ""}`;
    this.neuronInput.value = sel.neuron === null ? "" : String(sel.neuron);
    this.setNeuronMessage("");
    this.neuronInput.placeholder = sel.neuron === null ? "direction" : "";
    this.neuronInput.setAttribute("aria-valuemin", "0");
    this.neuronInput.setAttribute("aria-valuemax", String(Math.max(0, d - 1)));
    if (sel.neuron === null) this.neuronInput.removeAttribute("aria-valuenow");
    else this.neuronInput.setAttribute("aria-valuenow", String(sel.neuron));
    this.directionButton.hidden = !this.hasDirection();
    this.directionButton.setAttribute("aria-pressed", String(sel.neuron === null));
    this.directionButton.classList.toggle("miw-button-primary", sel.neuron === null);
    this.root.dataset.layer = String(sel.layer);
    this.root.dataset.neuron = sel.neuron === null ? "direction" : String(sel.neuron);
  }
  private setNeuronMessage(message: string): void {
    this.neuronMessage.textContent = message;
    this.neuronInput.setAttribute("aria-invalid", String(message !== ""));
    if (message === "") delete this.root.dataset.neuronError;
    else this.root.dataset.neuronError = "true";
  }

  private commitNeuron(): void {
    const parsed = parseUnitId(this.neuronInput.value, this.d(), NEURON_ID);
    if ("error" in parsed) {
      this.setNeuronMessage(parsed.error);
      return;
    }
    this.setNeuronMessage("");
    if (parsed.id !== this.selected().neuron) this.select({ neuron: parsed.id });
  }

  private neuronKey(ev: KeyboardEvent): void {
    ev.stopPropagation(); // typing digits must not reach notebook shortcuts
    if (ev.key === "Enter") {
      ev.preventDefault();
      this.commitNeuron();
    } else if (ev.key === "ArrowUp" || ev.key === "ArrowDown") {
      ev.preventDefault();
      const d = this.d();
      const typed = parseUnitId(this.neuronInput.value, d, NEURON_ID);
      const from = "id" in typed ? typed.id : (this.selected().neuron ?? -1);
      const step = (ev.key === "ArrowUp" ? 1 : -1) * (ev.shiftKey ? 10 : 1);
      this.neuronInput.value = String(clamp(from + step, 0, Math.max(0, d - 1)));
      this.commitNeuron();
    } else if (ev.key === "Escape") {
      const n = this.selected().neuron;
      this.neuronInput.value = n === null ? "" : String(n);
      this.setNeuronMessage("");
    }
  }

  // ---- tokens ---------------------------------------------------------------------------

  /** One strip per prompt; what was drawn for other tokens goes. */
  private syncTokens(): void {
    const raw = this.model.get("tokens");
    this.tokens = Array.isArray(raw) ? raw.map((t) => (Array.isArray(t) ? t.map(String) : [])) : [];
    this.strips = this.tokens.map((labels, p) => {
      const strip = new TokenStrip({ label: `prompt ${p} tokens` });
      strip.element.dataset.testid = "token-strip";
      strip.element.dataset.prompt = String(p);
      strip.setTokens(labels);
      strip.onHover(
        this.scope.guard("view", (i: number | null) =>
          this.setHover(i === null ? null : { prompt_index: p, position: i }),
        ),
      );
      strip.onClick(this.scope.guard("view", (i: number) => this.clickToken(p, i)));
      strip.onClear(this.scope.guard("view", () => this.select({ prompt_index: null, position: null })));
      return strip;
    });
    this.stripsBox.replaceChildren(
      ...this.strips.map((strip, p) => {
        const row = el("div", "miw-act-row", "prompt-row");
        const label = el("span", "miw-act-row-label miw-muted");
        label.textContent = labelAt(this.model.get("prompt_labels"), p, String(p));
        row.append(label, strip.element);
        return row;
      }),
    );
    this.shown = null;
    this.hover = null;
    this.paint();
    this.renderSelection();
  }

  private clickToken(prompt: number, position: number): void {
    const sel = this.selected();
    const same = sel.prompt_index === prompt && sel.position === position;
    this.select(same ? { prompt_index: null, position: null } : { prompt_index: prompt, position });
  }

  /**
   * Leaving the strips shows the selected token again; with none selected the last hovered token
   * stays in the readout, so its top neurons can still be clicked.
   */
  private setHover(focus: Focus | null): void {
    if (focus === null && this.selected().position === null) return;
    this.hover = focus;
    this.renderReadout();
  }

  // ---- data ---------------------------------------------------------------------------

  private show(v: Shown): void {
    this.shown = v;
    this.paint();
    this.renderReadout();
  }

  /**
   * The root's `data-state`: `loading` while values are asked for, `ready` once the selected unit's
   * are drawn, `error` when they failed (the banner says why).
   */
  private renderState(): void {
    if (this.values.loading) this.root.dataset.state = "loading";
    else if (this.values.current) this.root.dataset.state = "ready";
    else if (this.banner.visible) this.root.dataset.state = "error";
  }

  // ---- rendering ------------------------------------------------------------------------

  /** Colour every strip by its prompt's slice of the current values. */
  private paint(): void {
    const v = this.shown;
    const m = v !== null && v.range > 0 ? v.range : 1;
    const [lo, hi] = this.fixed === null ? [-m, m] : [this.fixed.lo, this.fixed.hi];
    this.strips.forEach((strip, p) => {
      if (v === null) {
        strip.setWeights(null, this.cmap, lo, hi);
        strip.setTooltips(null);
        return;
      }
      const slice = v.data.subarray(v.offsets[p], v.offsets[p + 1]);
      strip.setWeights(slice, this.cmap, lo, hi);
      strip.setTooltips((i) => formatValue(slice[i]));
    });
    if (v === null) {
      this.scale.textContent = "";
      delete this.root.dataset.painted;
      return;
    }
    const prompts = this.tokens.length === 1 ? "the prompt" : `all ${this.tokens.length} prompts`;
    this.scale.textContent =
      this.fixed === null
        ? `colour: ${formatValue(-v.range)} … ${formatValue(v.range)} (max |value| of ${this.layerText(v.layer)} ${this.unitText(v.neuron)} over ${prompts})`
        : `colour: ${formatValue(lo)} … ${formatValue(hi)} (fixed)`;
    this.root.dataset.painted = v.key;
    this.renderState();
  }

  private renderSelection(): void {
    const sel = this.selected();
    this.strips.forEach((strip, p) => {
      strip.setLocked(p === sel.prompt_index ? sel.position : null);
    });
    this.root.dataset.selected = sel.prompt_index === null ? "" : `${sel.prompt_index}:${sel.position}`;
    this.renderReadout();
  }

  /** What `top` asks for: the focused token's top neurons in the selected layer, or nothing without a focus. */
  private topParams(): TopParams | null {
    const f = this.focus();
    return f === null
      ? null
      : { prompt_index: f.prompt_index, position: f.position, layer: this.selected().layer, k: TOP_K };
  }

  private focus(): Focus | null {
    if (this.hover !== null) return this.hover;
    const sel = this.selected();
    return sel.prompt_index !== null && sel.position !== null
      ? { prompt_index: sel.prompt_index, position: sel.position }
      : null;
  }

  /** The hovered token, else the selected one: its value for the current unit and its top neurons. */
  private renderReadout(): void {
    const f = this.focus();
    const sel = this.selected();
    if (f === null || f.prompt_index >= this.tokens.length || f.position >= this.tokens[f.prompt_index].length) {
      setLine(this.readoutText, "Hover a token for its value and top neurons; click it to select it (view.selected).");
      this.topList.replaceChildren();
      delete this.topList.dataset.state;
      delete this.root.dataset.focus;
      return;
    }
    const v = this.shown;
    const value = v !== null && this.values.current ? formatValue(v.data[v.offsets[f.prompt_index] + f.position]) : "…";
    const token = this.tokens[f.prompt_index][f.position];
    setLine(
      this.readoutText,
      (quote) =>
        `${labelAt(this.model.get("prompt_labels"), f.prompt_index, `prompt ${f.prompt_index}`)}, token ${f.position} ${quote(token)} · ${this.layerText(sel.layer)} ${this.unitText(sel.neuron)}: ${value} · top ${this.unitNoun()}s:`,
    );
    this.root.dataset.focus = `${f.prompt_index}:${f.position}`;
    this.renderTopFor();
  }

  /**
   * Ask for the focused token's top neurons: a cached reply is drawn by the fetch itself, what is
   * drawn already is drawn again (the selected neuron may have changed), else an empty list until
   * they come. Nothing out after the fetch means what is drawn is what it asked for.
   */
  private renderTopFor(): void {
    const before = this.top.data;
    void this.top.fetch();
    if (this.top.loading) {
      this.topList.replaceChildren();
      this.topList.dataset.state = "loading";
    } else if (before !== null && this.top.data === before) {
      this.renderTop(before);
    }
  }

  private renderTop(top: Top): void {
    const current = this.selected().neuron;
    let m = 0;
    for (const v of top.values) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
    if (m === 0) m = 1;
    const items = Array.from(top.indices, (n, i) => {
      const li = document.createElement("li");
      const b = button("", "miw-button miw-button-small miw-act-top-button", "top-neuron");
      b.dataset.neuron = String(n);
      b.setAttribute("aria-pressed", String(n === current));
      b.title = `select ${this.unitNoun()} ${n}`;
      const name = el("span", "miw-act-top-name");
      name.textContent = this.unitText(n);
      const value = el("span", "miw-act-top-value");
      value.textContent = formatValue(top.values[i]);
      const bar = el("span", "miw-act-top-bar");
      bar.style.width = `${Math.round(clamp(Math.abs(top.values[i]) / m, 0, 1) * 40)}px`;
      b.append(name, value, bar);
      li.append(b);
      return li;
    });
    this.topList.replaceChildren(...items);
    this.topList.dataset.state = "ready";
  }
}

/** anywidget entry point: one ActivationView per rendered output. */
export default renderView<ViewModel<ActivationTraits>>(
  "ActivationView",
  (model, host) => new ActivationView(model, host),
);
