import { afterEach, describe, expect, test } from "vitest";
import {
  colorIndex,
  cssColor,
  detectTheme,
  divergingColormap,
  parseOpaqueColor,
  rgbAt,
  sequentialColormap,
  watchTheme,
  withEmptyCells,
} from "../src/lib/colormap";
import { fixture, num } from "./helpers";

afterEach(() => {
  document.body.removeAttribute("data-jp-theme-light");
  document.body.replaceChildren();
});

describe("colormaps", () => {
  test("sequential endpoints blend with the background and end strong", () => {
    const light = sequentialColormap("light");
    expect(rgbAt(light, 0)).toEqual([255, 255, 255]);
    expect(rgbAt(light, 255)).toEqual([8, 48, 107]);
    const dark = sequentialColormap("dark");
    expect(Math.max(...rgbAt(dark, 0))).toBeLessThan(40);
    const [r, g, b] = rgbAt(dark, 255);
    expect(r).toBeGreaterThan(200);
    expect(r).toBeGreaterThan(b);
    expect(g).toBeGreaterThan(150);
    expect(light.lut).toHaveLength(1024);
    expect(light.lut[3]).toBe(255);
  });

  test("diverging maps are centred on the background", () => {
    const light = divergingColormap("light");
    const mid = rgbAt(light, colorIndex(0, -1, 1));
    expect(Math.min(...mid)).toBeGreaterThan(240);
    expect(rgbAt(light, 0)[2]).toBeGreaterThan(rgbAt(light, 0)[0]); // negative = blue
    expect(rgbAt(light, 255)[0]).toBeGreaterThan(rgbAt(light, 255)[2]); // positive = red
    expect(Math.max(...rgbAt(divergingColormap("dark"), 128))).toBeLessThan(40);
  });

  test("colorIndex clamps, and flags non-finite values", () => {
    expect(colorIndex(0, 0, 1)).toBe(0);
    expect(colorIndex(1, 0, 1)).toBe(255);
    expect(colorIndex(0.5, 0, 1)).toBe(128);
    expect(colorIndex(-3, 0, 1)).toBe(0);
    expect(colorIndex(7, 0, 1)).toBe(255);
    expect(colorIndex(NaN, 0, 1)).toBe(-1);
    expect(colorIndex(Infinity, 0, 1)).toBe(-1);
    expect(colorIndex(-Infinity, 0, 1)).toBe(-1);
    expect(colorIndex(2, 2, 2)).toBe(255);
  });

  test("NaN gets the loud colour in every map", () => {
    for (const cmap of [sequentialColormap("light"), sequentialColormap("dark"), divergingColormap("light")]) {
      expect(cssColor(cmap, NaN, 0, 1)).toBe("rgb(255, 0, 255)");
    }
    expect(cssColor(sequentialColormap("light"), 0, 0, 1)).toBe("rgb(255, 255, 255)");
  });

  test("parseOpaqueColor ignores transparent colours", () => {
    expect(parseOpaqueColor("rgb(1, 2, 3)")).toEqual([1, 2, 3]);
    expect(parseOpaqueColor("rgba(1, 2, 3, 0)")).toBeNull();
    expect(parseOpaqueColor("rgba(0, 0, 0, 0.9)")).toEqual([0, 0, 0]);
    expect(parseOpaqueColor("transparent")).toBeNull();
  });
});

describe("theme detection", () => {
  test("JupyterLab's body attribute wins", () => {
    const el = document.createElement("div");
    document.body.append(el);
    document.body.setAttribute("data-jp-theme-light", "false");
    expect(detectTheme(el)).toBe("dark");
    document.body.setAttribute("data-jp-theme-light", "true");
    expect(detectTheme(el)).toBe("light");
  });

  test("otherwise the nearest opaque background decides", () => {
    const outer = document.createElement("div");
    outer.style.backgroundColor = "rgb(20, 20, 20)";
    const inner = document.createElement("div");
    outer.append(inner);
    document.body.append(outer);
    expect(detectTheme(inner)).toBe("dark");
    outer.style.backgroundColor = "rgb(250, 250, 250)";
    expect(detectTheme(inner)).toBe("light");
  });

  test("watchTheme reports changes until unsubscribed", async () => {
    const el = document.createElement("div");
    document.body.append(el);
    document.body.setAttribute("data-jp-theme-light", "true");
    const seen: string[] = [];
    const stop = watchTheme(el, (t) => seen.push(t));
    document.body.setAttribute("data-jp-theme-light", "false");
    await new Promise((r) => setTimeout(r, 0));
    expect(seen).toEqual(["dark"]);
    stop();
    document.body.setAttribute("data-jp-theme-light", "true");
    await new Promise((r) => setTimeout(r, 0));
    expect(seen).toEqual(["dark"]);
  });
});

describe("withEmptyCells", () => {
  test("keeps the colours and swaps the loud NaN colour for a muted background per theme", () => {
    for (const theme of ["light", "dark"] as const) {
      const base = divergingColormap(theme);
      const empty = withEmptyCells(base, theme);
      expect(empty.lut).toBe(base.lut);
      expect(empty.nan).not.toEqual(base.nan);
      expect(Math.max(...empty.nan) - Math.min(...empty.nan)).toBe(0); // grey
    }
    expect(withEmptyCells(divergingColormap("light"), "light").nan[0]).toBeGreaterThan(200);
    expect(withEmptyCells(divergingColormap("dark"), "dark").nan[0]).toBeLessThan(80);
  });
});

interface ColormapVectors {
  luts: Record<string, number[]>;
  index: Array<{ lo: number; hi: number; values: Array<number | string>; index: number[] }>;
}

describe("the static pictures (Python) draw with the same colour maps", () => {
  const vectors = fixture<ColormapVectors>("colormap_vectors.json");

  test("every map's 256 colours", () => {
    const maps = { sequential: sequentialColormap, diverging: divergingColormap };
    for (const kind of ["sequential", "diverging"] as const) {
      for (const theme of ["light", "dark"] as const) {
        const lut = maps[kind](theme).lut;
        const rgb = Array.from({ length: 256 * 3 }, (_, i) => lut[Math.floor(i / 3) * 4 + (i % 3)]);
        expect(rgb).toEqual(vectors.luts[`${kind}.${theme}`]);
      }
    }
  });

  test("colour indices, including NaN, infinities and an empty range", () => {
    for (const c of vectors.index) {
      expect(c.values.map((v) => colorIndex(num(v), c.lo, c.hi))).toEqual(c.index);
    }
  });
});
