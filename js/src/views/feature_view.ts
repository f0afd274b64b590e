/**
 * FeatureView front end: which sparse-autoencoder features fire on which tokens of a prompt, and
 * a dashboard for one feature that fills in while the corpus scan runs.
 *
 * - The prompt is a TokenStrip coloured by the selected feature (sequential, 0 = background).
 *   Hovering, clicking or focusing a token lists its strongest features as buttons ("chips");
 *   a chip writes `selected = {feature}`.
 * - The dashboard: firing density and max, the histogram of nonzero activations (canvas), the
 *   tokens the decoder direction promotes and suppresses, and the top corpus examples.
 *
 * Data comes by two resources: `prompt` {prompt_index} (tokens and the top K feature ids/values
 * per token; they do not depend on the scan, so it does not follow `revision`) and `feature`
 * {feature, prompt_index} (everything the dashboard draws; `policy: "coalesce"`, it follows the
 * scan's `revision`). Both are keyed by the prompt's text too (`key`), so a prompt replaced under
 * the same index is asked for again. A change of prompt or feature asks on a microtask, after the
 * view's own save_changes, so a typed prompt reaches the kernel before the request that asks for
 * its tokens.
 */

import "../lib/base.css";
import "./feature_view.css";

import { type ArrayHeader, asFloat32, decodeArray } from "../lib/codec";
import { type Colormap, sequentialColormap, type Theme } from "../lib/colormap";
import { type Example, exampleRow, parseExamples } from "../lib/examples";
import type { Response } from "../lib/protocol";
import type { Resource } from "../lib/resource";
import { ScanToolbar, type ScanTraits, scanStatus } from "../lib/scan_toolbar";
import { setLine, tokenLabel } from "../lib/text";
import { TokenStrip } from "../lib/tokens";
import { button, el, intOr, parseUnitId, renderView, type UnitIdSpec, View, type ViewModel } from "../lib/view";

/** The FeatureView widget's traits (Python: `mi_widgets/widgets/feature_view.py`). */
export interface FeatureViewTraits extends ScanTraits {
  hook: string;
  d_sae: number;
  k: number;
  /** Corpus windows (rows) the scan reads. */
  n_windows: number;
  n_tokens: number;
  prompts: string[];
  /** The shown prompt: an index into `prompts`. */
  prompt_index: number;
  selected: { feature: number | null };
}

/** The prompt's tokens and, per token, its strongest features (id -1 = empty slot). */
export interface PromptData {
  index: number;
  tokens: string[];
  /** Features per token (K). */
  k: number;
  ids: Int32Array;
  values: Float32Array;
}

/** A drawn prompt: its data and the key (index and text) it was drawn for. */
interface ShownPrompt extends PromptData {
  key: string;
}

export interface LogitItem {
  token: string;
  value: number;
}

/** Everything the dashboard draws for one feature. */
export interface FeatureData {
  feature: number;
  fires: number;
  density: number;
  max: number | null;
  promptActs: Float32Array;
  histogram: { counts: Int32Array; lo: number; hi: number };
  promoted: LogitItem[];
  suppressed: LogitItem[];
  examples: Example[];
}

/** Drawn feature data, with the revision it was computed for and the prompt `promptActs` belong to (see promptKey). */
interface ShownFeature extends FeatureData {
  revision: number;
  promptKey: string;
}

const HIST_WIDTH = 360;
const HIST_HEIGHT = 120;
const HIST_MARGIN = { left: 8, right: 8, top: 14, bottom: 18 };

/** How the feature box reads what the user typed (see parseUnitId). */
export const FEATURE_ID: UnitIdSpec = { unit: "feature", none: "this SAE has no features" };

/** A firing density as a percentage with two decimals, or two significant digits when tiny. */
export function formatPercent(density: number): string {
  const p = density * 100;
  if (!Number.isFinite(p)) return "?%";
  return `${p === 0 || p >= 0.01 ? p.toFixed(2) : p.toPrecision(2)}%`;
}

/** Axis labels and values: three significant digits, no exponent for ordinary magnitudes. */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
}

