/**
 * TokenStrip: the prompt as one span per token, coloured by a weight per token.
 *
 * Tokens are untrusted text and only ever reach the DOM through `textContent`, shortened (see
 * text.ts) with the whole token in the span's title. Weight changes restyle the existing spans in
 * place (skipping unchanged colours), so 1024 tokens stay cheap. The spans go in chunks of
 * `TOKEN_CHUNK` whose CSS (`content-visibility: auto`) lets the browser skip laying out and painting
 * the chunks scrolled out of the strip: a 4096-token prompt costs what the visible few hundred do.
 */

import { type Colormap, colorIndex, luminance, rgbAt } from "./colormap";
import { tokenLabel } from "./text";

export { displayToken } from "./text";

/** Tokens per chunk of the strip (a chunk starts a new line: prompts up to this many read as one flow). */
export const TOKEN_CHUNK = 256;

export class TokenStrip {
  readonly element: HTMLDivElement;
  private spans: HTMLSpanElement[] = [];
  private labels: string[] = [];
  /** Colour index currently applied per span (-2 = unstyled), to skip no-op style writes. */
  private applied = new Int16Array(0);
  private focusIndex = 0;
  private locked: number | null = null;
  private marks: [number | null, number | null] = [null, null];
  private hoverCb: (i: number | null) => void = () => {};
  private clickCb: (i: number) => void = () => {};
  private clearCb: () => void = () => {};

  constructor(opts: { label?: string } = {}) {
    const el = document.createElement("div");
    el.className = "miw-token-strip";
    el.setAttribute("role", "listbox");
    el.setAttribute("aria-label", opts.label ?? "tokens");
    el.addEventListener("mouseover", (ev) => {
      const i = this.indexOf(ev.target);
      if (i !== null) this.hoverCb(i);
    });
    el.addEventListener("mouseleave", () => this.hoverCb(null));
    el.addEventListener("click", (ev) => {
      const i = this.indexOf(ev.target);
      if (i === null) return;
      this.moveFocus(i, false);
      this.clickCb(i);
    });
    el.addEventListener("focusin", (ev) => {
      const i = this.indexOf(ev.target);
      if (i !== null) this.hoverCb(i);
    });
    el.addEventListener("keydown", (ev) => this.key(ev));
    this.element = el;
  }

  onHover(cb: (i: number | null) => void): void {
    this.hoverCb = cb;
  }
  onClick(cb: (i: number) => void): void {
    this.clickCb = cb;
  }
  /** Escape pressed on the strip. */
  onClear(cb: () => void): void {
    this.clearCb = cb;
  }

  get length(): number {
    return this.spans.length;
  }

  setTokens(labels: ReadonlyArray<string>): void {
    const frag = document.createDocumentFragment();
    this.labels = labels.map(String);
    let chunk: HTMLDivElement | null = null;
    this.spans = labels.map((label, i) => {
      if (i % TOKEN_CHUNK === 0) {
        chunk = document.createElement("div");
        chunk.className = "miw-token-chunk";
        frag.append(chunk);
      }
      const span = document.createElement("span");
      span.className = "miw-token";
      span.textContent = tokenLabel(String(label));
      span.title = `${i}: ${JSON.stringify(String(label))}`;
      span.dataset.testid = "token";
      span.dataset.index = String(i);
      span.setAttribute("role", "option");
      span.tabIndex = -1;
      chunk?.append(span);
      return span;
    });
    this.element.replaceChildren(frag);
    this.applied = new Int16Array(labels.length).fill(-2);
    this.focusIndex = 0;
    if (this.spans.length) this.spans[0].tabIndex = 0;
    this.setLocked(this.locked !== null && this.locked < this.spans.length ? this.locked : null);
    this.setMarks(...this.marks);
  }

  /** Background colour per token (null clears); text flips to white on dark backgrounds. */
  setWeights(weights: ArrayLike<number> | null, cmap: Colormap, lo: number, hi: number): void {
    for (let i = 0; i < this.spans.length; i++) {
      const k = weights === null || i >= weights.length ? -2 : colorIndex(weights[i], lo, hi);
      if (this.applied[i] === k) continue;
      this.applied[i] = k;
      const style = this.spans[i].style;
      if (k === -2) {
        style.backgroundColor = "";
        style.color = "";
      } else {
        const rgb = rgbAt(cmap, k);
        style.backgroundColor = `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
        style.color = luminance(rgb) < 0.55 ? "#fff" : "#000";
      }
    }
  }

  /** Extra tooltip text per token (e.g. its activation) after `index: "token"`; null restores the plain tooltip. */
  setTooltips(extra: ((i: number) => string) | null): void {
    this.spans.forEach((span, i) => {
      const base = `${i}: ${JSON.stringify(this.labels[i])}`;
      span.title = extra === null ? base : `${base} · ${extra(i)}`;
    });
  }

  /** Colours depend on the colormap too: force a full restyle on the next setWeights. */
  invalidateColors(): void {
    this.applied.fill(-3);
  }

  setLocked(i: number | null): void {
    if (this.locked !== null) this.spans[this.locked]?.classList.remove("miw-token-locked");
    if (this.locked !== null) this.spans[this.locked]?.setAttribute("aria-selected", "false");
    this.locked = i;
    if (i !== null && this.spans[i]) {
      this.spans[i].classList.add("miw-token-locked");
      this.spans[i].setAttribute("aria-selected", "true");
    }
  }

  /** Outline a primary (e.g. query) and a secondary (e.g. key) token. */
  setMarks(primary: number | null, secondary: number | null): void {
    const [p0, s0] = this.marks;
    if (p0 !== null) this.spans[p0]?.classList.remove("miw-token-primary");
    if (s0 !== null) this.spans[s0]?.classList.remove("miw-token-secondary");
    this.marks = [primary, secondary];
    if (primary !== null) this.spans[primary]?.classList.add("miw-token-primary");
    if (secondary !== null) this.spans[secondary]?.classList.add("miw-token-secondary");
  }

  private indexOf(target: EventTarget | null): number | null {
    const span = (target as Element | null)?.closest?.(".miw-token");
    if (!span || span.parentElement?.parentElement !== this.element) return null;
    const i = Number((span as HTMLElement).dataset.index);
    return Number.isInteger(i) ? i : null;
  }

  /** Roving tabindex: only the focused token is in the tab order. */
  private moveFocus(i: number, focus: boolean): void {
    if (!this.spans.length) return;
    const next = Math.min(this.spans.length - 1, Math.max(0, i));
    this.spans[this.focusIndex]?.setAttribute("tabindex", "-1");
    this.focusIndex = next;
    this.spans[next].tabIndex = 0;
    if (focus) this.spans[next].focus();
  }

  private key(ev: KeyboardEvent): void {
    const i = this.indexOf(ev.target);
    if (i === null) return;
    switch (ev.key) {
      case "ArrowLeft":
      case "ArrowUp":
        this.moveFocus(i - 1, true);
        break;
      case "ArrowRight":
      case "ArrowDown":
        this.moveFocus(i + 1, true);
        break;
      case "Home":
        this.moveFocus(0, true);
        break;
      case "End":
        this.moveFocus(this.spans.length - 1, true);
        break;
      case "Enter":
      case " ":
        this.clickCb(i);
        break;
      case "Escape":
        this.hoverCb(null);
        this.clearCb();
        break;
      default:
        return;
    }
    ev.preventDefault();
    ev.stopPropagation();
  }
}
