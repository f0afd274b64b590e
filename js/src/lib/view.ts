/**
 * What every view shares: small DOM helpers, the model interface, the error banner, and the
 * anywidget entry point. A failure anywhere in a view ends up in its banner, never in the host.
 */

import { detectTheme, type Theme, watchTheme } from "./colormap";
import { isCancelled, RequestClient, type WidgetModelLike } from "./protocol";

/** The part of an anywidget model a view uses. */
export interface ViewModel extends WidgetModelLike {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  on(ev: string, cb: (...args: any[]) => void): void;
  off(ev: string, cb: (...args: any[]) => void): void;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls: string,
  testid?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  if (testid) node.dataset.testid = testid;
  return node;
}

export function button(label: string, cls: string, testid?: string): HTMLButtonElement {
  const b = el("button", cls, testid);
  b.type = "button";
  b.textContent = label;
  return b;
}

export function intOr<T>(v: unknown, fallback: T): number | T {
  return typeof v === "number" && Number.isInteger(v) ? v : fallback;
}

export function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

/** How a view reads a typed unit id (a neuron, a feature): the unit's name and what to say when there are none. */
export interface UnitIdSpec {
  /** "neuron", "feature": names the unit in the messages. */
  unit: string;
  /** The message when there are no units, e.g. "this SAE has no features". */
  none: string;
  /** Read a leading sign, so that "-1" is out of range rather than not a whole number. */
  signed?: boolean;
}

/** What the user typed in a unit box: an id in 0..count-1, or a message saying what is allowed. */
export function parseUnitId(text: string, count: number, spec: UnitIdSpec): { id: number } | { error: string } {
  const t = text.trim();
  if (count <= 0) return { error: spec.none };
  const range = `0..${count - 1}`;
  if (!(spec.signed ? /^[+-]?\d+$/ : /^\d+$/).test(t)) {
    return { error: `${spec.unit} must be a whole number in ${range}${t === "" ? "" : `, got ${JSON.stringify(t)}`}` };
  }
  const id = Number(t);
  if (id < 0 || id >= count) return { error: `${spec.unit} ${id} is out of range: ${range}` };
  return { id };
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Wrap a handler so that anything it throws goes to `onError` instead of the host. */
export function guard<A extends unknown[]>(
  onError: (e: unknown) => void,
  fn: (...args: A) => void,
): (...args: A) => void {
  return (...args: A) => {
    try {
      fn(...args);
    } catch (e) {
      onError(e);
    }
  };
}

/**
 * One dismissible banner for the errors of a view: the Python `error` trait plus one message per
 * source (a request kind, "view", ...), each cleared when that source next succeeds.
 */
export class ErrorBanner {
  readonly element: HTMLDivElement;
  private readonly text: HTMLSpanElement;
  private readonly errors = new Map<string, string>();

  constructor(
    private readonly model: ViewModel,
    private readonly onChange: () => void = () => {},
  ) {
    this.element = el("div", "miw-error");
    this.element.setAttribute("role", "alert");
    this.element.hidden = true;
    this.text = el("span", "miw-error-text", "error");
    const dismiss = button("×", "miw-button miw-button-small", "error-dismiss");
    dismiss.title = "Dismiss";
    dismiss.setAttribute("aria-label", "Dismiss error");
    dismiss.addEventListener("click", () => {
      this.errors.clear();
      this.render();
    });
    this.element.append(this.text, dismiss);
  }

  get visible(): boolean {
    return !this.element.hidden;
  }

  /** Show an error from `source`; a cancelled (superseded) request is not an error. */
  fail(source: string, e: unknown): void {
    if (isCancelled(e)) return;
    this.errors.set(source, errorText(e));
    this.render();
  }

  clear(source: string): void {
    if (this.errors.delete(source)) this.render();
  }

  render(): void {
    const fromPython = String(this.model.get("error") ?? "");
    const messages = [fromPython, ...this.errors.values()].filter((m) => m !== "");
    this.text.textContent = messages.join("\n");
    this.element.hidden = messages.length === 0;
    this.onChange();
  }
}

/**
 * What every view owns for its lifetime: a request client, an error banner, guarded model
 * listeners and cleanups. `dispose()` disposes the client, then runs the cleanups in order.
 */
export class ViewScope<M extends ViewModel = ViewModel> {
  readonly client: RequestClient;
  readonly banner: ErrorBanner;
  private readonly cleanups: Array<() => void> = [];

  constructor(
    readonly model: M,
    onBannerChange?: () => void,
  ) {
    this.client = new RequestClient(model);
    this.banner = new ErrorBanner(model, onBannerChange);
  }

  /** Wrap a handler so that anything it throws goes to the banner under `source`. */
  guard<A extends unknown[]>(source: string, fn: (...args: A) => void): (...args: A) => void {
    return guard((e) => this.banner.fail(source, e), fn);
  }

  /** Listen to a model event (errors go to the "view" banner source) until dispose. */
  on(event: string, fn: () => void): void {
    const cb = this.guard("view", fn);
    this.model.on(event, cb);
    this.onDispose(() => this.model.off(event, cb));
  }

  /**
   * Call `apply` when the page theme around `el` changes, and once a frame from now with the
   * theme detected then (the host may attach the view after render()). Both stop on dispose.
   */
  followTheme(el: Element, apply: (theme: Theme) => void): void {
    const guarded = this.guard("view", apply);
    this.onDispose(watchTheme(el, guarded));
    const frame = requestAnimationFrame(() => guarded(detectTheme(el)));
    this.onDispose(() => cancelAnimationFrame(frame));
  }

  onDispose(fn: () => void): void {
    this.cleanups.push(fn);
  }

  dispose(): void {
    this.client.dispose();
    for (const c of this.cleanups.splice(0)) c();
  }
}

/** The anywidget entry point of a view class; a view that fails to start says so in the cell. */
export function renderView<M extends ViewModel>(
  name: string,
  create: (model: M, host: HTMLElement) => { dispose(): void },
): { render(props: { model: M; el: HTMLElement }): () => void } {
  return {
    render({ model, el: host }) {
      try {
        const view = create(model, host);
        return () => view.dispose();
      } catch (e) {
        const box = el("div", "miw-root miw-error", "error");
        box.textContent = `${name} failed to start: ${errorText(e)}`;
        host.replaceChildren(box);
        return () => box.remove();
      }
    },
  };
}