/** Top of the colour scale: the largest finite value the dashboard shows (1 when none is positive). */
export function colorScale(
  d: Pick<FeatureData, "max" | "promptActs"> & { examples: ReadonlyArray<Pick<Example, "activations">> },
): number {
  let m = d.max !== null && Number.isFinite(d.max) ? d.max : 0;
  const take = (a: ArrayLike<number>) => {
    for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i]) && a[i] > m) m = a[i];
  };
  take(d.promptActs);
  for (const e of d.examples) take(e.activations);
  return m > 0 ? m : 1;
}

/** Bars of `counts` over [lo, hi] with the axis ends labelled; colours come from the view's CSS. */
export function drawHistogram(
  ctx: CanvasRenderingContext2D,
  hist: { counts: ArrayLike<number>; lo: number; hi: number },
  size: { width: number; height: number },
  colors: { bar: string; text: string; axis: string; font: string },
): void {
  const { width, height } = size;
  const { left, right, top, bottom } = HIST_MARGIN;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  ctx.clearRect(0, 0, width, height);
  ctx.font = colors.font;
  ctx.fillStyle = colors.text;
  let peak = 0;
  for (let i = 0; i < hist.counts.length; i++) peak = Math.max(peak, hist.counts[i]);
  if (peak === 0) {
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("no activations yet", width / 2, height / 2);
    return;
  }
  ctx.fillStyle = colors.bar;
  const n = hist.counts.length;
  const w = plotW / n;
  for (let i = 0; i < n; i++) {
    const c = hist.counts[i];
    if (c <= 0) continue;
    const h = Math.max(1, (c / peak) * plotH); // a single count stays visible
    ctx.fillRect(left + i * w, top + plotH - h, Math.max(1, w - (w >= 4 ? 1 : 0)), h);
  }
  ctx.fillStyle = colors.axis;
  ctx.fillRect(left, top + plotH, plotW, 1);
  ctx.fillStyle = colors.text;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(formatValue(hist.lo), left, top + plotH + 4);
  ctx.textAlign = "right";
  ctx.fillText(formatValue(hist.hi), left + plotW, top + plotH + 4);
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left";
  ctx.fillText(`${peak.toLocaleString("en-US")} per bin`, left, top - 2);
}

function logitItems(raw: unknown, what: string): LogitItem[] {
  if (!Array.isArray(raw)) throw new Error(`feature reply: ${what} must be a list, got ${JSON.stringify(raw)}`);
  return raw.map((item: any) => ({ token: String(item?.token ?? ""), value: Number(item?.value) }));
}

/** Decode and check a `prompt` reply. */
export function decodePrompt({ result, buffers }: Response): PromptData {
  const index = Number(result?.prompt_index);
  if (!Number.isInteger(index))
    throw new Error(`prompt reply names no prompt_index: ${JSON.stringify(result?.prompt_index)}`);
  const tokens: string[] = Array.isArray(result.tokens) ? result.tokens.map(String) : [];
  const ids = decodeArray(result.top_ids as ArrayHeader, buffers);
  const values = decodeArray(result.top_values as ArrayHeader, buffers);
  const [seq, k] = ids.shape;
  if (
    !(ids.data instanceof Int32Array) ||
    ids.shape.length !== 2 ||
    seq !== tokens.length ||
    values.shape.join() !== ids.shape.join()
  ) {
    throw new Error(
      `prompt reply needs int32 top_ids and top_values of shape [${tokens.length}, K], got [${ids.shape.join(", ")}] (${ids.dtype}) and [${values.shape.join(", ")}]`,
    );
  }
  return { index, tokens, k, ids: ids.data, values: asFloat32(values) };
}

