import { afterEach, describe, expect, test, vi } from "vitest";
import { categoricalColor } from "../src/lib/colormap";
import {
  dataExtent,
  formatTick,
  formatValue,
  LineChart,
  logTicks,
  nearestIndex,
  niceTicks,
  yDomain,
} from "../src/lib/line_chart";

afterEach(() => {
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

describe("ticks", () => {
  test("niceTicks steps by 1, 2 or 5 times a power of ten, inside the range", () => {
    expect(niceTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0, 1000, 4)).toEqual([0, 500, 1000]);
    expect(niceTicks(-1, 1, 4)).toEqual([-1, -0.5, 0, 0.5, 1]);
    expect(niceTicks(0.1, 0.35, 5)).toEqual([0.1, 0.15, 0.2, 0.25, 0.3, 0.35]); // no float noise
    expect(niceTicks(0.013, 0.091, 4)).toEqual([0.02, 0.04, 0.06, 0.08]);
    expect(niceTicks(1, 0, 2)).toEqual([0, 0.5, 1]);
    expect(niceTicks(3, 3, 4)).toEqual([3]);
    expect(niceTicks(NaN, 1, 4)).toEqual([]);
    expect(niceTicks(0, Infinity, 4)).toEqual([]);
    expect(niceTicks(0, 1, 0)).toEqual([]);
  });

  test("logTicks are the powers of ten inside the range, or 1-2-5 multiples over a short range", () => {
    expect(logTicks(0.003, 20)).toEqual([0.01, 0.1, 1, 10]);
    expect(logTicks(1, 1000)).toEqual([1, 10, 100, 1000]);
    expect(logTicks(1e-7, 1e-5)).toEqual([1e-7, 1e-6, 1e-5]);
    expect(logTicks(2, 5)).toEqual([2, 5]);
    expect(logTicks(0.028, 0.6)).toEqual([0.05, 0.1, 0.2, 0.5]);
    expect(logTicks(3.1, 4.9)).toEqual([4]);
    expect(logTicks(3.1, 3.2)).toEqual([]);
    expect(logTicks(0, 10)).toEqual([]);
    expect(logTicks(-1, 10)).toEqual([]);
    expect(logTicks(10, 1)).toEqual([]);
    expect(logTicks(1, Infinity)).toEqual([]);
  });

  test("formatValue and formatTick are short and exact enough to read", () => {
    expect(formatValue(0.0312345)).toBe("0.0312");
    expect(formatValue(21.43)).toBe("21.4");
    expect(formatValue(0.93)).toBe("0.93");
    expect(formatValue(3)).toBe("3");
    expect(formatValue(1200)).toBe("1200");
    expect(formatValue(1.2345e-5)).toBe("1.23e-5");
    expect(formatValue(NaN)).toBe("NaN");
    expect(formatValue(-Infinity)).toBe("-inf");
    expect(formatTick(0.2, 0.2)).toBe("0.2");
    expect(formatTick(0.25, 0.05)).toBe("0.25");
    expect(formatTick(200, 100)).toBe("200");
    expect(formatTick(20000, 5000)).toBe("20k");
    expect(formatTick(0.001, 0.001)).toBe("0.001");
    expect(formatTick(1e-5, 1e-5)).toBe("1e-5");
    expect(formatTick(0, 0.1)).toBe("0");
  });
});

describe("data maths", () => {
  test("nearestIndex finds the closest x in ascending data", () => {
    const xs = [0, 10, 20, 30];
    expect(nearestIndex(xs, -5)).toBe(0);
    expect(nearestIndex(xs, 14)).toBe(1);
    expect(nearestIndex(xs, 16)).toBe(2);
    expect(nearestIndex(xs, 99)).toBe(3);
    expect(nearestIndex([], 1)).toBe(-1);
  });

  test("dataExtent skips non-finite points, and points <= 0 on a log scale", () => {
    const s = [{ label: "a", x: [0, 1, 2, 3, 4], y: [NaN, -1, 0, Infinity, 5] }];
    expect(dataExtent(s, false)).toEqual({ xlo: 1, xhi: 4, ylo: -1, yhi: 5, points: 3 });
    expect(dataExtent(s, true)).toEqual({ xlo: 4, xhi: 4, ylo: 5, yhi: 5, points: 1 });
    expect(dataExtent([{ label: "b", x: [0, 1], y: [NaN, NaN] }], false)).toBeNull();
    expect(dataExtent([], false)).toBeNull();
  });

  test("yDomain keeps a valid fixed range and pads the data otherwise", () => {
    expect(yDomain(0.2, 0.5, false, [0, 1])).toEqual([0, 1]);
    expect(yDomain(0.2, 0.5, true, [0, 1])).not.toEqual([0, 1]); // 0 is not on a log scale
    const [lo, hi] = yDomain(0, 10, false, null);
    expect(lo).toBe(0); // non-negative data never gets a negative axis
    expect(hi).toBeCloseTo(10.5);
    expect(yDomain(-10, 10, false, null)).toEqual([-11, 11]);
    expect(yDomain(4, 4, false, null)).toEqual([3.6, 4.4]);
    const [llo, lhi] = yDomain(0.01, 1, true, null);
    expect(llo).toBeLessThan(0.01);
    expect(lhi).toBeGreaterThan(1);
    expect(yDomain(NaN, NaN, false, null)).toEqual([0, 1]);
  });
});

describe("categoricalColor", () => {
  const contrast = (hex: string, bg: [number, number, number]) => {
    const lin = (c: number) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    const lum = (rgb: number[]) => 0.2126 * lin(rgb[0] / 255) + 0.7152 * lin(rgb[1] / 255) + 0.0722 * lin(rgb[2] / 255);
    const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const [a, b] = [lum(rgb), lum(bg)].sort((p, q) => q - p);
    return (a + 0.05) / (b + 0.05);
  };

  test("distinct colours that wrap around and read on their background", () => {
    for (const [theme, bg] of [
      ["light", [255, 255, 255]],
      ["dark", [30, 30, 30]],
    ] as const) {
      const first = Array.from({ length: 7 }, (_, i) => categoricalColor(i, theme));
      expect(new Set(first).size).toBe(7);
      for (const c of first) expect(contrast(c, [...bg])).toBeGreaterThanOrEqual(3);
      expect(categoricalColor(7, theme)).toBe(first[0]);
      expect(categoricalColor(-1, theme)).toBe(first[6]);
    }
    expect(categoricalColor(0, "light")).not.toBe(categoricalColor(0, "dark"));
  });
});

/** A recording stand-in for CanvasRenderingContext2D (happy-dom has no canvas). */
function recordingContext() {
  const calls: Array<{ name: string; args: any[]; strokeStyle: unknown }> = [];
  const state: Record<string | symbol, unknown> = {};
  const ctx = new Proxy(state, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (prop === "measureText") return (s: string) => ({ width: s.length * 6 });
      return (...args: any[]) => calls.push({ name: String(prop), args, strokeStyle: target.strokeStyle });
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return { ctx, calls };
}

/** A chart on the page whose plot is `width` px wide, drawing into a recording context. */
function mountChart(opts: ConstructorParameters<typeof LineChart>[0], width = 400) {
  const { ctx, calls } = recordingContext();
  vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(() => ctx as any);
  const chart = new LineChart(opts);
  const plot = chart.element.querySelector<HTMLElement>(".miw-line-chart-plot")!;
  Object.defineProperty(plot, "clientWidth", { configurable: true, get: () => width });
  document.body.append(chart.element);
  const readout = () => chart.element.querySelector(`[data-testid=${opts.testid}-readout]`)!.textContent;
  const legend = chart.element.querySelector<HTMLElement>(".miw-line-chart-legend")!;
  return { chart, calls, readout, legend };
}

const count = (calls: Array<{ name: string }>, name: string) => calls.filter((c) => c.name === name).length;

describe("LineChart", () => {
  test("draws one path per series, skipping NaN and inf as gaps", () => {
    const { chart, calls, readout } = mountChart({ title: "loss", testid: "c" });
    expect(chart.element.dataset.testid).toBe("c");
    expect(chart.element.querySelector(".miw-line-chart-title")!.textContent).toBe("loss");
    const x = Float64Array.from({ length: 1000 }, (_, i) => i);
    const y = Float32Array.from(x, (i) => 1 / (i + 1));
    y[500] = NaN;
    y[501] = Infinity;
    calls.length = 0;
    chart.setSeries([{ label: "loss", x, y }]);
    expect(chart.element.dataset.points).toBe("998");
    // two runs: 0..499 and 502..999
    const line = calls.filter((c) => c.strokeStyle === categoricalColor(0, "light"));
    expect(count(line, "moveTo")).toBe(2);
    expect(count(line, "lineTo")).toBe(996);
    for (const c of line.filter((c) => c.name === "lineTo")) expect(c.args.every(Number.isFinite)).toBe(true);
    expect(readout()).toBe("step 999 · loss 0.001");
  });

  test("empty, all-NaN and log-scale non-positive input draw nothing and say so", () => {
    const { chart, calls, readout } = mountChart({ title: "mse", logY: true, testid: "m" });
    chart.setSeries([]);
    expect(chart.element.dataset.points).toBe("0");
    expect(readout()).toBe("no data yet");
    chart.setSeries([{ label: "mse", x: [0, 1, 2], y: [NaN, 0, -1] }]);
    expect(chart.element.dataset.points).toBe("0");
    expect(readout()).toBe("step 2 · mse -1"); // the latest finite value, even where a log axis cannot show it
    calls.length = 0;
    chart.setSeries([{ label: "mse", x: [0, 1, 2], y: [0.1, -1, 0.01] }]);
    expect(chart.element.dataset.points).toBe("2");
    // two isolated points (split by the non-positive one) become dots
    expect(count(calls, "rect")).toBeGreaterThanOrEqual(2);
    expect(readout()).toBe("step 2 · mse 0.01");
    expect(Number(chart.element.dataset.yLo)).toBeGreaterThan(0);
  });

  test("a fixed y range holds until the data or setYRange says otherwise", () => {
    const { chart } = mountChart({ title: "fve", yRange: [0, 1], testid: "f" });
    chart.setSeries([{ label: "fve", x: [0, 1], y: [0.4, 0.6] }]);
    expect([chart.element.dataset.yLo, chart.element.dataset.yHi]).toEqual(["0", "1"]);
    chart.setYRange(null);
    expect(Number(chart.element.dataset.yLo)).toBeGreaterThan(0.3);
  });

  test("legend only for several series; readout lists each series' latest value", () => {
    const { chart, readout, legend } = mountChart({ title: "curves", testid: "r" });
    chart.setSeries([{ label: "a", x: [0, 1], y: [1, 2] }]);
    expect(legend.hidden).toBe(true);
    const items = () => legend.querySelectorAll(".miw-line-chart-legend-item");
    chart.setSeries([
      { label: "a", x: [0, 1, 2], y: [1, 2, 3] },
      { label: "b", x: [0, 1, 2], y: [5, 6, NaN] },
    ]);
    expect(legend.hidden).toBe(false);
    expect([...items()].map((n) => n.textContent)).toEqual(["a", "b"]);
    const first = items()[0];
    chart.setSeries([
      { label: "a", x: [0, 1, 2, 3], y: [1, 2, 3, 4] },
      { label: "b", x: [0, 1, 2, 3], y: [5, 6, 7, 8] },
    ]);
    expect(items()[0]).toBe(first); // same labels: no DOM rebuild
    expect(readout()).toBe("step 3 · a 4 · b 8");
    chart.setTheme("dark");
    expect((items()[1].firstChild as HTMLElement).style.background).not.toBe("");
  });

  test("hover reads the nearest x of each series; leaving goes back to the latest", () => {
    const { chart, readout } = mountChart({ title: "h", testid: "h" }, 400);
    chart.setSeries([
      { label: "a", x: [0, 10, 20, 30], y: [1, 2, 3, 4] },
      { label: "b", x: [0, 10, 20, 30], y: [0.5, 0.25, 0.125, 0.0625] },
    ]);
    const canvas = chart.element.querySelector("canvas")!;
    vi.spyOn(canvas, "getBoundingClientRect").mockReturnValue({ left: 0, top: 0, width: 400, height: 140 } as DOMRect);
    // The plot spans [left margin, 390]; hovering near its left edge picks x = 0.
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: 40 }));
    expect(readout()).toBe("step 0 · a 1 · b 0.5");
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: 389 }));
    expect(readout()).toBe("step 30 · a 4 · b 0.0625");
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: 240 }));
    expect(readout()).toBe("step 20 · a 3 · b 0.125");
    canvas.dispatchEvent(new PointerEvent("pointerleave"));
    expect(readout()).toBe("step 30 · a 4 · b 0.0625");
  });

  test("sizes the canvas for the device pixel ratio", () => {
    vi.spyOn(window, "devicePixelRatio", "get").mockReturnValue(2);
    const { chart } = mountChart({ title: "d", height: 100, testid: "d" }, 300);
    chart.setSeries([{ label: "d", x: [0, 1], y: [0, 1] }]);
    const canvas = chart.element.querySelector("canvas")!;
    expect([canvas.width, canvas.height]).toEqual([600, 200]);
    expect(canvas.style.width).toBe("300px");
  });

  test("hidden (zero width): no drawing, readout still current; dispose stops listening", () => {
    const { chart, calls, readout } = mountChart({ title: "z", testid: "z" }, 0);
    calls.length = 0;
    chart.setSeries([{ label: "z", x: [0, 1], y: [3, 4] }]);
    expect(calls).toHaveLength(0);
    expect(readout()).toBe("step 1 · z 4");
    const remove = vi.spyOn(chart.element.querySelector("canvas")!, "removeEventListener");
    chart.dispose();
    expect(remove).toHaveBeenCalledWith("pointermove", expect.any(Function));
    expect(remove).toHaveBeenCalledWith("pointerleave", expect.any(Function));
    chart.setSeries([{ label: "z", x: [0], y: [9] }]);
    expect(readout()).toBe("step 1 · z 4"); // disposed: no more drawing
  });
});

