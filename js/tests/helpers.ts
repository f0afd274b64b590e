/** Shared test helpers: fixture loading and a fake anywidget model. */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "tests", "fixtures");

export function fixture<T>(name: string): T {
  return JSON.parse(readFileSync(join(FIXTURES, name), "utf8")) as T;
}

/** The vectors write NaN and infinities as strings. */
export function num(v: number | string): number {
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return Number(v);
}

export function b64(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "base64"));
}

/** A DataView over a copy of `bytes` placed at a non-zero (and by default odd) offset of a larger buffer. */
export function offsetView(bytes: Uint8Array, offset = 3): DataView {
  const backing = new Uint8Array(bytes.byteLength + offset + 5);
  backing.set(bytes, offset);
  return new DataView(backing.buffer, offset, bytes.byteLength);
}

type Handler = (...args: any[]) => void;

/** Enough of a Backbone-style widget model: synchronous change events, recorded sends. */
export class FakeModel {
  readonly sent: Array<{ content: any; buffers: ReadonlyArray<ArrayBuffer | ArrayBufferView> }> = [];
  readonly handlers = new Map<string, Set<Handler>>();
  saves = 0;

  constructor(public attrs: Record<string, any> = {}) {}

  get(name: string): any {
    return this.attrs[name];
  }
  set(name: string, value: unknown): void {
    this.attrs[name] = value;
    this.emit(`change:${name}`);
  }
  save_changes(): void {
    this.saves++;
  }
  send(content: any, _callbacks?: any, buffers: ReadonlyArray<ArrayBuffer | ArrayBufferView> = []): void {
    this.sent.push({ content, buffers });
  }
  on(ev: string, cb: Handler): void {
    if (!this.handlers.has(ev)) this.handlers.set(ev, new Set());
    this.handlers.get(ev)!.add(cb);
  }
  off(ev: string, cb: Handler): void {
    this.handlers.get(ev)?.delete(cb);
  }
  emit(ev: string, ...args: unknown[]): void {
    for (const cb of [...(this.handlers.get(ev) ?? [])]) cb(...args);
  }
  listenerCount(): number {
    let n = 0;
    for (const set of this.handlers.values()) n += set.size;
    return n;
  }
  /** Requests sent so far (not cancels). */
  requests(method?: string): any[] {
    return this.sent
      .map((s) => s.content)
      .filter((c) => c.type === "request" && (method === undefined || c.method === method));
  }
  /** Reply to a request with a one-part response. */
  reply(id: string, result: unknown, buffers: ArrayBuffer[] = []): void {
    const content = {
      type: "response",
      id,
      part: 0,
      parts: 1,
      ok: true,
      result,
      buffer_lengths: buffers.map((b) => b.byteLength),
    };
    this.emit(
      "msg:custom",
      content,
      buffers.map((b) => offsetView(new Uint8Array(b))),
    );
  }
  replyError(id: string, type: string, message: string): void {
    this.emit("msg:custom", { type: "response", id, part: 0, parts: 1, ok: false, error: { type, message } }, []);
  }
}

/** Render a view into a fresh element on the page; `q(testid)` finds its parts. */
export function mountView(
  view: { render(props: { model: any; el: HTMLElement }): () => void },
  model: FakeModel,
  rootTestid: string,
) {
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = view.render({ model, el });
  const root = el.querySelector<HTMLElement>(`[data-testid=${rootTestid}]`)!;
  const q = <T extends HTMLElement = HTMLElement>(id: string) => el.querySelector<T>(`[data-testid=${id}]`)!;
  return { el, root, q, cleanup };
}