/** Decode and check a `feature` reply. */
export function decodeFeature({ result, buffers }: Response): FeatureData {
  const promptActs = decodeArray(result?.prompt_acts as ArrayHeader, buffers);
  if (promptActs.shape.length !== 1)
    throw new Error(`feature reply: prompt_acts must be 1-d, got shape [${promptActs.shape.join(", ")}]`);
  const counts = decodeArray(result.histogram?.counts as ArrayHeader, buffers);
  if (!(counts.data instanceof Int32Array) || counts.shape.length !== 1) {
    throw new Error(
      `feature reply: histogram counts must be 1-d int32, got ${counts.dtype} [${counts.shape.join(", ")}]`,
    );
  }
  const max = result.max === null || result.max === undefined ? null : Number(result.max);
  return {
    feature: Number(result.feature),
    fires: Math.max(0, Number(result.fires) || 0),
    density: Number(result.density) || 0,
    max: max !== null && Number.isFinite(max) ? max : null,
    promptActs: asFloat32(promptActs),
    histogram: { counts: counts.data, lo: Number(result.histogram.lo), hi: Number(result.histogram.hi) },
    promoted: logitItems(result.promoted, "promoted"),
    suppressed: logitItems(result.suppressed, "suppressed"),
    examples: parseExamples(result, buffers, "feature reply"),
  };
}

class FeatureView extends View<FeatureViewTraits> {
  private readonly toolbar: ScanToolbar;
  private readonly info: HTMLSpanElement;
  private readonly promptSelect: HTMLSelectElement;
  private readonly promptInput: HTMLInputElement;
  private readonly featureInput: HTMLInputElement;
  private readonly featureMessage: HTMLSpanElement;
  private readonly scale: HTMLSpanElement;
  private readonly strip: TokenStrip;
  private readonly caption: HTMLDivElement;
  private readonly chips: HTMLDivElement;
  private readonly dashboard: HTMLDivElement;
  private readonly header: HTMLDivElement;
  private readonly histogram: HTMLCanvasElement;
  private readonly histCaption: HTMLElement;
  private readonly promoted: HTMLOListElement;
  private readonly suppressed: HTMLOListElement;
  private readonly examples: HTMLDivElement;
  private readonly prompt: Resource<{ prompt_index: number }, PromptData>;
  private readonly feature: Resource<{ feature: number; prompt_index?: number }, FeatureData>;

  private cmap: Colormap;
  private promptData: ShownPrompt | null = null;
  private shown: ShownFeature | null = null;
  private exampleStrips: TokenStrip[] = [];
  private hovered: number | null = null;
  private locked: number | null = null;
  private promptsShown = "";

