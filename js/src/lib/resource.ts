/**
 * One way for a view to fetch data from its widget: a view declares each endpoint it reads once
 * (method, params, decode, draw, what makes it refetch) and gets the revision contract for free.
 *
 * The stale policy, the same for every view (DEVELOP.md, "Protocol rules"):
 * - Every reply carries the `revision` it was computed for (the kernel's router stamps it).
 * - A reply is drawn only if its revision is at least the one the view had when it asked, and at
 *   least the one of what this resource last drew: a reply for an old revision is never drawn.
 * - A change of `revision` refetches. By default (`supersede`) the request in flight is cancelled
 *   first, so its reply can never be drawn; a `coalesce` resource (a scan, whose revisions can come
 *   faster than replies) lets it land and asks once more after it, so a fast scan cannot starve it.
 *   New params (the user chose something else) always supersede, whatever the policy.
 * - A resource whose data does not depend on `revision` (`followRevision: false`, e.g. a prompt's
 *   tokens beside a running scan) neither refetches nor checks revisions: only params matter.
 * - A fetch for what is already in flight (same params, same revision) is folded into it; a fetch
 *   for something else supersedes it. Replies can be cached per revision (`cache`).
 * - Errors (the kernel's, or a reply that does not decode) go to the view's banner under the
 *   method's name and are cleared by its next success; `loading` is true while a request is out.
 */

import { isCancelled, type Progress, type RequestClient, type Response } from "./protocol";

export type Params = Record<string, unknown>;

export interface ResourceSpec<P extends Params, T> {
  /** The kernel method; also the banner source for its errors. */
  method: string;
  /** What to ask for now; `null` when nothing is wanted yet (a fetch then cancels and does nothing). */
  params?: () => P | null;
  /**
   * What else the data depends on that is not sent (e.g. the text of the prompt the index points at):
   * part of what makes two fetches the same, for the in-flight fold, the drawn check and the cache.
   */
  key?: () => unknown;
  /** Check and decode a reply; throw to show an error in the banner. */
  decode: (reply: Response) => T;
  /** Draw decoded data: only ever called with data for the current revision or a newer one. */
  draw: (data: T, meta: { revision: number; params: P }) => void;
  /** Replies kept per revision, keyed by params, drawn again without asking (0 = no cache). */
  cache?: number;
  /** `supersede` (default): a revision change cancels the request in flight. `coalesce`: see above. */
  policy?: "supersede" | "coalesce";
  /** `false`: the data does not depend on `revision` (no refetch on a change, no revision check). */
  followRevision?: boolean;
  /** Progress messages of the request in flight. */
  onProgress?: (p: Progress) => void;
}

/** What a resource needs from its view: the client, the current revision, the banner, and a loading hook. */
export interface ResourceHost {
  readonly client: RequestClient;
  revision(): number;
  fail(source: string, e: unknown): void;
  clear(source: string): void;
  loadingChanged(): void;
}

interface InFlight {
  key: string;
  /** Params and `key()`, without the revision. */
  ident: string;
  sentAt: number;
  promise: Promise<void>;
}

export class Resource<P extends Params, T> {
  private readonly spec: ResourceSpec<P, T>;
  private readonly host: ResourceHost;
  private readonly cached = new Map<string, T>();
  private inFlight: InFlight | null = null;
  private again = false;
  private drawnRevision = Number.NEGATIVE_INFINITY;
  private drawnKey: string | null = null;
  private disposed = false;
  /** The last data drawn, and the revision it was computed for. */
  data: T | null = null;
  revision: number | null = null;

  constructor(host: ResourceHost, spec: ResourceSpec<P, T>) {
    this.host = host;
    this.spec = spec;
  }

  get method(): string {
    return this.spec.method;
  }

  /** A request of this resource is out. */
  get loading(): boolean {
    return this.inFlight !== null;
  }

  /**
   * What is drawn is what `params()` (and `key()`) want now, computed for the current revision or a
   * newer one: false before the first draw, while other params are asked for, after they failed,
   * and once `revision` moved past it.
   */
  get current(): boolean {
    if (this.drawnKey === null || this.revision === null || this.revision < this.currentRevision()) return false;
    try {
      const params = this.spec.params ? this.spec.params() : ({} as P);
      return params !== null && this.drawnKey === `${this.revision}|${this.ident(params)}`;
    } catch {
      return false;
    }
  }

