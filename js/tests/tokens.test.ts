import { afterEach, describe, expect, test, vi } from "vitest";
import { sequentialColormap } from "../src/lib/colormap";
import { TOKEN_CHARS } from "../src/lib/text";
import { displayToken, TOKEN_CHUNK, TokenStrip } from "../src/lib/tokens";

const cmap = sequentialColormap("light");

function mount(labels: string[]): TokenStrip {
  const strip = new TokenStrip();
  document.body.append(strip.element);
  strip.setTokens(labels);
  return strip;
}

function spans(strip: TokenStrip): HTMLElement[] {
  return [...strip.element.querySelectorAll<HTMLElement>("[data-testid=token]")];
}

afterEach(() => {
  document.body.replaceChildren();
  vi.restoreAllMocks();
});

describe("TokenStrip escaping", () => {
  const malicious = [
    "<img src=x onerror=alert(1)>",
    "</span><script>window.__pwned = 1</script>",
    '" onmouseover="alert(2)',
    "<b>bold</b>",
    "&amp;&lt;",
  ];

  test("untrusted tokens stay text: no element created, no handler runs", async () => {
    const alert = vi.fn();
    (window as any).alert = alert;
    const strip = mount(malicious);
    const s = spans(strip);
    expect(s.map((x) => x.textContent)).toEqual(malicious);
    expect(strip.element.querySelectorAll("img, script, b")).toHaveLength(0);
    for (const span of s) expect(span.children).toHaveLength(0);
    s[2].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    await new Promise((r) => setTimeout(r, 10));
    expect(alert).not.toHaveBeenCalled();
    expect((window as any).__pwned).toBeUndefined();
  });

  test("whitespace is visible", () => {
    expect(displayToken("\n")).toBe("↵");
    expect(displayToken(" the")).toBe(" the");
    expect(displayToken("a\tb\r")).toBe("a⇥b␍");
    expect(displayToken("\u0000")).toBe("\\x00");
    expect(displayToken("")).toBe("∅");
    const strip = mount(["\n", "  x"]);
    expect(spans(strip).map((s) => s.textContent)).toEqual(["↵", "  x"]);
  });
});

describe("TokenStrip behaviour", () => {
  test("spans go in chunks of TOKEN_CHUNK; hovering and clicking a span in any chunk names its index", () => {
    const strip = mount(Array.from({ length: 2 * TOKEN_CHUNK + 5 }, (_, i) => `t${i}`));
    const chunks = [...strip.element.children];
    expect(chunks.map((c) => c.className)).toEqual(["miw-token-chunk", "miw-token-chunk", "miw-token-chunk"]);
    expect(chunks.map((c) => c.children.length)).toEqual([TOKEN_CHUNK, TOKEN_CHUNK, 5]);
    const hovered: Array<number | null> = [];
    const clicked: number[] = [];
    strip.onHover((i) => hovered.push(i));
    strip.onClick((i) => clicked.push(i));
    const last = spans(strip)[2 * TOKEN_CHUNK + 4];
    last.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    last.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    chunks[1].dispatchEvent(new MouseEvent("mouseover", { bubbles: true })); // a chunk's own box is no token
    expect(hovered).toEqual([2 * TOKEN_CHUNK + 4]);
    expect(clicked).toEqual([2 * TOKEN_CHUNK + 4]);
  });

  test("a very long token is shown shortened, whole in its tooltip", () => {
    const long = "x".repeat(10_000);
    const strip = mount(["a", long, "b"]);
    const s = spans(strip);
    expect(s.map((x) => x.textContent)).toEqual(["a", `${"x".repeat(TOKEN_CHARS - 1)}…`, "b"]);
    expect(s[1].title).toBe(`1: "${long}"`);
    strip.setTooltips((i) => `act ${i}`);
    expect(s[1].title).toBe(`1: "${long}" · act 1`);
  });

  test("weights restyle the same spans in place, with contrasting text", () => {
    const strip = mount(["a", "b", "c"]);
    const before = spans(strip);
    strip.setWeights(new Float32Array([0, 1, NaN]), cmap, 0, 1);
    const after = spans(strip);
    expect(after).toEqual(before);
    expect(after[0].style.backgroundColor).toBe("rgb(255, 255, 255)");
    expect(after[0].style.color).toBe("#000");
    expect(after[1].style.color).toBe("#fff");
    expect(after[2].style.backgroundColor).toBe("rgb(255, 0, 255)");
    strip.setWeights(null, cmap, 0, 1);
    expect(after[1].style.backgroundColor).toBe("");
  });

  test("tooltips carry extra text per token and can be reset", () => {
    const strip = mount(["a", "<b>"]);
    strip.setTooltips((i) => `act ${i * 2}`);
    expect(spans(strip).map((s) => s.title)).toEqual(['0: "a" · act 0', '1: "<b>" · act 2']);
    strip.setTooltips(null);
    expect(spans(strip).map((s) => s.title)).toEqual(['0: "a"', '1: "<b>"']);
  });

  test("hover, click, lock and keyboard", () => {
    const strip = mount(["a", "b", "c"]);
    const hovered: Array<number | null> = [];
    const clicked: number[] = [];
    let cleared = 0;
    strip.onHover((i) => hovered.push(i));
    strip.onClick((i) => clicked.push(i));
    strip.onClear(() => cleared++);
    const s = spans(strip);
    s[1].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    s[1].click();
    expect(hovered).toContain(1);
    expect(clicked).toEqual([1]);
    expect(s.map((x) => x.tabIndex)).toEqual([-1, 0, -1]);

    s[1].focus();
    s[1].dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(document.activeElement).toBe(s[2]);
    s[2].dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(clicked).toEqual([1, 2]);
    s[2].dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(cleared).toBe(1);
    expect(hovered.at(-1)).toBeNull();

    strip.setLocked(0);
    expect(s[0].classList.contains("miw-token-locked")).toBe(true);
    strip.setLocked(null);
    expect(s[0].classList.contains("miw-token-locked")).toBe(false);
  });

  test("weight updates skip spans whose colour did not change", () => {
    const strip = mount(Array.from({ length: 1024 }, (_, i) => ` t${i}`));
    const w = new Float32Array(1024).fill(0.5);
    strip.setWeights(w, cmap, 0, 1);
    const s = spans(strip);
    s[0].style.backgroundColor = "red"; // a write by setWeights would undo this
    w[1] = 1;
    strip.setWeights(w, cmap, 0, 1);
    expect(s[0].style.backgroundColor).toBe("red");
    expect(s[1].style.backgroundColor).toBe("rgb(8, 48, 107)");
    strip.invalidateColors();
    strip.setWeights(w, cmap, 0, 1);
    expect(s[0].style.backgroundColor).not.toBe("red");
  });
});