  constructor(model: ViewModel<FeatureViewTraits>, host: HTMLElement) {
    super(model, host, { className: "miw-fv", testid: "feature-view" });
    this.cmap = sequentialColormap(this.theme);
    this.toolbar = new ScanToolbar({ scope: this.scope, root: this.root, unit: { one: "batch", many: "batches" } });
    this.info = el("span", "miw-fv-info", "info");
    this.toolbar.element.append(this.info);

    const controls = el("div", "miw-fv-controls");
    this.promptSelect = el("select", "miw-fv-field", "prompt-select");
    this.promptSelect.setAttribute("aria-label", "prompt");
    this.promptInput = el("input", "miw-fv-field miw-fv-prompt-input", "prompt-input");
    this.promptInput.type = "text";
    this.promptInput.placeholder = "type a prompt, Enter adds it";
    this.promptInput.setAttribute("aria-label", "new prompt (Enter adds it and shows it)");
    this.promptInput.spellcheck = false;
    const featureBox = el("label", "miw-fv-label");
    featureBox.append("feature ");
    this.featureInput = el("input", "miw-fv-field miw-fv-feature-input", "feature-input");
    this.featureInput.type = "number";
    this.featureInput.min = "0";
    this.featureInput.step = "1";
    this.featureInput.setAttribute("aria-label", "feature id (Enter shows it)");
    featureBox.append(this.featureInput);
    this.featureMessage = el("span", "miw-fv-message", "feature-message");
    this.featureMessage.setAttribute("role", "status");
    this.scale = el("span", "miw-fv-scale", "scale");
    controls.append(this.promptSelect, this.promptInput, featureBox, this.featureMessage, this.scale);

    this.strip = new TokenStrip({ label: "prompt tokens: hover or focus a token for its top features" });
    this.strip.element.dataset.testid = "prompt-tokens";
    const readout = el("div", "miw-fv-readout");
    this.caption = el("div", "miw-line miw-fv-caption", "token-caption");
    this.caption.setAttribute("aria-live", "polite");
    this.chips = el("div", "miw-fv-chips", "token-features");
    this.chips.setAttribute("role", "group");
    this.chips.setAttribute("aria-label", "top features of the token: click or Enter selects one");
    readout.append(this.caption, this.chips);

    this.dashboard = el("div", "miw-fv-dashboard", "dashboard");
    this.header = el("div", "miw-fv-header", "feature-header");
    this.header.setAttribute("role", "heading");
    this.header.setAttribute("aria-level", "3");
    const body = el("div", "miw-fv-body");
    const histBox = el("figure", "miw-fv-hist");
    this.histogram = el("canvas", "miw-fv-hist-canvas", "histogram");
    this.histogram.setAttribute("role", "img");
    this.histCaption = el("figcaption", "miw-fv-hist-caption miw-muted", "histogram-caption");
    histBox.append(this.histogram, this.histCaption);
    const list = (title: string, testid: string): [HTMLDivElement, HTMLOListElement] => {
      const box = el("div", "miw-fv-logits");
      const heading = el("div", "miw-fv-logits-title");
      heading.textContent = title;
      const ol = el("ol", "miw-fv-logit-list", testid);
      ol.setAttribute("aria-label", title);
      box.append(heading, ol);
      return [box, ol];
    };
    const [promotedBox, promoted] = list("promoted tokens", "promoted");
    const [suppressedBox, suppressed] = list("suppressed tokens", "suppressed");
    this.promoted = promoted;
    this.suppressed = suppressed;
    body.append(histBox, promotedBox, suppressedBox);
    this.examples = el("div", "miw-fv-examples", "examples");
    this.dashboard.append(this.header, body, this.examples);

    this.root.append(this.toolbar.element, controls, this.banner.element, this.strip.element, readout, this.dashboard);

    // The prompt's features do not depend on the scan: this resource does not follow `revision`.
    this.prompt = this.scope.resource({
      followRevision: false,
      lazy: true,
      method: "prompt",
      params: () => {
        const index = this.promptIndex();
        return index === null ? null : { prompt_index: index };
      },
      key: () => this.promptText(),
      decode: decodePrompt,
      draw: (data, { params }) => {
        if (data.index !== params.prompt_index)
          throw new Error(`prompt reply is for prompt ${data.index}, asked for ${params.prompt_index}`);
        this.showPrompt({ ...data, key: this.promptKey() });
      },
    });
    this.feature = this.scope.resource({
      method: "feature",
      policy: "coalesce",
      lazy: true,
      params: () => {
        const feature = this.selected();
        const index = this.promptIndex();
        return feature === null ? null : index === null ? { feature } : { feature, prompt_index: index };
      },
      key: () => this.promptText(),
      decode: decodeFeature,
      draw: (data, { revision, params }) => {
        if (data.feature !== params.feature) return; // a reply naming another feature
        this.shown = { ...data, revision, promptKey: this.promptKey() };
        this.renderDashboard();
      },
    });

    this.wire();
    this.renderInfo();
    this.syncPrompts();
    this.syncFeatureInput();
    this.banner.render();
    this.renderReadout();
    this.renderDashboard();
    this.refresh();
  }

  // ---- wiring ---------------------------------------------------------------------------

