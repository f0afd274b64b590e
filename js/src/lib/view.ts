/**
 * What every view shares: small DOM helpers, the model interface, the error banner, and the
 * anywidget entry point. A failure anywhere in a view ends up in its banner, never in the host.
 */

import { detectTheme, type Theme, watchTheme } from "./colormap";
import { isCancelled, type Progress, RequestClient, type Response, type WidgetModelLike } from "./protocol";
import { type Params, Resource, type ResourceSpec } from "./resource";

/** The traits every widget has (`ProtocolWidget.revision`; `error` where the widget reports one). */
export interface BaseTraits {
  revision: number;
  error?: string;
}

/** Traits of a model whose view declares none (tests, helpers): any name goes. */
export type LooseTraits = BaseTraits & Record<string, any>;

/**
 * The part of an anywidget model a view uses, typed by the widget's traits `T` (a view declares
 * them as an interface), so a trait-name typo is a compile error.
 */
export interface ViewModel<T extends object = LooseTraits> extends WidgetModelLike {
  get<K extends keyof T & string>(name: K): T[K];
  set<K extends keyof T & string>(name: K, value: T[K]): void;
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
    private readonly model: ViewModel<BaseTraits>,
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
 * What every view owns for its lifetime: a request client, an error banner, its resources,
 * guarded model listeners and cleanups. `dispose()` disposes the resources and the client, then
 * runs the cleanups in order.
 */
export class ViewScope<T extends BaseTraits = LooseTraits> {
  readonly client: RequestClient;
  readonly banner: ErrorBanner;
  private readonly cleanups: Array<() => void> = [];
  private readonly resources: Array<Resource<any, any>> = [];
  private readonly loadingListeners: Array<(loading: boolean) => void> = [];
  private readonly commands = new Set<string>();
  /** Number of the latest call per command method: only it ends the busy state. */
  private readonly calls = new Map<string, number>();

  constructor(
    readonly model: ViewModel<T>,
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
  on(event: `change:${keyof T & string}`, fn: () => void): void {
    const cb = this.guard("view", fn);
    this.model.on(event, cb);
    this.onDispose(() => this.model.off(event, cb));
  }

  /** Call `fn` when any of the named traits changes. */
  onChange(names: ReadonlyArray<keyof T & string>, fn: () => void): void {
    for (const name of names) this.on(`change:${name}`, fn);
  }

  /**
   * Declare an endpoint this view reads (see `resource.ts` for the one stale policy). It is fetched
   * once now, again on every `revision` change and on a change of a trait in `refetchOn`; call its
   * `fetch()` when something else changes what `params()` wants.
   */
  resource<P extends Params, D>(
    spec: ResourceSpec<P, D> & { refetchOn?: ReadonlyArray<keyof T & string>; lazy?: boolean },
  ): Resource<P, D> {
    const r = new Resource<P, D>(
      {
        client: this.client,
        revision: () => Number(this.model.get("revision")) || 0,
        fail: (source, e) => this.banner.fail(source, e),
        clear: (source) => this.banner.clear(source),
        loadingChanged: () => this.loadingChanged(),
      },
      spec,
    );
    if (this.resources.length === 0) this.on("change:revision", () => this.revisionChanged());
    this.resources.push(r);
    for (const name of spec.refetchOn ?? []) this.on(`change:${name}`, () => void r.fetch());
    if (!spec.lazy) void r.fetch();
    return r;
  }

  /**
   * Ask the kernel to do something (run a prompt, start a scan). A newer call of the same method
   * supersedes the older; errors go to the banner under the method's name; resolves to the reply,
   * or `null` when it failed or was superseded. `busy(method)` is true while one is out.
   */
  command(
    method: string,
    params: Params = {},
    opts: { onProgress?: (p: Progress) => void } = {},
  ): Promise<Response | null> {
    this.banner.clear(method);
    this.commands.add(method);
    const call = (this.calls.get(method) ?? 0) + 1;
    this.calls.set(method, call);
    this.loadingChanged();
    const request = this.client.request(method, params, { supersede: method, onProgress: opts.onProgress });
    const end = () => {
      if (this.calls.get(method) !== call) return; // a newer call owns the busy state
      this.commands.delete(method);
      this.loadingChanged();
    };
    return request.then(
      (reply) => {
        end();
        return reply;
      },
      (e) => {
        end(); // also when the kernel cancelled it (e.g. on close): nothing is out any more
        if (!isCancelled(e)) this.banner.fail(method, e);
        return null;
      },
    );
  }

  busy(method: string): boolean {
    return this.commands.has(method);
  }

  /** A resource's request is out. */
  get loading(): boolean {
    return this.resources.some((r) => r.loading);
  }

  /** Call `fn(loading)` whenever a resource request or a command starts or ends (`loading`: a resource's is out). */
  onLoading(fn: (loading: boolean) => void): void {
    this.loadingListeners.push(this.guard("view", fn));
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
    for (const r of this.resources) r.dispose();
    this.client.dispose();
    for (const c of this.cleanups.splice(0)) c();
  }

  private revisionChanged(): void {
    for (const r of this.resources) r.revisionChanged();
  }

  private loadingChanged(): void {
    const loading = this.loading;
    for (const fn of this.loadingListeners) fn(loading);
  }
}

/**
 * The base of every view: owns the root element (in `host`), the scope (client, banner,
 * resources), the theme and dispose. A subclass builds its DOM in its constructor, declares its
 * resources with `this.scope.resource(...)` and overrides `applyTheme`; `data-loading` on the
 * root says a request is out.
 */
export abstract class View<T extends BaseTraits = BaseTraits> {
  protected readonly model: ViewModel<T>;
  protected readonly scope: ViewScope<T>;
  protected readonly banner: ErrorBanner;
  protected readonly root: HTMLDivElement;
  protected theme: Theme;

