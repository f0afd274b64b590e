import { afterEach, describe, expect, test } from "vitest";
import { displayToken, LINE_CHARS, quoteToken, setLine, shorten, TOKEN_CHARS, tokenLabel } from "../src/lib/text";
import { displayToken as fromTokens } from "../src/lib/tokens";

const LONG = "x".repeat(10_000);

afterEach(() => document.body.replaceChildren());

describe("shorten", () => {
  test("leaves text that fits alone and cuts the rest to max characters ending in an ellipsis", () => {
    expect(shorten("", 5)).toBe("");
    expect(shorten("abcde", 5)).toBe("abcde");
    expect(shorten("abcdef", 5)).toBe("abcd…");
    expect(shorten(LONG, 64)).toHaveLength(64);
    expect(shorten(LONG, 64).endsWith("…")).toBe(true);
    expect(shorten("abc", 1)).toBe("…");
    expect(shorten("abc", 0)).toBe("");
  });

  test("never splits a surrogate pair", () => {
    const cut = shorten("ab😀cdef", 4); // "ab" + the two halves of 😀 would be 4 code units
    expect(cut).toBe("ab…");
    expect(cut.length).toBeLessThanOrEqual(4);
    expect(shorten("a😀bcdef", 4)).toBe("a😀…");
  });
});

describe("token labels", () => {
  test("displayToken is the one tokens.ts re-exports", () => {
    expect(fromTokens).toBe(displayToken);
  });

  test("tokenLabel is printable and at most TOKEN_CHARS; short tokens are shown whole", () => {
    expect(tokenLabel(" the")).toBe(" the");
    expect(tokenLabel("a\nb")).toBe("a↵b");
    expect(tokenLabel("")).toBe("∅");
    const label = tokenLabel(LONG);
    expect(label).toHaveLength(TOKEN_CHARS);
    expect(label).toBe(`${"x".repeat(TOKEN_CHARS - 1)}…`);
    expect(tokenLabel("\n".repeat(200), 10)).toBe(`${"↵".repeat(9)}…`);
  });

  test("quoteToken quotes as JSON, shortened", () => {
    expect(quoteToken(" cat")).toBe('" cat"');
    expect(quoteToken("\n")).toBe('"\\n"');
    expect(quoteToken(LONG)).toBe(`"${"x".repeat(TOKEN_CHARS - 1)}…"`);
  });
});

describe("setLine", () => {
  test("a plain line is shown up to LINE_CHARS and whole in the title", () => {
    const el = document.createElement("div");
    setLine(el, "hover a token");
    expect(el.textContent).toBe("hover a token");
    expect(el.title).toBe("hover a token");
    setLine(el, LONG);
    expect(el.textContent).toHaveLength(LINE_CHARS);
    expect(el.title).toBe(LONG);
  });

  test("a composed line quotes tokens shortened on screen and whole in the title", () => {
    const el = document.createElement("div");
    setLine(el, (quote) => `token 3 ${quote(LONG)} · value 0.5`);
    expect(el.textContent).toBe(`token 3 "${"x".repeat(TOKEN_CHARS - 1)}…" · value 0.5`);
    expect(el.title).toBe(`token 3 "${LONG}" · value 0.5`);
  });

  test("writes nothing when nothing changed", () => {
    const el = document.createElement("div");
    document.body.append(el);
    setLine(el, "same");
    const node = el.firstChild;
    setLine(el, "same");
    expect(el.firstChild).toBe(node);
  });
});
