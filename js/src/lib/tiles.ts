/**
 * Level-of-detail tiles of a big matrix, fetched on demand (AttentionView past `EXACT_MAX_SEQ` tokens):
 * how many levels a matrix has, and an LRU cache of decoded tiles.
 *
 * Level `l` is the matrix max-pooled by `2 ** l` (level 0: full resolution), cut into `tile` x `tile`
 * blocks; the top level is the first whose one tile holds the whole matrix (twin: `tile_levels` in
 * `mi_widgets/widgets/attention.py`). Drawing the levels is `CanvasHeatmap.setTiled`'s job.
 */

/** Levels of a `seq` x `seq` matrix cut into `tile`-cell tiles: 0 up to the first with one tile. */
export function tileLevels(seq: number, tile: number): number {
  let levels = 1;
  while (Math.ceil(seq / 2 ** (levels - 1)) > tile) levels++;
  return levels;
}

/** Tiles per side at `level`. */
export function tilesPerSide(seq: number, tile: number, level: number): number {
  return Math.ceil(Math.ceil(seq / 2 ** level) / tile);
}

/** A map that keeps the `capacity` entries used last (get and set both count as use). */
export class LruCache<T> {
  private readonly entries = new Map<string, T>();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string): T | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  set(key: string, value: T): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value as string);
  }

  /** Drop every entry whose key `keep` refuses (e.g. tiles of an older revision). */
  prune(keep: (key: string) => boolean): void {
    for (const key of [...this.entries.keys()]) if (!keep(key)) this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