describe("LineChart bands and markers", () => {
  /** A chart over x in [0, 100] with one series. */
  function mountWithData() {
    const m = mountChart({ title: "loss", testid: "b" }, 400);
    m.chart.setSeries([{ label: "loss", x: [0, 25, 50, 75, 100], y: [5, 4, 3, 2, 1] }]);
    return m;
  }
  const labels = (chart: LineChart, cls: string) => [
    ...chart.element.querySelectorAll<HTMLElement>(`.miw-line-chart-${cls}-label`),
  ];

  test("none by default: no labels, no data attributes, no fills or dashes", () => {
    const { chart, calls } = mountWithData();
    expect(chart.element.dataset.bands).toBeUndefined();
    expect(chart.element.dataset.markers).toBeUndefined();
    expect(labels(chart, "band")).toHaveLength(0);
    expect(count(calls, "fillRect")).toBe(0);
    expect(count(calls, "setLineDash")).toBe(0);
  });

  test("bands are fills behind the lines, clipped to the plot, labelled in the DOM", () => {
    const { chart, calls } = mountWithData();
    calls.length = 0;
    chart.setBands([
      { from: 0, to: 50, label: "memorisation" },
      { from: 50, to: null, label: "cleanup" },
    ]);
    expect(chart.element.dataset.bands).toBe("memorisation|cleanup");
    const fills = calls.filter((c) => c.name === "fillRect");
    expect(fills).toHaveLength(2);
    const [a, b] = fills.map((c) => c.args as number[]);
    const left = a[0];
    expect(left).toBeGreaterThan(0);
    expect(a[0] + a[2]).toBeCloseTo(b[0]); // the second starts where the first ends
    expect(b[0] - left).toBeCloseTo((390 - left) / 2); // at x = 50 of [0, 100]
    expect(b[0] + b[2]).toBeCloseTo(390); // to: null runs to the right edge
    // Fills come before the series' line.
    const firstLine = calls.findIndex((c) => c.name === "stroke" && c.strokeStyle === categoricalColor(0, "light"));
    expect(calls.indexOf(fills[1])).toBeLessThan(firstLine);
    const spans = labels(chart, "band");
    expect(spans.map((s) => s.textContent)).toEqual(["memorisation", "cleanup"]);
    expect(spans.every((s) => !s.hidden)).toBe(true);
    expect(spans[1].style.left).toBe(`${b[0] + 2}px`);

    // The same bands again: nothing redrawn, the same spans.
    calls.length = 0;
    chart.setBands([
      { from: 0, to: 50, label: "memorisation" },
      { from: 50, to: null, label: "cleanup" },
    ]);
    expect(calls).toHaveLength(0);
    expect(labels(chart, "band")[0]).toBe(spans[0]);

    // Fewer bands, one off the plot: the spare label hides, the off-plot one too.
    calls.length = 0;
    chart.setBands([{ from: 200, to: 300, label: "later" }]);
    expect(count(calls, "fillRect")).toBe(0);
    expect(labels(chart, "band")).toHaveLength(2); // reused, not rebuilt
    expect(labels(chart, "band").map((s) => [s.textContent, s.hidden])).toEqual([
      ["later", true],
      ["", true],
    ]);
    chart.setBands([]);
    expect(chart.element.dataset.bands).toBe("");
  });

  test("markers are dashed accent lines at their x, with optional DOM labels", () => {
    const { chart, calls } = mountWithData();
    calls.length = 0;
    chart.setMarkers([{ x: 25, label: "step 25" }, { x: 75 }]);
    expect(chart.element.dataset.markers).toBe("25,75");
    expect(calls.find((c) => c.name === "setLineDash" && (c.args[0] as number[]).length > 0)).toBeDefined();
    const moves = calls.filter((c) => c.name === "moveTo");
    const axis = calls.find((c) => c.name === "rect")!.args[0] as number; // the clip's left edge
    const xs = moves.map((c) => c.args[0] as number);
    const at = (x: number) => Math.round(axis + (x / 100) * (390 - axis)) + 0.5;
    expect(xs).toContain(at(25));
    expect(xs).toContain(at(75));
    const stroke = calls.filter((c) => c.name === "stroke").at(-1)!;
    expect(stroke.strokeStyle).toBe("#1976d2"); // the accent (fallback: no JupyterLab CSS here)
    const spans = labels(chart, "marker");
    expect(spans.map((s) => [s.textContent, s.hidden])).toEqual([
      ["step 25", false],
      ["", true],
    ]);
    chart.setMarkers([{ x: 500, label: "beyond" }]); // off the plot: no label
    expect(labels(chart, "marker")[0].hidden).toBe(true);
    chart.setMarkers([]);
    expect(chart.element.dataset.markers).toBe("");
    expect(labels(chart, "marker").every((s) => s.hidden)).toBe(true);
  });

  test("labels keep their text while the chart is hidden", () => {
    const { chart, calls } = mountChart({ title: "h", testid: "hb" }, 0);
    chart.setSeries([{ label: "a", x: [0, 1], y: [1, 2] }]);
    chart.setBands([{ from: 0, to: null, label: "memorisation" }]);
    chart.setMarkers([{ x: 1, label: "now" }]);
    expect(calls).toHaveLength(0);
    expect(labels(chart, "band")[0].textContent).toBe("memorisation");
    expect(labels(chart, "marker")[0].textContent).toBe("now");
  });
});
