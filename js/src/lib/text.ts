/**
 * Text that views write while the pointer moves: token labels, readouts, captions.
 *
 * Tokens are untrusted and may be any length (a 10,000-character token is valid). What a view
 * shows of one is cut here, before it reaches layout, and the whole text goes into a `title`;
 * together with the `.miw-line` class (one line, fixed height, ellipsis: base.css) nothing a
 * hover writes can resize the box it is written into, so nothing moves under the pointer.
 */

/** Most characters of one token a view shows (token strips, axis labels, readouts): whole vocabulary tokens fit. */
export const TOKEN_CHARS = 64;
/** Most characters of a one-line readout. */
export const LINE_CHARS = 240;

/** "+0.1234" / "−0.1234" (a real minus sign), `digits` after the point; NaN and infinities as `String` writes them. */
export function signed(v: number, digits = 4): string {
  if (!Number.isFinite(v)) return String(v);
  return `${v < 0 ? "−" : "+"}${Math.abs(v).toFixed(digits)}`;
}

/** Printable form of a token: control characters become visible symbols, spaces stay (white-space: pre). */
export function displayToken(label: string): string {
  if (label === "") return "∅";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what this makes visible
  return label.replace(/[\u0000-\u001f\u007f]/g, (ch) => {
    switch (ch) {
      case "\n":
        return "↵";
      case "\t":
        return "⇥";
      case "\r":
        return "␍";
      default:
        return `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`;
    }
  });
}

/** `text` in at most `max` characters: cut, the last one "…", when longer (a surrogate pair is never split). */
export function shorten(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max < 1) return "";
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // would keep half an astral character
  return `${text.slice(0, end)}…`;
}

/** A token as a label: printable and shortened. */
export function tokenLabel(token: string, max = TOKEN_CHARS): string {
  return shorten(displayToken(token), max);
}

/** A token quoted for a readout (JSON string syntax, so spaces and control characters show), shortened. */
export function quoteToken(token: string, max = TOKEN_CHARS): string {
  return JSON.stringify(shorten(token, max));
}

/** How a readout quotes the tokens in it. */
export type Quote = (token: string) => string;

/**
 * Write one line of text into `el` (give it the `miw-line` class): shortened on screen, whole in
 * its title. A function gets the quote to use for tokens: shortened for the screen, whole
 * (`JSON.stringify`) for the title.
 */
export function setLine(el: HTMLElement, text: string | ((quote: Quote) => string)): void {
  const shown = typeof text === "string" ? text : text(quoteToken);
  const full = typeof text === "string" ? text : text((t) => JSON.stringify(t));
  const cut = shorten(shown, LINE_CHARS);
  // Skip no-op writes: a chart's readout is rewritten on every frame.
  if (el.textContent !== cut) el.textContent = cut;
  if (el.title !== full) el.title = full;
}