  constructor(model: ViewModel<T>, host: HTMLElement, root: { className: string; testid: string }) {
    this.model = model;
    this.theme = detectTheme(host);
    this.scope = new ViewScope<T>(model, () => this.bannerChanged());
    this.banner = this.scope.banner;
    this.root = el("div", `miw-root ${root.className}`, root.testid);
    this.scope.on("change:error" as `change:${keyof T & string}`, () => this.banner.render());
    this.scope.onLoading((loading) => {
      if (loading) this.root.dataset.loading = "true";
      else delete this.root.dataset.loading;
      this.loadingChanged(loading);
    });
    this.scope.followTheme(this.root, (theme) => {
      if (theme === this.theme) return;
      this.theme = theme;
      this.applyTheme(theme);
    });
    host.append(this.root);
    this.scope.onDispose(() => this.root.remove());
  }

  /** The page theme changed (light/dark): redraw what depends on it. */
  protected applyTheme(_theme: Theme): void {}

  /** The banner was shown, changed or hidden. */
  protected bannerChanged(): void {}

  /** A request started or all ended. */
  protected loadingChanged(_loading: boolean): void {}

  /**
   * The row under the view that saves its picture as PNG or SVG (drawn by the kernel from what the view
   * shows: `ProtocolWidget.to_png` / `to_svg`). `renderView` adds it after the view built its DOM.
   */
  addExportBar(): void {
    const bar = el("div", "miw-export", "export");
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Save the picture");
    const label = el("span", "miw-export-label");
    label.textContent = "Save picture:";
    bar.append(label);
    for (const format of ["png", "svg"] as const) {
      const b = button(format.toUpperCase(), "miw-button miw-button-small", `export-${format}`);
      b.title = `Save this view's picture as ${format.toUpperCase()}${format === "svg" ? " (text stays text)" : ""}`;
      b.addEventListener("click", () => void this.exportPicture(format));
      bar.append(b);
    }
    this.root.append(bar);
  }

  private async exportPicture(format: "png" | "svg"): Promise<void> {
    const reply = await this.scope.command("export", { format });
    if (reply === null) return; // the banner says why
    this.scope.guard("export", () => {
      const data = reply.buffers[0];
      if (data === undefined) throw new Error("the kernel sent no picture");
      saveFile(data, String(reply.result.filename), String(reply.result.mime));
    })();
  }

  dispose(): void {
    this.scope.dispose();
  }
}

/** Offer `data` to the user as a download named `filename` (the browser asks or saves it). */
export function saveFile(data: DataView, filename: string, mime: string): void {
  const bytes = new Uint8Array(data.byteLength);
  bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  const url = URL.createObjectURL(new Blob([bytes], { type: mime }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The anywidget entry point of a view class; a view that fails to start says so in the cell. */
export function renderView<M extends ViewModel<any>>(
  name: string,
  create: (model: M, host: HTMLElement) => { dispose(): void; addExportBar?(): void },
): { render(props: { model: M; el: HTMLElement }): () => void } {
  return {
    render({ model, el: host }) {
      try {
        const view = create(model, host);
        view.addExportBar?.();
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