  private wire(): void {
    this.scope.on("change:selected", () => {
      this.syncFeatureInput();
      this.markChips();
      this.renderDashboard();
      this.scheduleRefresh();
    });
    this.scope.onChange(["prompt_index", "prompts"], () => {
      this.syncPrompts();
      this.scheduleRefresh();
    });
    this.scope.on("change:d_sae", () => this.syncFeatureInput());
    this.scope.on("change:status", () => this.renderHeader());
    this.scope.onChange(["hook", "d_sae", "k", "n_windows", "n_tokens"], () => this.renderInfo());

    this.strip.onHover(this.scope.guard("view", (i: number | null) => this.setHover(i)));
    this.strip.onClick(this.scope.guard("view", (i: number) => this.setLock(this.locked === i ? null : i)));
    this.strip.onClear(this.scope.guard("view", () => this.setLock(null)));
    this.chips.addEventListener(
      "click",
      this.scope.guard("view", (ev: MouseEvent) => {
        const chip = (ev.target as Element | null)?.closest?.("[data-feature]") as HTMLElement | null;
        if (chip !== null && this.chips.contains(chip)) this.select(Number(chip.dataset.feature));
      }),
    );
    this.promptSelect.addEventListener(
      "change",
      this.scope.guard("view", () => {
        this.model.set("prompt_index", Number(this.promptSelect.value));
        this.model.save_changes();
      }),
    );
    this.promptInput.addEventListener(
      "keydown",
      this.scope.guard("view", (ev: KeyboardEvent) => this.promptKeydown(ev)),
    );
    this.featureInput.addEventListener(
      "keydown",
      this.scope.guard("view", (ev: KeyboardEvent) => this.featureKeydown(ev)),
    );
  }

  /**
   * Ask for the prompt and the feature the traits now want (the resources send nothing for what is
   * drawn or in flight, and drop the request for anything else). On a microtask, not at once: a
   * change made by this view (a typed prompt, a chosen one) is sent by its `save_changes` right
   * after `set`, and the kernel must have it before the request that reads it.
   */
  private scheduleRefresh(): void {
    queueMicrotask(this.scope.guard("view", () => this.refresh()));
  }

  private refresh(): void {
    void this.prompt.fetch();
    if (this.promptIndex() === null) this.showPrompt(null);
    void this.feature.fetch();
    if (this.selected() === null) this.shown = null;
  }

  /** The prompt strip and the dashboard dim apart: each while its own request is out. */
  protected loadingChanged(): void {
    const d = this.root.dataset;
    if (this.prompt?.loading) d.promptLoading = "true";
    else delete d.promptLoading;
    if (this.feature?.loading) d.featureLoading = "true";
    else delete d.featureLoading;
  }

  // ---- model state ----------------------------------------------------------------------

  private prompts(): string[] {
    const raw = this.model.get("prompts");
    return Array.isArray(raw) ? raw.map(String) : [];
  }

  /** The shown prompt's index, clamped to the prompts there are (null when there are none). */
  private promptIndex(): number | null {
    const n = this.prompts().length;
    if (n === 0) return null;
    return Math.min(n - 1, Math.max(0, intOr(this.model.get("prompt_index"), 0)));
  }

  /** The shown prompt's text ("" when there are none): what the prompt's data depend on besides its index. */
  private promptText(): string {
    const i = this.promptIndex();
    return i === null ? "" : this.prompts()[i];
  }

  /** Index and text: a prompt replaced in Python under the same index is a new prompt. */
  private promptKey(): string {
    const i = this.promptIndex();
    return i === null ? "" : JSON.stringify([i, this.promptText()]);
  }

  private dSae(): number {
    return Math.max(0, intOr(this.model.get("d_sae"), 0));
  }

  private selected(): number | null {
    const raw = (this.model.get("selected") ?? {}) as { feature?: unknown };
    const f = intOr(raw.feature, null);
    const d = this.dSae();
    return f !== null && f >= 0 && (d === 0 || f < d) ? f : null;
  }

  private select(feature: number): void {
    this.model.set("selected", { feature });
    this.model.save_changes();
  }

  protected applyTheme(theme: Theme): void {
    this.cmap = sequentialColormap(theme);
    this.strip.invalidateColors();
    for (const s of this.exampleStrips) s.invalidateColors();
    this.paint();
    this.drawHistogram();
  }

  // ---- controls -------------------------------------------------------------------------

