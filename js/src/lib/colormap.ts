/**
 * Colour maps that follow the notebook theme. Value 0 of a sequential map blends with the
 * background, so causal zeros and weak attention recede; non-finite values get a loud colour
 * that appears in neither map, so NaN and inf can never pass for data.
 */

export type Theme = "light" | "dark";

export interface Colormap {
  /** 256 RGBA entries. */
  lut: Uint8ClampedArray;
  nan: [number, number, number];
}

type RGB = [number, number, number];

const NAN_COLOUR: RGB = [255, 0, 255];

/** Piecewise-linear interpolation of (position, colour) stops into a 256-entry table. */
function buildLut(stops: ReadonlyArray<[number, RGB]>): Uint8ClampedArray {
  const lut = new Uint8ClampedArray(256 * 4);
  let s = 0;
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    while (s < stops.length - 2 && t > stops[s + 1][0]) s++;
    const [t0, c0] = stops[s];
    const [t1, c1] = stops[s + 1];
    const u = t1 > t0 ? Math.min(1, Math.max(0, (t - t0) / (t1 - t0))) : 0;
    for (let k = 0; k < 3; k++) lut[i * 4 + k] = Math.round(c0[k] + (c1[k] - c0[k]) * u);
    lut[i * 4 + 3] = 255;
  }
  return lut;
}

/** 0 = background-like, 1 = strong: white -> deep blue (light), near-black -> bright warm (dark). */
export function sequentialColormap(theme: Theme): Colormap {
  const stops: Array<[number, RGB]> =
    theme === "light"
      ? [
          [0, [255, 255, 255]],
          [0.25, [198, 219, 239]],
          [0.5, [107, 174, 214]],
          [0.75, [33, 113, 181]],
          [1, [8, 48, 107]],
        ]
      : [
          [0, [20, 20, 20]],
          [0.25, [150, 45, 40]],
          [0.55, [225, 100, 35]],
          [0.8, [250, 175, 60]],
          [1, [255, 240, 170]],
        ];
  return { lut: buildLut(stops), nan: [...NAN_COLOUR] };
}

/** Centred at index 127.5 (value 0 when lo = -hi): blue -> background -> red. */
export function divergingColormap(theme: Theme): Colormap {
  const stops: Array<[number, RGB]> =
    theme === "light"
      ? [
          [0, [33, 102, 172]],
          [0.25, [146, 197, 222]],
          [0.5, [255, 255, 255]],
          [0.75, [244, 165, 130]],
          [1, [178, 24, 43]],
        ]
      : [
          [0, [90, 170, 255]],
          [0.25, [36, 78, 130]],
          [0.5, [20, 20, 20]],
          [0.75, [140, 52, 36]],
          [1, [255, 120, 80]],
        ];
  return { lut: buildLut(stops), nan: [...NAN_COLOUR] };
}

/**
 * The same map with non-finite cells drawn as a muted background, for views whose NaN cells mean
 * "no value by construction" (e.g. head pairs that cannot compose), not bad data.
 */
export function withEmptyCells(cmap: Colormap, theme: Theme): Colormap {
  return { lut: cmap.lut, nan: theme === "light" ? [238, 238, 238] : [45, 45, 45] };
}

/** Lookup index 0..255 for `v` on [lo, hi] (clamped), or -1 for NaN/inf. */
export function colorIndex(v: number, lo: number, hi: number): number {
  if (!Number.isFinite(v)) return -1;
  if (!(hi > lo)) return v < lo ? 0 : 255;
  const t = (v - lo) / (hi - lo);
  return t <= 0 ? 0 : t >= 1 ? 255 : Math.round(t * 255);
}

export function rgbAt(cmap: Colormap, index: number): RGB {
  if (index < 0) return cmap.nan;
  const o = index * 4;
  return [cmap.lut[o], cmap.lut[o + 1], cmap.lut[o + 2]];
}

export function cssColor(cmap: Colormap, v: number, lo: number, hi: number): string {
  const [r, g, b] = rgbAt(cmap, colorIndex(v, lo, hi));
  return `rgb(${r}, ${g}, ${b})`;
}

/** Relative luminance (sRGB approximation, 0..1), used to pick a readable text colour. */
export function luminance([r, g, b]: RGB): number {
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}

/** Parse `rgb()`/`rgba()` from getComputedStyle; null when transparent or unparsable. */
export function parseOpaqueColor(css: string): RGB | null {
  const m = /^rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:[,\s/]+([\d.]+%?))?\s*\)$/.exec(css.trim());
  if (m === null) return null;
  const alpha = m[4] === undefined ? 1 : m[4].endsWith("%") ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
  if (!(alpha > 0.5)) return null;
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/**
 * JupyterLab's `data-jp-theme-light` on body wins; otherwise the background of the nearest
 * opaque ancestor (VS Code, marimo, plain pages); otherwise the OS preference.
 */
export function detectTheme(el: Element): Theme {
  const doc = el.ownerDocument ?? document;
  const flag = doc.body?.getAttribute("data-jp-theme-light");
  if (flag === "true") return "light";
  if (flag === "false") return "dark";
  const view = doc.defaultView;
  if (view !== null) {
    for (let node: Element | null = el; node !== null; node = node.parentElement) {
      const rgb = parseOpaqueColor(view.getComputedStyle(node).backgroundColor || "");
      if (rgb !== null) return luminance(rgb) < 0.5 ? "dark" : "light";
    }
    if (typeof view.matchMedia === "function" && view.matchMedia("(prefers-color-scheme: dark)").matches) return "dark";
  }
  return "light";
}

