import { afterEach, describe, expect, test, vi } from "vitest";
import { argMax, BarChart, type BarChartOptions, barAt, barDomain, moveBar } from "../src/lib/bar_chart";

afterEach(() => {
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

describe("bar maths", () => {
  test("barAt maps a pointer x to the bar whose column holds it", () => {
    const frame = { left: 20, right: 120, n: 10 };
    expect(barAt(frame, 20)).toBe(0);
    expect(barAt(frame, 29.9)).toBe(0);
    expect(barAt(frame, 30)).toBe(1);
    expect(barAt(frame, 119.9)).toBe(9);
    expect(barAt(frame, 120)).toBeNull();
    expect(barAt(frame, 19)).toBeNull();
    expect(barAt(frame, NaN)).toBeNull();
    expect(barAt(null, 50)).toBeNull();
    expect(barAt({ left: 0, right: 100, n: 0 }, 50)).toBeNull();
  });

  test("barDomain always holds 0 and skips non-finite values", () => {
    expect(barDomain([1, 3, 2])).toEqual([0, 3]);
    expect(barDomain([-1, 2, NaN, Infinity])).toEqual([-1, 2]);
    expect(barDomain([-2, -1])).toEqual([-2, 0]);
    expect(barDomain([])).toEqual([0, 1]);
    expect(barDomain([0, NaN])).toEqual([0, 1]);
  });

  test("moveBar steps and clamps; from nothing an arrow starts at the first bar", () => {
    expect(moveBar(3, "ArrowRight", 5)).toBe(4);
    expect(moveBar(4, "ArrowRight", 5)).toBe(4);
    expect(moveBar(0, "ArrowLeft", 5)).toBe(0);
    expect(moveBar(2, "ArrowLeft", 5)).toBe(1);
    expect(moveBar(null, "ArrowRight", 5)).toBe(0);
    expect(moveBar(null, "ArrowLeft", 5)).toBe(0);
    expect(moveBar(2, "Home", 5)).toBe(0);
    expect(moveBar(2, "End", 5)).toBe(4);
    expect(moveBar(2, "a", 5)).toBeNull();
    expect(moveBar(2, "ArrowRight", 0)).toBeNull();
    expect(moveBar(9, "ArrowLeft", 5)).toBe(4); // a stale cursor past the end is clamped
  });

  test("argMax finds the largest finite value", () => {
    expect(argMax([1, 5, NaN, 3])).toBe(1);
    expect(argMax([NaN, -2, -1])).toBe(2);
    expect(argMax([NaN])).toBe(-1);
    expect(argMax([])).toBe(-1);
  });
});

/** A recording stand-in for CanvasRenderingContext2D (happy-dom has no canvas). */
function recordingContext() {
  const calls: Array<{ name: string; args: any[]; fillStyle: unknown; strokeStyle: unknown }> = [];
  const state: Record<string | symbol, unknown> = {};
  const ctx = new Proxy(state, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (prop === "measureText") return (s: string) => ({ width: s.length * 6 });
      return (...args: any[]) =>
        calls.push({ name: String(prop), args, fillStyle: target.fillStyle, strokeStyle: target.strokeStyle });
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return { ctx, calls };
}

function mountChart(opts: Partial<BarChartOptions> = {}, width = 400) {
  const { ctx, calls } = recordingContext();
  vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(() => ctx as any);
  const chart = new BarChart({ title: "embedding", testid: "bars", ...opts });
  const plot = chart.element.querySelector<HTMLElement>(".miw-bar-chart-plot")!;
  Object.defineProperty(plot, "clientWidth", { configurable: true, get: () => width });
  document.body.append(chart.element);
  const canvas = chart.element.querySelector<HTMLCanvasElement>(
    `[data-testid=${chart.element.dataset.testid}-canvas]`,
  )!;
  vi.spyOn(canvas, "getBoundingClientRect").mockReturnValue({ left: 0, top: 0, width, height: 120 } as DOMRect);
  const readout = () =>
    chart.element.querySelector(`[data-testid=${chart.element.dataset.testid}-readout]`)!.textContent;
  const key = (k: string) => {
    const ev = new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true });
    canvas.dispatchEvent(ev);
    return ev;
  };
  return { chart, calls, canvas, readout, key };
}

/** The rects drawn in one fill of colour `colour`. */
const rectsIn = (calls: Array<{ name: string; args: any[]; fillStyle: unknown }>, colour: string) => {
  const out: any[][] = [];
  let pending: any[][] = [];
  for (const c of calls) {
    if (c.name === "beginPath") pending = [];
    else if (c.name === "rect") pending.push(c.args);
    else if (c.name === "fill" && c.fillStyle === colour) out.push(...pending);
  }
  return out;
};

describe("BarChart", () => {
  test("title, testids, focusable canvas; one bar per finite value, highlighted ones in the accent colour", () => {
    const { chart, calls, canvas, readout } = mountChart({ xOffset: 1, xLabel: "k" });
    expect(chart.element.dataset.testid).toBe("bars");
    expect(chart.element.querySelector(".miw-bar-chart-title")!.textContent).toBe("embedding");
    expect(canvas.tabIndex).toBe(0);
    expect(canvas.getAttribute("role")).toBe("slider");
    expect(readout()).toBe("no data yet");
    calls.length = 0;
    chart.setData(Float32Array.from([0.1, 0.5, NaN, 0.2, 0.9]));
    chart.setHighlight([4, 1]);
    expect(chart.element.dataset.count).toBe("5");
    expect(chart.element.dataset.highlight).toBe("1,4");
    expect(canvas.getAttribute("aria-valuemin")).toBe("1");
    expect(canvas.getAttribute("aria-valuemax")).toBe("5");
    // The last frame: 2 plain finite bars (0 and 3; 2 is NaN) and 2 accent bars.
    const last = calls.slice(calls.map((c) => c.name).lastIndexOf("clearRect"));
    expect(rectsIn(last, "rgba(0, 0, 0, 0.54)")).toHaveLength(2);
    expect(rectsIn(last, "#1976d2")).toHaveLength(2);
    for (const r of rectsIn(last, "#1976d2")) expect(r.every(Number.isFinite)).toBe(true);
    expect(readout()).toBe("largest k 5: 0.9 (key)");
    chart.setTheme("dark");
    const dark = calls.slice(calls.map((c) => c.name).lastIndexOf("clearRect"));
    expect(rectsIn(dark, "#64b5f6")).toHaveLength(2);
  });

  test("hover reads a bar without rebuilding DOM; leaving goes back to the selection", () => {
    const { chart, canvas, readout } = mountChart({ xOffset: 1, format: (v) => `${(v * 100).toFixed(0)}%` });
    chart.setData([0.1, 0.5, 0.2, 0.25]);
    chart.setSelected(2);
    expect(readout()).toBe("selected 3: 20%");
    const children = [...chart.element.querySelectorAll("*")];
    // Bars span [left margin, 392); the last quarter is bar 3.
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: 390 }));
    expect(readout()).toBe("4: 25%");
    expect(chart.element.dataset.hovered).toBe("3");
    expect([...chart.element.querySelectorAll("*")]).toEqual(children);
    canvas.dispatchEvent(new PointerEvent("pointerleave"));
    expect(readout()).toBe("selected 3: 20%");
    expect(chart.element.dataset.hovered).toBe("");
  });

  test("click selects the bar under the pointer through onSelect; setSelected outlines it", () => {
    const { chart, canvas, calls } = mountChart();
    const picked: number[] = [];
    chart.onSelect((i) => picked.push(i));
    chart.setData([1, 2, 3, 4]);
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 391 }));
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 1 })); // the y-label margin: no bar
    expect(picked).toEqual([3]);
    expect(chart.element.dataset.selected ?? "").toBe(""); // the owner decides
    calls.length = 0;
    chart.setSelected(3);
    expect(chart.element.dataset.selected).toBe("3");
    expect(canvas.getAttribute("aria-valuenow")).toBe("3");
    expect(calls.filter((c) => c.name === "strokeRect")).toHaveLength(1);
    chart.setSelected(null);
    expect(chart.element.dataset.selected).toBe("");
    expect(canvas.hasAttribute("aria-valuenow")).toBe(false);
  });

  test("keyboard: arrows and Home/End select the next bar, Enter the cursor's, Escape clears", () => {
    const { chart, canvas, key } = mountChart();
    const picked: number[] = [];
    let cleared = 0;
    chart.onSelect((i) => {
      picked.push(i);
      chart.setSelected(i); // as a view does after the trait round-trip
    });
    chart.onClear(() => cleared++);
    chart.setData([1, 2, 3]);
    canvas.focus();
    const ev = key("ArrowRight");
    expect(ev.defaultPrevented).toBe(true);
    key("ArrowRight");
    key("ArrowRight");
    key("ArrowRight");
    key("ArrowLeft");
    key("Home");
    key("End");
    key("Enter");
    expect(picked).toEqual([0, 1, 2, 2, 1, 0, 2, 2]);
    expect(key("a").defaultPrevented).toBe(false);
    key("Escape");
    expect(cleared).toBe(1);
  });

  test("Enter with nothing selected picks the first bar; no data picks nothing", () => {
    const { chart, key } = mountChart();
    const picked: number[] = [];
    chart.onSelect((i) => picked.push(i));
    key("Enter");
    key("ArrowRight");
    expect(picked).toEqual([]);
    chart.setData([5, 6]);
    key("Enter");
    expect(picked).toEqual([0]);
  });

  test("x labels: highlighted ones always, the rest only where they do not overlap", () => {
    const { chart, calls } = mountChart({ xOffset: 1 }, 300);
    chart.setData(Float32Array.from({ length: 56 }, (_, i) => i));
    calls.length = 0;
    chart.setHighlight([20, 19, 6]);
    // x labels are the texts drawn below the plot (y labels sit at its left, above the bottom).
    const below = calls.filter((c) => c.name === "fillText" && c.args[2] > 88);
    const labels = below.map((c) => c.args[0]);
    for (const k of ["21", "20", "7"]) expect(labels).toContain(k); // 20 and 21 are adjacent: two rows
    expect(new Set(below.map((c) => c.args[2])).size).toBe(2);
    for (const y of new Set(below.map((c) => c.args[2]))) {
      const xs = below.filter((c) => c.args[2] === y).map((c) => c.args[1] as number);
      xs.sort((a, b) => a - b);
      for (let i = 1; i < xs.length; i++) expect(xs[i] - xs[i - 1]).toBeGreaterThan(10); // none on top of another
    }
  });

  test("sizes the canvas for the device pixel ratio; hidden draws nothing; dispose stops listening", () => {
    vi.spyOn(window, "devicePixelRatio", "get").mockReturnValue(2);
    const { chart, canvas } = mountChart({ height: 100 }, 300);
    chart.setData([1, 2]);
    expect([canvas.width, canvas.height]).toEqual([600, 200]);
    expect(canvas.style.width).toBe("300px");

    const hidden = mountChart({ testid: "hid" }, 0);
    hidden.calls.length = 0;
    hidden.chart.setData([3, 4]);
    expect(hidden.calls).toHaveLength(0);

    const remove = vi.spyOn(canvas, "removeEventListener");
    chart.dispose();
    expect(remove).toHaveBeenCalledWith("keydown", expect.any(Function));
    expect(remove).toHaveBeenCalledWith("click", expect.any(Function));
  });
});
