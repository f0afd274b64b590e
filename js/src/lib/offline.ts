/**
 * The kernel's stand-in in an exported HTML page (`mi_widgets/transport/export.py`): a widget model that
 * holds the exported state and answers the view's requests from the replies recorded in Python.
 *
 * Requests are looked up by `requestKey` (the same string as Python's `request_key`); each recorded reply
 * is the protocol messages the kernel sent, with their buffers gzipped in one piece. A request that was
 * not recorded gets an error reply saying so, which the view shows in its banner.
 */

import { LruCache } from "./tiles";
import type { ViewModel } from "./view";

/** Unpacked replies kept for a request asked again (the views keep what they decoded themselves). */
const UNPACKED_KEPT = 8;

export interface RecordedMessage {
  /** The message content without its request id. */
  content: Record<string, unknown>;
  /** Byte lengths of this message's buffers, in order. */
  lengths: number[];
}

export interface RecordedReply {
  messages: RecordedMessage[];
  /** base64 of the gzipped concatenation of every message's buffers. */
  data: string;
}

/** JSON with object keys sorted at every depth and no spaces: Python's `json.dumps(sort_keys=True, separators=(",", ":"))`. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value as object).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** The key a request is recorded under. */
export function requestKey(method: string, params: unknown): string {
  return canonicalJson({ method, params: params ?? {} });
}

export function base64Bytes(text: string): Uint8Array {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export async function gunzip(bytes: Uint8Array): Promise<ArrayBuffer> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer();
}

type Handler = (...args: any[]) => void;

export class OfflineModel implements ViewModel<Record<string, any>> {
  private readonly state: Record<string, any>;
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly unpacked = new LruCache<Promise<ArrayBuffer>>(UNPACKED_KEPT);

  constructor(
    state: Record<string, any>,
    private readonly replies: Record<string, RecordedReply>,
    /** What an unrecorded request's error says after "not in this export:". */
    private readonly missing: (method: string) => string = () => "",
  ) {
    this.state = { ...state };
  }

  get(name: string): any {
    return this.state[name];
  }

  /** Like a widget model: the change is local (no kernel to tell), listeners hear it at once. */
  set(name: string, value: unknown): void {
    if (Object.is(this.state[name], value)) return;
    this.state[name] = value;
    this.emit(`change:${name}`, this, value);
  }

  save_changes(): void {}

  on(ev: string, cb: Handler): void {
    if (!this.handlers.has(ev)) this.handlers.set(ev, new Set());
    this.handlers.get(ev)?.add(cb);
  }

  off(ev: string, cb?: Handler): void {
    if (cb === undefined) this.handlers.delete(ev);
    else this.handlers.get(ev)?.delete(cb);
  }

  send(content: any): void {
    if (content?.type !== "request") return; // a cancel: the answers are already here
    const id = content.id;
    const key = requestKey(content.method, content.params);
    const recorded = this.replies[key];
    if (recorded === undefined) {
      const why = this.missing(String(content.method));
      const message = `not in this export: ${content.method} ${canonicalJson(content.params ?? {})}${why ? ` (${why})` : ""}`;
      setTimeout(() => this.emit("msg:custom", errorReply(id, "NotExported", message), []), 0);
      return;
    }
    this.unpack(key, recorded).then(
      (data) => {
        let at = 0;
        for (const message of recorded.messages) {
          const buffers = message.lengths.map((length) => {
            const view = new DataView(data, at, length);
            at += length;
            return view;
          });
          this.emit("msg:custom", { ...message.content, id }, buffers);
        }
      },
      (e) => this.emit("msg:custom", errorReply(id, "ExportError", `could not read the exported data: ${e}`), []),
    );
  }

  private unpack(key: string, recorded: RecordedReply): Promise<ArrayBuffer> {
    let data = this.unpacked.get(key);
    if (data === undefined) {
      data = gunzip(base64Bytes(recorded.data));
      this.unpacked.set(key, data);
    }
    return data;
  }

  private emit(ev: string, ...args: unknown[]): void {
    for (const cb of [...(this.handlers.get(ev) ?? [])]) cb(...args);
  }
}

function errorReply(id: unknown, type: string, message: string): Record<string, unknown> {
  return { type: "response", id, part: 0, parts: 1, ok: false, error: { type, message } };
}
