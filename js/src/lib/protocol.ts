/**
 * Request/response protocol over anywidget custom messages: TypeScript twin of
 * `mi_widgets/transport/protocol.py` (see its docstring for the message shapes).
 *
 * Every view of a model receives every `msg:custom`, so each client tags its request ids
 * with a random client id and ignores replies that are not its own.
 */

export interface WidgetModelLike {
  send(content: any, callbacks?: any, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
  on(ev: "msg:custom", cb: (msg: any, buffers: DataView[]) => void): void;
  off(ev: "msg:custom", cb: (msg: any, buffers: DataView[]) => void): void;
}

export interface Response {
  result: any;
  buffers: DataView[];
}

export interface Progress {
  done: number;
  total: number;
  label: string;
}

/** An exception raised by the kernel-side handler. */
export class RemoteError extends Error {
  readonly type: string;
  constructor(type: string, message: string) {
    super(`${type}: ${message}`);
    this.name = "RemoteError";
    this.type = type;
  }
}

/** The request was cancelled or superseded; callers normally ignore it. */
export class CancelledError extends Error {
  constructor(message = "request cancelled") {
    super(message);
    this.name = "CancelledError";
  }
}

export function isCancelled(e: unknown): boolean {
  return e instanceof CancelledError;
}

const DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024;

interface Pending {
  method: string;
  supersede?: string;
  onProgress?: (p: Progress) => void;
  resolve: (r: Response) => void;
  reject: (e: Error) => void;
  /** Part 0 content, once it arrived. */
  head?: { result: any; lengths: number[]; parts: number };
  slices: DataView[];
  nextPart: number;
}

function randomId(): string {
  return Math.random().toString(36).slice(2, 8);
}

function toDataView(b: DataView | ArrayBuffer | ArrayBufferView): DataView {
  if (b instanceof DataView) return b;
  if (b instanceof ArrayBuffer) return new DataView(b);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Cut the concatenated slices of all parts back into buffers of `lengths` bytes.
 * A buffer that lies inside one slice is returned as a view on it, without copying.
 */
export function reassemble(slices: ReadonlyArray<DataView>, lengths: ReadonlyArray<number>): DataView[] {
  const total = slices.reduce((n, s) => n + s.byteLength, 0);
  const wanted = lengths.reduce((n, l) => n + l, 0);
  if (total !== wanted) throw new Error(`response parts hold ${total} bytes, but buffer_lengths add up to ${wanted}`);
  const out: DataView[] = [];
  let si = 0;
  let off = 0;
  for (const length of lengths) {
    const pieces: Uint8Array[] = [];
    let need = length;
    while (need > 0) {
      const s = slices[si];
      const avail = s.byteLength - off;
      if (avail === 0) {
        si++;
        off = 0;
        continue;
      }
      const take = Math.min(avail, need);
      pieces.push(new Uint8Array(s.buffer as ArrayBuffer, s.byteOffset + off, take));
      off += take;
      need -= take;
    }
    if (pieces.length === 1) {
      out.push(new DataView(pieces[0].buffer, pieces[0].byteOffset, length));
    } else {
      const joined = new Uint8Array(length);
      let at = 0;
      for (const p of pieces) {
        joined.set(p, at);
        at += p.byteLength;
      }
      out.push(new DataView(joined.buffer));
    }
  }
  return out;
}

export class RequestClient {
  private readonly model: WidgetModelLike;
  private readonly maxRequestBytes: number;
  private readonly clientId: string;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Map<string, Set<(event: Response) => void>>();
  private readonly bySupersede = new Map<string, string>();
  private counter = 0;
  private disposed = false;
  private readonly listener = (msg: any, buffers: DataView[]) => this.receive(msg, buffers ?? []);

  constructor(model: WidgetModelLike, opts: { maxRequestBytes?: number; clientId?: string } = {}) {
    this.model = model;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.clientId = opts.clientId ?? randomId();
    model.on("msg:custom", this.listener);
  }

  request(
    method: string,
    params: Record<string, unknown> = {},
    opts: { supersede?: string; onProgress?: (p: Progress) => void; buffers?: ArrayBuffer[] } = {},
  ): Promise<Response> {
    if (this.disposed) return Promise.reject(new CancelledError("request client is disposed"));
    if (opts.supersede !== undefined) this.cancel(opts.supersede);
    const id = `${this.clientId}:${++this.counter}`;
    const content = { type: "request", id, method, params };
    const buffers = opts.buffers ?? [];
    let size: number;
    try {
      size =
        new TextEncoder().encode(JSON.stringify(content)).byteLength + buffers.reduce((n, b) => n + b.byteLength, 0);
    } catch (e) {
      return Promise.reject(
        new Error(`request ${method} has params that cannot be sent as JSON: ${(e as Error).message}`),
      );
    }
    if (size > this.maxRequestBytes) {
      return Promise.reject(
        new Error(
          `request ${method} is ${size} bytes, over the ${this.maxRequestBytes}-byte limit for messages to the kernel`,
        ),
      );
    }
    return new Promise<Response>((resolve, reject) => {
      this.pending.set(id, {
        method,
        supersede: opts.supersede,
        onProgress: opts.onProgress,
        resolve,
        reject,
        slices: [],
        nextPart: 0,
      });
      if (opts.supersede !== undefined) this.bySupersede.set(opts.supersede, id);
      try {
        this.model.send(content, undefined, buffers);
      } catch (e) {
        this.settle(id);
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /**
   * Call `listener` with every `event` the kernel pushes under this name (no request needed; a
   * training loop's frames arrive this way even while the kernel runs a cell). Returns the
   * unsubscribe function; `dispose()` drops all listeners.
   */
  onEvent(event: string, listener: (event: Response) => void): () => void {
    if (this.disposed) return () => {};
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Reject the pending request registered under `supersedeKey` and tell the kernel to stop it. */
  cancel(supersedeKey: string): void {
    const id = this.bySupersede.get(supersedeKey);
    if (id !== undefined) this.abort(id);
  }

  /** Cancel everything in flight and stop listening; later requests reject. */
  dispose(): void {
    if (this.disposed) return;
    for (const id of [...this.pending.keys()]) this.abort(id);
    this.listeners.clear();
    this.model.off("msg:custom", this.listener);
    this.disposed = true;
  }

  private abort(id: string): void {
    const p = this.settle(id);
    if (p === undefined) return;
    p.reject(new CancelledError(`request ${id} (${p.method}) was cancelled`));
    try {
      this.model.send({ type: "cancel", id });
    } catch {
      // The comm is already gone: nothing left to cancel on the kernel side.
    }
  }

  /** Forget a request; returns it if it was still pending. */
  private settle(id: string): Pending | undefined {
    const p = this.pending.get(id);
    if (p === undefined) return undefined;
    this.pending.delete(id);
    if (p.supersede !== undefined && this.bySupersede.get(p.supersede) === id) this.bySupersede.delete(p.supersede);
    return p;
  }

  private receive(msg: any, buffers: ReadonlyArray<DataView | ArrayBuffer | ArrayBufferView>): void {
    if (msg !== null && typeof msg === "object" && msg.type === "event") {
      this.receiveEvent(msg, buffers);
      return;
    }
    if (msg === null || typeof msg !== "object" || typeof msg.id !== "string") return;
    const p = this.pending.get(msg.id);
    if (p === undefined) return; // another view's request, or one we gave up on
    if (msg.type === "progress") {
      p.onProgress?.({ done: Number(msg.done), total: Number(msg.total), label: String(msg.label ?? "") });
      return;
    }
    if (msg.type !== "response") return;
    try {
      this.receivePart(msg, p, buffers);
    } catch (e) {
      this.settle(msg.id);
      p.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private receiveEvent(msg: any, buffers: ReadonlyArray<DataView | ArrayBuffer | ArrayBufferView>): void {
    const set = this.listeners.get(String(msg.event));
    if (set === undefined || set.size === 0) return;
    const lengths: number[] = (msg.buffer_lengths ?? []).map(Number);
    const event: Response = { result: msg.result, buffers: reassemble(buffers.map(toDataView), lengths) };
    // Views wrap their listeners in their scope's guard, so a throwing listener reports in its banner.
    for (const listener of [...set]) listener(event);
  }

  private receivePart(msg: any, p: Pending, buffers: ReadonlyArray<DataView | ArrayBuffer | ArrayBufferView>): void {
    const part = Number(msg.part ?? 0);
    if (part !== p.nextPart) throw new Error(`request ${msg.id}: expected response part ${p.nextPart}, got ${part}`);
    if (part === 0) {
      if (msg.ok === false) {
        this.settle(msg.id);
        const type = String(msg.error?.type ?? "Error");
        const message = String(msg.error?.message ?? "");
        p.reject(type === "Cancelled" ? new CancelledError(message) : new RemoteError(type, message));
        return;
      }
      p.head = { result: msg.result, lengths: (msg.buffer_lengths ?? []).map(Number), parts: Number(msg.parts ?? 1) };
    }
    p.nextPart++;
    for (const b of buffers) p.slices.push(toDataView(b));
    if (p.head !== undefined && p.nextPart >= p.head.parts) {
      this.settle(msg.id);
      p.resolve({ result: p.head.result, buffers: reassemble(p.slices, p.head.lengths) });
    }
  }
}