  private syncPrompts(): void {
    const prompts = this.prompts();
    const signature = JSON.stringify(prompts);
    if (signature !== this.promptsShown) {
      this.promptsShown = signature;
      this.promptSelect.replaceChildren(
        ...prompts.map((text, i) => {
          const option = document.createElement("option");
          option.value = String(i);
          option.textContent = `${i}: ${tokenLabel(text, 60)}`;
          option.title = text;
          return option;
        }),
      );
    }
    this.promptSelect.hidden = prompts.length < 2;
    const i = this.promptIndex();
    if (i !== null) this.promptSelect.value = String(i);
  }

  private promptKeydown(ev: KeyboardEvent): void {
    ev.stopPropagation(); // typing must not reach notebook shortcuts
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    const text = this.promptInput.value;
    if (text.trim() === "") return;
    const prompts = [...this.prompts(), text];
    this.model.set("prompts", prompts);
    this.model.set("prompt_index", prompts.length - 1);
    this.model.save_changes();
    this.promptInput.value = "";
  }

  private syncFeatureInput(): void {
    const d = this.dSae();
    this.featureInput.max = String(Math.max(0, d - 1));
    this.featureInput.placeholder = `0..${Math.max(0, d - 1)}`;
    const f = this.selected();
    this.featureInput.value = f === null ? "" : String(f);
    this.setFeatureMessage("");
  }

  private setFeatureMessage(message: string): void {
    this.featureMessage.textContent = message;
    this.featureInput.setAttribute("aria-invalid", String(message !== ""));
  }

  private featureKeydown(ev: KeyboardEvent): void {
    ev.stopPropagation();
    if (ev.key === "Escape") {
      this.syncFeatureInput();
      return;
    }
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    const parsed = parseUnitId(this.featureInput.value, this.dSae(), FEATURE_ID);
    if ("error" in parsed) {
      this.setFeatureMessage(parsed.error);
      return;
    }
    this.setFeatureMessage("");
    if (parsed.id !== this.selected()) this.select(parsed.id);
  }

  // ---- prompt tokens and chips ----------------------------------------------------------

  /** Leaving the strip shows the locked token again; with none locked the last one stays, so its chips can be clicked. */
  private setHover(i: number | null): void {
    if (i === null && this.locked === null) return;
    this.hovered = i;
    this.renderReadout();
  }

  private setLock(i: number | null): void {
    this.locked = i;
    this.hovered = null;
    this.strip.setLocked(i);
    this.renderReadout();
  }

  private focusToken(): number | null {
    const i = this.hovered ?? this.locked;
    const p = this.promptData;
    return p !== null && i !== null && i < p.tokens.length ? i : null;
  }

  /** The focused token and its features as chips `#id value`, strongest first. */
  private renderReadout(): void {
    const p = this.promptData;
    const i = this.focusToken();
    if (p === null || i === null) {
      setLine(this.caption, p === null ? "" : "Hover, click or focus a token to see the features that fire on it.");
      this.chips.replaceChildren();
      delete this.chips.dataset.position;
      return;
    }
    const current = this.selected();
    const chips: HTMLButtonElement[] = [];
    for (let j = 0; j < p.k; j++) {
      const id = p.ids[i * p.k + j];
      if (id < 0) continue;
      const chip = button(
        `#${id} ${p.values[i * p.k + j].toFixed(2)}`,
        "miw-button miw-button-small miw-fv-chip",
        "feature-chip",
      );
      chip.dataset.feature = String(id);
      chip.setAttribute("aria-pressed", String(id === current));
      chip.title = `show feature ${id}`;
      chips.push(chip);
    }
    const token = p.tokens[i];
    setLine(this.caption, (quote) =>
      chips.length === 0
        ? `token ${i} ${quote(token)}: no feature fires here.`
        : `token ${i} ${quote(token)}: top features (click to show one)`,
    );
    this.chips.replaceChildren(...chips);
    this.chips.dataset.position = String(i);
  }

  /** Mark the selected feature's chip in place (re-rendering would take the keyboard focus off a chip). */
  private markChips(): void {
    const current = this.selected();
    for (const chip of this.chips.querySelectorAll<HTMLElement>("[data-feature]")) {
      chip.setAttribute("aria-pressed", String(Number(chip.dataset.feature) === current));
    }
  }

