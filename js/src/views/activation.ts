/**
 * ActivationView front end: one TokenStrip per prompt, tokens coloured by one neuron (or a
 * direction) of the hooked layer on a diverging scale centred at zero; a layer picker, a neuron
 * box, and a readout with the hovered (else selected) token's value and its top neurons, each a
 * button that selects that neuron.
 *
 * Values come by request (`values`: one float16 array for all prompts cut by int32 offsets, plus
 * max |value|), cached per (revision, layer, unit); top neurons by request (`top`) per hovered
 * token. Replies computed for another revision are dropped (a change of `revision` refetches).
 */

import "../lib/base.css";
import "./activation.css";

import { type ArrayHeader, decodeArray } from "../lib/codec";
import { type Colormap, detectTheme, divergingColormap, type Theme } from "../lib/colormap";
import type { RequestClient } from "../lib/protocol";
import { setLine } from "../lib/text";
import { TokenStrip } from "../lib/tokens";
import {
  button,
  clamp,
  type ErrorBanner,
  el,
  intOr,
  parseUnitId,
  renderView,
  type UnitIdSpec,
  type ViewModel,
  ViewScope,
} from "../lib/view";

export type ActivationModel = ViewModel;

export interface Selected {
  layer: number;
  /** null: the direction. */
  neuron: number | null;
  prompt: number | null;
  position: number | null;
}

interface Values {
  key: string;
  range: number;
  offsets: Int32Array;
  data: Float32Array;
}

interface Top {
  indices: Int32Array;
  values: Float32Array;
}

interface Focus {
  prompt: number;
  position: number;
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

class ActivationView {
  private readonly model: ActivationModel;
  private readonly root: HTMLDivElement;
  private readonly scope: ViewScope;
  private readonly client: RequestClient;
  private readonly banner: ErrorBanner;
  private readonly layerSelect: HTMLSelectElement;
  private readonly layerLabel: HTMLSpanElement;
  private readonly neuronInput: HTMLInputElement;
  private readonly neuronRange: HTMLSpanElement;
  private readonly neuronMessage: HTMLSpanElement;
  private readonly directionButton: HTMLButtonElement;
  private readonly scale: HTMLSpanElement;
  private readonly stripsBox: HTMLDivElement;
  private readonly readoutText: HTMLDivElement;
  private readonly topList: HTMLOListElement;

  private theme: Theme;
  private cmap: Colormap;
  private revision: number;
  private strips: TokenStrip[] = [];
  private tokens: string[][] = [];
  private layersShown = "";
  private readonly values = new Map<string, Values>();
  private shown: Values | null = null;
  private valuesWanted: string | null = null;
  private readonly tops = new Map<string, Top>();
  private topWanted: string | null = null;
  private hover: Focus | null = null;

  constructor(model: ActivationModel, host: HTMLElement) {
    this.model = model;
    this.theme = detectTheme(host);
    this.cmap = divergingColormap(this.theme);
    this.revision = intOr(model.get("revision"), 0);
    this.scope = new ViewScope(model);
    this.client = this.scope.client;
    this.banner = this.scope.banner;
    this.root = el("div", "miw-root miw-act", "activation-view");

    const toolbar = el("div", "miw-act-toolbar");
    const layerBox = el("label", "miw-act-field");
    layerBox.append("layer ");
    this.layerSelect = el("select", "miw-act-select", "layer-select");
    this.layerSelect.setAttribute("aria-label", "layer");
    this.layerLabel = el("span", "miw-act-layer", "layer-label");
    layerBox.append(this.layerSelect, this.layerLabel);

    const neuronBox = el("label", "miw-act-field");
    neuronBox.append("neuron ");
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
    host.append(this.root);
    this.scope.onDispose(() => this.root.remove());

    this.wire();
    this.banner.render();
    this.syncControls();
    this.syncTokens();
    this.fetchValues();
  }