/** Call `cb` whenever the detected theme changes; returns the unsubscribe function. */
export function watchTheme(el: Element, cb: (theme: Theme) => void): () => void {
  const doc = el.ownerDocument ?? document;
  const view = doc.defaultView;
  let current = detectTheme(el);
  const check = () => {
    const next = detectTheme(el);
    if (next !== current) {
      current = next;
      cb(next);
    }
  };
  const observer = typeof MutationObserver === "function" ? new MutationObserver(check) : null;
  for (const target of [doc.body, doc.documentElement]) {
    if (target)
      observer?.observe(target, { attributes: true, attributeFilter: ["data-jp-theme-light", "class", "style"] });
  }
  const media = view && typeof view.matchMedia === "function" ? view.matchMedia("(prefers-color-scheme: dark)") : null;
  media?.addEventListener?.("change", check);
  return () => {
    observer?.disconnect();
    media?.removeEventListener?.("change", check);
  };
}

/**
 * Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), ordered so the
 * first few are the most distinct. Each keeps a 3:1 contrast with its theme's background: on light
 * backgrounds yellow and sky blue are left out and orange is darkened; the dark theme uses the
 * lighter members.
 */
const CATEGORICAL: Record<Theme, readonly string[]> = {
  light: ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#B07800", "#000000", "#777777"],
  dark: ["#56B4E9", "#E69F00", "#2BC49A", "#E69ACB", "#F0E442", "#FF7B3A", "#FFFFFF"],
};

/** Colour of series/category `index` (wraps around the palette), readable on the theme's background. */
export function categoricalColor(index: number, theme: Theme): string {
  const palette = CATEGORICAL[theme];
  const i = Math.trunc(index) % palette.length;
  return palette[i < 0 ? i + palette.length : i] ?? palette[0];
}

/** A colour scale a view colours by (Python: `mi_widgets/transport/scale.py`, `ColorScale.trait()`). */
export interface ColorScale {
  lo: number;
  hi: number;
  /** `#rrggbb`, or "" for the views' own maps. */
  negative: string;
  positive: string;
}

export const DEFAULT_SCALE: ColorScale = { lo: 0, hi: 1, negative: "", positive: "" };

/** A `color_scale` trait checked: finite lo < hi and `#rrggbb` colours, else the 0..1 default. */
export function parseScale(raw: unknown): ColorScale {
  if (raw === null || typeof raw !== "object") return DEFAULT_SCALE;
  const r = raw as Partial<Record<keyof ColorScale, unknown>>;
  const lo = typeof r.lo === "number" && Number.isFinite(r.lo) ? r.lo : 0;
  const hi = typeof r.hi === "number" && Number.isFinite(r.hi) ? r.hi : 1;
  const colour = (v: unknown) => (typeof v === "string" && /^#[0-9a-fA-F]{6}$/.test(v) ? v.toLowerCase() : "");
  if (!(hi > lo)) return DEFAULT_SCALE;
  return { lo, hi, negative: colour(r.negative), positive: colour(r.positive) };
}

function hexRgb(hex: string): RGB {
  return [parseInt(hex.slice(1, 3), 16), parseInt(hex.slice(3, 5), 16), parseInt(hex.slice(5, 7), 16)];
}

/**
 * The zero-anchored map over [lo, hi] that CircuitsVis colours by: 0 is the background, `hi` full
 * positive, `lo` full negative (beyond an end: that end's colour). Entry i is the colour of
 * v = lo + i/255 (hi - lo), so `colorIndex(v, lo, hi)` looks it up. With no colours given, the
 * theme's own maps sampled from their zero point (sequential when lo >= 0, else diverging); with
 * lo = 0, hi = 1 that is exactly `sequentialColormap`. Python twin: `scale.anchored_lut`.
 */
export function anchoredColormap(theme: Theme, scale: ColorScale): Colormap {
  const { lo, hi, negative, positive } = scale;
  const seq = sequentialColormap(theme).lut;
  const div = divergingColormap(theme).lut;
  const at = (lut: Uint8ClampedArray, i: number): RGB => [lut[i * 4], lut[i * 4 + 1], lut[i * 4 + 2]];
  const custom = negative !== "" || positive !== "";
  const bg: RGB = theme === "light" ? [255, 255, 255] : [20, 20, 20];
  const pos = positive !== "" ? hexRgb(positive) : lo >= 0 ? at(seq, 255) : at(div, 255);
  const neg = negative !== "" ? hexRgb(negative) : at(div, 0);
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const v = lo + (i / 255) * (hi - lo);
    const f = v >= 0 ? (hi > 0 ? Math.min(1, Math.max(0, v / hi)) : 0) : lo < 0 ? Math.min(1, Math.max(0, v / lo)) : 0;
    let c: RGB;
    if (custom) {
      const end = v >= 0 ? pos : neg;
      c = [0, 1, 2].map((k) => Math.round(bg[k] + (end[k] - bg[k]) * f)) as RGB;
    } else if (lo >= 0) c = at(seq, Math.round(f * 255));
    else c = at(div, Math.round((v >= 0 ? 0.5 + 0.5 * f : 0.5 - 0.5 * f) * 255));
    lut.set([c[0], c[1], c[2], 255], i * 4);
  }
  return { lut, nan: [...NAN_COLOUR] };
}