  /**
   * Ask for what `params()` wants now, unless it is drawn, cached or in flight already (`force` asks the
   * kernel anyway).
   * The promise settles (never rejects) once the reply is drawn, dropped or failed.
   */
  fetch(opts: { force?: boolean } = {}): Promise<void> {
    if (this.disposed) return Promise.resolve();
    let params: P | null;
    try {
      params = this.spec.params ? this.spec.params() : ({} as P);
    } catch (e) {
      this.host.fail(this.spec.method, e);
      return Promise.resolve();
    }
    if (params === null) {
      this.cancel();
      this.drawnKey = null; // asking for the same thing again later draws it again
      return Promise.resolve();
    }
    const revision = this.currentRevision();
    const ident = this.ident(params);
    const key = `${revision}|${ident}`;
    if (!opts.force) {
      if (this.inFlight?.key === key) return this.inFlight.promise;
      if (this.drawnKey === key) {
        if (this.inFlight !== null) {
          // Back to what is drawn while something else was asked for: drop that, draw this again.
          this.cancel();
          this.show(this.data as T, revision, key, params);
        }
        return Promise.resolve();
      }
      const hit = this.cached.get(key);
      if (hit !== undefined && revision >= this.drawnRevision) {
        this.cancel();
        this.show(hit, revision, key, params);
        return Promise.resolve();
      }
    }
    if (this.inFlight !== null && this.spec.policy === "coalesce" && this.inFlight.ident === ident) {
      this.again = true;
      return this.inFlight.promise;
    }
    return this.send(params, ident, key, revision);
  }

  /**
   * `revision` moved: refetch under the policy. A `supersede` resource's new request replaces the one
   * in flight (the client cancels it); a `coalesce` one asks again once the one in flight lands.
   */
  revisionChanged(): void {
    if (this.spec.followRevision === false) return;
    const now = this.host.revision();
    for (const key of [...this.cached.keys()])
      if (Number(key.slice(0, key.indexOf("|"))) < now) this.cached.delete(key);
    void this.fetch();
  }

  /** Drop the request in flight (its reply will not be drawn). */
  cancel(): void {
    if (this.inFlight === null) return;
    this.inFlight = null;
    this.again = false;
    this.host.client.cancel(this.spec.method);
    this.host.loadingChanged();
  }

  dispose(): void {
    this.disposed = true;
    this.cancel();
    this.cached.clear();
  }

  private send(params: P, ident: string, key: string, sentAt: number): Promise<void> {
    const request = this.host.client.request(this.spec.method, params, {
      supersede: this.spec.method,
      onProgress: this.spec.onProgress,
    });
    const entry: InFlight = { key, ident, sentAt, promise: Promise.resolve() };
    entry.promise = request.then(
      (reply) => this.receive(entry, params, reply),
      (e) => this.settle(entry, () => this.host.fail(this.spec.method, e), isCancelled(e)),
    );
    this.inFlight = entry;
    this.host.loadingChanged();
    return entry.promise;
  }

  private receive(entry: InFlight, params: P, reply: Response): void {
    this.settle(entry, () => {
      const follows = this.spec.followRevision !== false;
      const revision = follows ? Number(reply.result?.revision) : 0;
      if (!Number.isFinite(revision)) {
        throw new Error(`${this.spec.method} reply has no revision: ${JSON.stringify(reply.result?.revision)}`);
      }
      if (revision < entry.sentAt || revision < this.drawnRevision) return; // for an old revision: never drawn
      const data = this.spec.decode(reply);
      const key = `${revision}|${entry.ident}`;
      if (this.spec.cache) {
        this.cached.set(key, data);
        if (this.cached.size > this.spec.cache) this.cached.delete(this.cached.keys().next().value!);
      }
      this.show(data, revision, key, params);
    });
  }

  /** End `entry` (if it is still the latest request), run `outcome`, then a coalesced refetch. */
  private settle(entry: InFlight, outcome: () => void, cancelled = false): void {
    if (this.inFlight !== entry) return; // superseded or cancelled: another request owns the state
    this.inFlight = null;
    const again = this.again;
    this.again = false;
    if (!cancelled) {
      try {
        outcome();
      } catch (e) {
        this.host.fail(this.spec.method, e);
      }
    }
    this.host.loadingChanged();
    if (again) void this.fetch();
  }

  /** Params and `key()`, without the revision: what makes two fetches the same. */
  private ident(params: P): string {
    const json = JSON.stringify(params);
    return this.spec.key ? `${json}|${JSON.stringify(this.spec.key())}` : json;
  }

  private currentRevision(): number {
    return this.spec.followRevision === false ? 0 : this.host.revision();
  }

  private show(data: T, revision: number, key: string, params: P): void {
    this.host.clear(this.spec.method);
    this.data = data;
    this.revision = revision;
    this.drawnRevision = Math.max(this.drawnRevision, revision);
    this.drawnKey = key;
    this.spec.draw(data, { revision, params });
  }
}
