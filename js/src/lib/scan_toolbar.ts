/**
 * The front half of a streaming scan (Python: `mi_widgets/widgets/streaming.py`): a toolbar with
 * Start, Stop, a progress bar and a status line that follow the `status` / `progress` traits.
 * The view's partial results are its own resources with `policy: "coalesce"` (`resource.ts`), so a
 * fast scan's revision bumps fold into one more fetch and cannot starve the view. The root element
 * gets `data-status` and `data-done` (for tests and styling). In an HTML export (state `can_start: false`)
 * Start and Stop are hidden: there is no kernel to run anything.
 */

import "./scan_toolbar.css";

import { type BaseTraits, button, clamp, el, type ViewScope } from "./view";

export type ScanStatus = "idle" | "running" | "done" | "stopped" | "error";

export function scanStatus(raw: unknown): ScanStatus {
  return raw === "running" || raw === "done" || raw === "stopped" || raw === "error" ? raw : "idle";
}

/** The traits of a streaming widget (Python: `StreamingWidget`). */
export interface ScanTraits extends BaseTraits {
  status: string;
  progress: { done?: number; total?: number };
  error: string;
  /** Only in an HTML export's state: false (no kernel). */
  can_start?: boolean;
}

export interface ScanToolbarOptions {
  /** The view's scope: model, client (Start/Stop are its commands), banner, guarded listeners. */
  scope: ViewScope<any>;
  /** Gets `data-status` / `data-done`. */
  root: HTMLElement;
  /** What `progress` counts, singular and plural (default batch / batches; training uses step / steps). */
  unit?: { one: string; many: string };
}

export class ScanToolbar {
  readonly element: HTMLDivElement;
  readonly startButton: HTMLButtonElement;
  readonly stopButton: HTMLButtonElement;
  readonly progress: HTMLProgressElement;
  readonly status: HTMLSpanElement;
  private readonly scope: ViewScope<ScanTraits>;
  private readonly root: HTMLElement;
  private readonly unit: { one: string; many: string };

  constructor(opts: ScanToolbarOptions) {
    this.scope = opts.scope;
    this.root = opts.root;
    this.unit = opts.unit ?? { one: "batch", many: "batches" };
    this.element = el("div", "miw-scan-toolbar");
    this.startButton = button("Start", "miw-button miw-button-primary", "start-button");
    this.stopButton = button("Stop", "miw-button", "stop-button");
    this.progress = el("progress", "", "progress");
    this.status = el("span", "miw-scan-status", "status");
    this.status.setAttribute("role", "status");
    this.element.append(this.startButton, this.stopButton, this.progress, this.status);

    this.scope.onChange(["status", "progress"], () => this.render());
    this.startButton.addEventListener(
      "click",
      this.scope.guard("start", () => this.command("start")),
    );
    this.stopButton.addEventListener(
      "click",
      this.scope.guard("stop", () => this.command("stop")),
    );
    this.render();
  }

  statusValue(): ScanStatus {
    return scanStatus(this.scope.model.get("status"));
  }

  /** Start or Stop; its button stays disabled until the kernel answers. */
  private command(method: "start" | "stop"): void {
    const done = this.scope.command(method);
    this.render();
    void done.then(() => this.render());
  }

  render(): void {
    const status = this.statusValue();
    const raw = (this.scope.model.get("progress") ?? {}) as { done?: unknown; total?: unknown };
    const total = Math.max(0, Number(raw.total) || 0);
    const done = clamp(Number(raw.done) || 0, 0, total || Infinity);
    const running = status === "running";
    const kernel = this.scope.model.get("can_start") !== false; // false only in an HTML export
    this.startButton.hidden = this.stopButton.hidden = !kernel;
    this.startButton.disabled = running || this.scope.busy("start");
    this.stopButton.disabled = !running || this.scope.busy("stop");

    if (total > 0) {
      this.progress.max = total;
      this.progress.value = done;
    } else if (running) {
      this.progress.removeAttribute("value"); // indeterminate until the total is known
    } else {
      this.progress.max = 1;
      this.progress.value = 0;
    }
    const unit = this.unit;
    const text: Record<ScanStatus, string> = {
      idle: "idle",
      running: `running: ${unit.one} ${done}/${total || "?"}`,
      done: `done: ${done} ${done === 1 ? unit.one : unit.many}`,
      stopped: `stopped after ${done}/${total} ${unit.many}`,
      error: `error after ${done}/${total} ${unit.many}`,
    };
    this.status.textContent = text[status];
    this.status.title = text[status];
    const d = this.root.dataset;
    d.status = status;
    d.done = String(done);
  }
}