  // ---- requests -------------------------------------------------------------------------

  private showPrompt(p: ShownPrompt | null): void {
    const sameTokens =
      p !== null && this.promptData !== null && p.tokens.join("\u0000") === this.promptData.tokens.join("\u0000");
    this.promptData = p;
    if (!sameTokens) {
      this.hovered = null;
      this.locked = null;
      this.strip.setLocked(null);
      this.strip.setTokens(p?.tokens ?? []);
    }
    if (p === null) delete this.root.dataset.prompt;
    else this.root.dataset.prompt = String(p.index);
    this.paint();
    this.renderReadout();
  }

  // ---- rendering ------------------------------------------------------------------------

  private renderInfo(): void {
    const n = (name: "d_sae" | "k" | "n_windows" | "n_tokens") =>
      intOr(this.model.get(name), 0).toLocaleString("en-US");
    this.info.textContent = `${String(this.model.get("hook") ?? "?")} · ${n("d_sae")} features · top ${n("k")} examples · ${n("n_windows")} windows, ${n("n_tokens")} tokens`;
  }

  /** The shown feature's data, if it is the selected one. */
  private current(): ShownFeature | null {
    const s = this.shown;
    return s !== null && s.feature === this.selected() ? s : null;
  }

  /** Colour the prompt (when the shown values belong to the drawn tokens) and the examples by the shown feature. */
  private paint(): void {
    const s = this.current();
    const p = this.promptData;
    const cmap = this.cmap;
    const hi = s === null ? 1 : colorScale(s);
    this.exampleStrips.forEach((strip, i) => {
      strip.setWeights(s?.examples[i]?.activations ?? null, cmap, 0, hi);
    });
    this.scale.textContent = s === null ? "" : `colour: feature ${s.feature}, 0 … ${formatValue(hi)}`;
    if (s === null || p === null || s.promptKey !== p.key || s.promptActs.length !== p.tokens.length) {
      this.strip.setWeights(null, cmap, 0, 1);
      this.strip.setTooltips(null);
      delete this.root.dataset.painted;
      return;
    }
    this.strip.setWeights(s.promptActs, cmap, 0, hi);
    this.strip.setTooltips((i) => `feature ${s.feature}: ${s.promptActs[i].toFixed(3)}`);
    this.root.dataset.painted = `${s.feature}:${s.revision}`;
  }

  private renderDashboard(): void {
    const feature = this.selected();
    const s = this.current();
    this.root.dataset.selected = feature === null ? "" : String(feature);
    this.dashboard.hidden = feature === null;
    if (s === null) {
      delete this.dashboard.dataset.feature;
      delete this.dashboard.dataset.revision;
      this.exampleStrips = [];
      this.promoted.replaceChildren();
      this.suppressed.replaceChildren();
      this.examples.replaceChildren();
      this.histCaption.textContent = "";
      this.histogram.dataset.bins = "0";
      this.renderHeader();
      this.drawHistogram();
      this.paint();
      return;
    }
    this.dashboard.dataset.feature = String(s.feature);
    this.dashboard.dataset.revision = String(s.revision);
    this.renderHeader();
    this.renderLogits(this.promoted, s.promoted);
    this.renderLogits(this.suppressed, s.suppressed);
    this.renderExamples(s);
    this.drawHistogram();
    this.paint();
  }

  private renderHeader(): void {
    const feature = this.selected();
    const s = this.current();
    if (feature === null) {
      this.header.textContent = "";
      return;
    }
    if (s === null) {
      this.header.textContent = `Feature ${feature} · loading…`;
      return;
    }
    if (s.fires === 0 || s.max === null) {
      const status = scanStatus(this.model.get("status"));
      const nTokens = intOr(this.model.get("n_tokens"), 0).toLocaleString("en-US");
      const why =
        status === "done"
          ? `never fires on the ${nTokens} corpus tokens`
          : status === "idle"
            ? "not seen firing yet: start the corpus scan"
            : status === "running"
              ? "not seen firing yet (scan running)"
              : "not seen firing in the tokens scanned so far";
      this.header.textContent = `Feature ${s.feature} · ${why}`;
      return;
    }
    // density = fires / scanned tokens, so this is the number scanned so far (all of them when done).
    const scanned = s.density > 0 ? Math.round(s.fires / s.density) : intOr(this.model.get("n_tokens"), 0);
    this.header.textContent = `Feature ${s.feature} · fires on ${formatPercent(s.density)} of ${scanned.toLocaleString("en-US")} tokens · max ${s.max.toFixed(2)}`;
  }

