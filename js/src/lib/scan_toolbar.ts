/**
 * The front half of a streaming scan (Python: `mi_widgets/widgets/streaming.py`): a toolbar with
 * Start, Stop, a progress bar and a status line that follow the `status` / `progress` traits, and
 * a refetch of the view's partial results whenever `revision` moves.
 *
 * Refetches are coalesced: at most one is in flight, and revision bumps that arrive meanwhile fold
 * into one more fetch once it settles, so a fast scan cannot starve the view. The root element
 * gets `data-status` and `data-done` (for tests and styling).
 */

import "./scan_toolbar.css";

import type { RequestClient } from "./protocol";
import { button, clamp, type ErrorBanner, el, type ViewModel } from "./view";

export type ScanStatus = "idle" | "running" | "done" | "stopped" | "error";

export function scanStatus(raw: unknown): ScanStatus {
  return raw === "running" || raw === "done" || raw === "stopped" || raw === "error" ? raw : "idle";
}

/** Runs `fetch` now, or once more after the fetch in flight settles (however many calls came meanwhile). */
export class CoalescedFetch {
  private inFlight = false;
  private again = false;
  private disposed = false;

  constructor(private readonly fetch: () => Promise<unknown>) {}

  get busy(): boolean {
    return this.inFlight;
  }

  run(): void {
    if (this.disposed) return;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    this.again = false;
    const settle = () => {
      this.inFlight = false;
      if (this.again) this.run();
    };
    let pending: Promise<unknown>;
    try {
      pending = this.fetch();
    } catch (e) {
      pending = Promise.reject(e);
    }
    pending.then(settle, settle);
  }

  dispose(): void {
    this.disposed = true;
  }
}

export interface ScanToolbarOptions {
  model: ViewModel;
  client: RequestClient;
  banner: ErrorBanner;
  /** Gets `data-status` / `data-done`. */
  root: HTMLElement;
  /** Fetch the partial results; should settle (not reject) once they are drawn or failed. */
  refetch: () => Promise<unknown>;
  /** What `progress` counts, singular and plural (default batch / batches; training uses step / steps). */
  unit?: { one: string; many: string };
  /** Wraps event handlers so that what they throw reaches the banner. */
  guard: <A extends unknown[]>(source: string, fn: (...args: A) => void) => (...args: A) => void;
}

export class ScanToolbar {
  readonly element: HTMLDivElement;
  readonly startButton: HTMLButtonElement;
  readonly stopButton: HTMLButtonElement;
  readonly progress: HTMLProgressElement;
  readonly status: HTMLSpanElement;
  private readonly opts: ScanToolbarOptions;
  private readonly fetcher: CoalescedFetch;
  private readonly cleanups: Array<() => void> = [];
  /** Requests in flight that disable their button until they settle. */
  private readonly busy = { start: false, stop: false };

  constructor(opts: ScanToolbarOptions) {
    this.opts = opts;
    this.fetcher = new CoalescedFetch(opts.refetch);
    this.element = el("div", "miw-scan-toolbar");
    this.startButton = button("Start", "miw-button miw-button-primary", "start-button");
    this.stopButton = button("Stop", "miw-button", "stop-button");
    this.progress = el("progress", "", "progress");
    this.status = el("span", "miw-scan-status", "status");
    this.status.setAttribute("role", "status");
    this.element.append(this.startButton, this.stopButton, this.progress, this.status);

    const onModel = (ev: string, fn: () => void) => {
      const cb = opts.guard("view", fn);
      opts.model.on(ev, cb);
      this.cleanups.push(() => opts.model.off(ev, cb));
    };
    onModel("change:revision", () => this.refresh());
    onModel("change:status", () => this.render());
    onModel("change:progress", () => this.render());
    this.startButton.addEventListener(
      "click",
      opts.guard("start", () => this.command("start")),
    );
    this.stopButton.addEventListener(
      "click",
      opts.guard("stop", () => this.command("stop")),
    );
    this.render();
  }

  /** Fetch the partial results (coalesced with a fetch in flight). */
  refresh(): void {
    this.fetcher.run();
  }

  statusValue(): ScanStatus {
    return scanStatus(this.opts.model.get("status"));
  }

  dispose(): void {
    this.fetcher.dispose();
    for (const c of this.cleanups.splice(0)) c();
  }

  private command(method: "start" | "stop"): void {
    this.opts.banner.clear(method);
    this.busy[method] = true;
    this.render();
    this.opts.client.request(method, {}).then(
      () => this.endCommand(method),
      (e) => this.endCommand(method, e),
    );
  }

  private endCommand(method: "start" | "stop", error?: unknown): void {
    this.busy[method] = false;
    if (error !== undefined) this.opts.banner.fail(method, error);
    this.render();
  }

  render(): void {
    const status = this.statusValue();
    const raw = (this.opts.model.get("progress") ?? {}) as { done?: unknown; total?: unknown };
    const total = Math.max(0, Number(raw.total) || 0);
    const done = clamp(Number(raw.done) || 0, 0, total || Infinity);
    const running = status === "running";
    this.startButton.disabled = running || this.busy.start;
    this.stopButton.disabled = !running || this.busy.stop;

    if (total > 0) {
      this.progress.max = total;
      this.progress.value = done;
    } else if (running) {
      this.progress.removeAttribute("value"); // indeterminate until the total is known
    } else {
      this.progress.max = 1;
      this.progress.value = 0;
    }
    const unit = this.opts.unit ?? { one: "batch", many: "batches" };
    const text: Record<ScanStatus, string> = {
      idle: "idle",
      running: `running: ${unit.one} ${done}/${total || "?"}`,
      done: `done: ${done} ${done === 1 ? unit.one : unit.many}`,
      stopped: `stopped after ${done}/${total} ${unit.many}`,
      error: `error after ${done}/${total} ${unit.many}`,
    };
    this.status.textContent = text[status];
    this.status.title = text[status];
    const d = this.opts.root.dataset;
    d.status = status;
    d.done = String(done);
  }
}