  dispose(): void {
    this.scope.dispose();
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:selected", () => {
      this.syncControls();
      this.fetchValues();
      this.renderSelection();
    });
    this.scope.on("change:revision", () => {
      this.revision = intOr(this.model.get("revision"), 0);
      this.values.clear();
      this.tops.clear();
      this.fetchValues();
      this.renderReadout();
    });
    for (const name of ["layers", "hooks", "d", "has_direction"])
      this.scope.on(`change:${name}`, () => this.syncControls());
    this.scope.on("change:tokens", () => {
      this.syncTokens();
      this.values.clear();
      this.fetchValues();
    });
    this.scope.on("change:error", () => this.banner.render());

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
    this.scope.followTheme(this.root, (t) => this.applyTheme(t));
  }

  // ---- model state ----------------------------------------------------------------------

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
    const raw = (this.model.get("selected") ?? {}) as Partial<Selected>;
    const layers = this.layers();
    const layer = intOr(raw.layer, null);
    const neuron = intOr(raw.neuron, null);
    const prompt = intOr(raw.prompt, null);
    const position = intOr(raw.position, null);
    const validPrompt = prompt !== null && prompt >= 0 && prompt < this.tokens.length ? prompt : null;
    const validPosition =
      validPrompt !== null && position !== null && position >= 0 && position < this.tokens[validPrompt].length
        ? position
        : null;
    return {
      layer: layer !== null && layers.includes(layer) ? layer : (layers[0] ?? 0),
      neuron: neuron !== null && neuron >= 0 && neuron < this.d() ? neuron : this.hasDirection() ? null : 0,
      prompt: validPosition === null ? null : validPrompt,
      position: validPosition,
    };
  }

  private select(patch: Partial<Selected>): void {
    this.model.set("selected", { ...this.selected(), ...patch });
    this.model.save_changes();
  }

  private applyTheme(theme: Theme): void {
    if (theme === this.theme) return;
    this.theme = theme;
    this.cmap = divergingColormap(theme);
    for (const s of this.strips) s.invalidateColours();
    this.paint();
  }

  // ---- controls -------------------------------------------------------------------------

  private syncControls(): void {
    const layers = this.layers();
    const hooks = (this.model.get("hooks") ?? []) as string[];
    const sel = this.selected();
    const signature = JSON.stringify([layers, hooks]);
    if (signature !== this.layersShown) {
      this.layersShown = signature;
      this.layerSelect.replaceChildren(
        ...layers.map((layer, i) => {
          const option = document.createElement("option");
          option.value = String(layer);
          option.textContent = `L${layer}`;
          option.title = String(hooks[i] ?? "");
          return option;
        }),
      );
    }
    const several = layers.length > 1;
    this.layerSelect.hidden = !several;
    this.layerSelect.value = String(sel.layer);
    const hook = hooks[layers.indexOf(sel.layer)] ?? "";
    this.layerLabel.textContent = several ? hook : `L${sel.layer} ${hook}`;

    const d = this.d();
    this.neuronRange.textContent = `of 0..${Math.max(0, d - 1)}`;
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

  private syncTokens(): void {
    const raw = this.model.get("tokens");
    this.tokens = Array.isArray(raw) ? raw.map((t) => (Array.isArray(t) ? t.map(String) : [])) : [];
    this.strips = this.tokens.map((labels, p) => {
      const strip = new TokenStrip({ label: `prompt ${p} tokens` });
      strip.element.dataset.testid = "token-strip";
      strip.element.dataset.prompt = String(p);
      strip.setTokens(labels);
      strip.onHover(
        this.scope.guard("view", (i: number | null) => this.setHover(i === null ? null : { prompt: p, position: i })),
      );
      strip.onClick(this.scope.guard("view", (i: number) => this.clickToken(p, i)));
      strip.onClear(this.scope.guard("view", () => this.select({ prompt: null, position: null })));
      return strip;
    });
    this.stripsBox.replaceChildren(
      ...this.strips.map((strip, p) => {
        const row = el("div", "miw-act-row", "prompt-row");
        const label = el("span", "miw-act-row-label miw-muted");
        label.textContent = String(p);
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
    const same = sel.prompt === prompt && sel.position === position;
    this.select(same ? { prompt: null, position: null } : { prompt, position });
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

  // ---- requests -------------------------------------------------------------------------

  private unitKey(sel: Selected = this.selected()): string {
    return `${this.revision}:${sel.layer}:${sel.neuron === null ? "direction" : sel.neuron}`;
  }

  private fetchValues(): void {
    const sel = this.selected();
    const key = this.unitKey(sel);
    const cached = this.values.get(key);
    if (cached !== undefined) {
      this.client.cancel("values");
      this.valuesWanted = null;
      this.show(cached);
      return;
    }
    if (key === this.valuesWanted) return;
    this.valuesWanted = key;
    this.root.dataset.state = "loading";
    this.client.request("values", { layer: sel.layer, neuron: sel.neuron }, { supersede: "values" }).then(
      ({ result, buffers }) => {
        if (this.valuesWanted === key) this.valuesWanted = null;
        try {
          if (Number(result?.revision) !== this.revision) return; // computed before a change: a newer fetch follows
          const v = this.decodeValues(key, result, buffers);
          this.banner.clear("values");
          this.values.set(key, v);
          if (this.values.size > VALUES_CACHE) this.values.delete(this.values.keys().next().value!);
          if (key === this.unitKey()) this.show(v);
        } catch (e) {
          this.banner.fail("values", e);
          this.root.dataset.state = "error";
        }
      },
      (e) => {
        if (this.valuesWanted === key) this.valuesWanted = null;
        this.banner.fail("values", e);
        if (this.banner.visible) this.root.dataset.state = "error";
      },
    );
  }

  private decodeValues(key: string, result: any, buffers: DataView[]): Values {
    const data = decodeArray(result.values as ArrayHeader, buffers).data;
    const offsets = decodeArray(result.offsets as ArrayHeader, buffers).data;
    const n = this.tokens.length;
    if (!(offsets instanceof Int32Array) || offsets.length !== n + 1) {
      throw new Error(
        `values reply needs ${n + 1} int32 offsets (one per prompt, plus the end), got ${offsets.length}`,
      );
    }
    for (let p = 0; p < n; p++) {
      const length = offsets[p + 1] - offsets[p];
      if (length !== this.tokens[p].length)
        throw new Error(`values reply has ${length} values for prompt ${p}, which has ${this.tokens[p].length} tokens`);
    }
    if (data.length !== offsets[n])
      throw new Error(`values reply has ${data.length} values, offsets say ${offsets[n]}`);
    const range = Number(result.range);
    return { key, range: Number.isFinite(range) && range > 0 ? range : 0, offsets, data: Float32Array.from(data) };
  }

  private show(v: Values): void {
    this.shown = v;
    this.paint();
    this.renderReadout();
  }

  private fetchTop(focus: Focus, layer: number): void {
    const key = `${this.revision}:${layer}:${focus.prompt}:${focus.position}`;
    const cached = this.tops.get(key);
    if (cached !== undefined) {
      this.renderTop(cached);
      return;
    }
    this.topList.replaceChildren();
    this.topList.dataset.state = "loading";
    if (key === this.topWanted) return;
    this.topWanted = key;
    const params = { prompt: focus.prompt, position: focus.position, layer, k: TOP_K };
    this.client.request("top", params, { supersede: "top" }).then(
      ({ result, buffers }) => {
        if (this.topWanted === key) this.topWanted = null;
        try {
          if (Number(result?.revision) !== this.revision) return;
          const indices = decodeArray(result.indices as ArrayHeader, buffers).data;
          const values = decodeArray(result.values as ArrayHeader, buffers).data;
          if (!(indices instanceof Int32Array) || indices.length !== values.length) {
            throw new Error(
              `top reply needs int32 indices and values of one length, got ${indices.length} and ${values.length}`,
            );
          }
          this.banner.clear("top");
          const top = { indices, values: Float32Array.from(values) };
          this.tops.set(key, top);
          if (this.tops.size > TOP_CACHE) this.tops.delete(this.tops.keys().next().value!);
          if (key === this.focusKey()) this.renderTop(top);
        } catch (e) {
          this.banner.fail("top", e);
        }
      },
      (e) => {
        if (this.topWanted === key) this.topWanted = null;
        this.banner.fail("top", e);
      },
    );
  }

  // ---- rendering ------------------------------------------------------------------------

  /** Colour every strip by its prompt's slice of the current values. */
  private paint(): void {
    const v = this.shown;
    const m = v !== null && v.range > 0 ? v.range : 1;
    this.strips.forEach((strip, p) => {
      if (v === null) {
        strip.setWeights(null, this.cmap, -m, m);
        strip.setTooltips(null);
        return;
      }
      const slice = v.data.subarray(v.offsets[p], v.offsets[p + 1]);
      strip.setWeights(slice, this.cmap, -m, m);
      strip.setTooltips((i) => formatValue(slice[i]));
    });
    const sel = this.selected();
    if (v === null) {
      this.scale.textContent = "";
      delete this.root.dataset.painted;
      return;
    }
    const prompts = this.tokens.length === 1 ? "the prompt" : `all ${this.tokens.length} prompts`;
    this.scale.textContent = `colour: ${formatValue(-v.range)} … ${formatValue(v.range)} (max |value| of L${sel.layer} ${unitLabel(sel.neuron)} over ${prompts})`;
    this.root.dataset.painted = v.key;
    this.root.dataset.state = "ready";
  }

  private renderSelection(): void {
    const sel = this.selected();
    this.strips.forEach((strip, p) => {
      strip.setLocked(p === sel.prompt ? sel.position : null);
    });
    this.root.dataset.selected = sel.prompt === null ? "" : `${sel.prompt}:${sel.position}`;
    this.renderReadout();
  }

  private focus(): Focus | null {
    if (this.hover !== null) return this.hover;
    const sel = this.selected();
    return sel.prompt !== null && sel.position !== null ? { prompt: sel.prompt, position: sel.position } : null;
  }

  private focusKey(): string | null {
    const f = this.focus();
    return f === null ? null : `${this.revision}:${this.selected().layer}:${f.prompt}:${f.position}`;
  }

  /** The hovered token, else the selected one: its value for the current unit and its top neurons. */
  private renderReadout(): void {
    const f = this.focus();
    const sel = this.selected();
    if (f === null || f.prompt >= this.tokens.length || f.position >= this.tokens[f.prompt].length) {
      setLine(this.readoutText, "Hover a token for its value and top neurons; click it to select it (view.selected).");
      this.topList.replaceChildren();
      delete this.topList.dataset.state;
      delete this.root.dataset.focus;
      return;
    }
    const v = this.shown;
    const value =
      v !== null && v.key === this.unitKey(sel) ? formatValue(v.data[v.offsets[f.prompt] + f.position]) : "…";
    const token = this.tokens[f.prompt][f.position];
    setLine(
      this.readoutText,
      (quote) =>
        `prompt ${f.prompt}, token ${f.position} ${quote(token)} · L${sel.layer} ${unitLabel(sel.neuron)}: ${value} · top neurons:`,
    );
    this.root.dataset.focus = `${f.prompt}:${f.position}`;
    this.fetchTop(f, sel.layer);
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
      b.title = `select neuron ${n}`;
      const name = el("span", "miw-act-top-name");
      name.textContent = `n${n}`;
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
export default renderView<ActivationModel>("ActivationView", (model, host) => new ActivationView(model, host));