  private renderLogits(list: HTMLOListElement, items: LogitItem[]): void {
    list.replaceChildren(
      ...items.map((item) => {
        const li = el("li", "miw-fv-logit", "logit");
        const token = el("span", "miw-fv-logit-token");
        token.textContent = tokenLabel(item.token);
        token.title = JSON.stringify(item.token);
        const value = el("span", "miw-fv-logit-value");
        value.textContent = `${item.value >= 0 ? "+" : "−"}${Math.abs(item.value).toFixed(2)}`;
        li.append(token, value);
        return li;
      }),
    );
  }

  /** One row per example: its max activation, then its tokens coloured on the dashboard's scale, the max outlined. */
  private renderExamples(s: FeatureData): void {
    this.exampleStrips = [];
    if (s.examples.length === 0) {
      const none = el("div", "miw-muted", "no-examples");
      none.textContent = "No examples yet: they appear as the corpus scan finds them.";
      this.examples.replaceChildren(none);
      return;
    }
    const rows = s.examples.map((e, i) => {
      const { row, strip } = exampleRow(e, i, {
        rowClass: "miw-fv-example",
        valueClass: "miw-fv-example-value",
        unit: `feature ${s.feature}`,
        value: e.value.toFixed(2),
      });
      this.exampleStrips.push(strip);
      return row;
    });
    this.examples.replaceChildren(...rows);
  }

  /** The histogram canvas, at device resolution, in the theme's colours (re-read on every draw). */
  private drawHistogram(): void {
    const s = this.current();
    const c = this.histogram;
    const hist = s?.histogram ?? { counts: new Int32Array(0), lo: 0, hi: 0 };
    let total = 0;
    for (const n of hist.counts) total += n;
    c.dataset.bins = String(hist.counts.length);
    c.dataset.total = String(total);
    const range = `${formatValue(hist.lo)} … ${formatValue(hist.hi)}`;
    const text =
      s === null
        ? ""
        : total === 0
          ? "activation histogram: no activations yet"
          : `activation histogram: ${total.toLocaleString("en-US")} nonzero activations, ${range}`;
    this.histCaption.textContent = text;
    c.setAttribute("aria-label", text || "activation histogram");
    const dpr = window.devicePixelRatio || 1;
    c.style.width = `${HIST_WIDTH}px`;
    c.style.height = `${HIST_HEIGHT}px`;
    if (c.width !== Math.round(HIST_WIDTH * dpr)) c.width = Math.round(HIST_WIDTH * dpr);
    if (c.height !== Math.round(HIST_HEIGHT * dpr)) c.height = Math.round(HIST_HEIGHT * dpr);
    const ctx = c.getContext("2d");
    if (ctx === null) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (s === null) {
      ctx.clearRect(0, 0, HIST_WIDTH, HIST_HEIGHT);
      return;
    }
    const style = getComputedStyle(this.root);
    const prop = (name: string, fallback: string) => style.getPropertyValue(name).trim() || fallback;
    drawHistogram(
      ctx,
      hist,
      { width: HIST_WIDTH, height: HIST_HEIGHT },
      {
        bar: prop("--miw-accent", "#1976d2"),
        text: prop("--miw-fg-muted", style.color || "#666"),
        axis: prop("--miw-border", "#bdbdbd"),
        font: `10px ${prop("--jp-ui-font-family", "sans-serif")}`,
      },
    );
  }
}

/** anywidget entry point: one FeatureView per rendered output. */
export default renderView<ViewModel<FeatureViewTraits>>("FeatureView", (model, host) => new FeatureView(model, host));
