/**
 * Top corpus examples, as TopExamples and FeatureView show them: the reply's examples (a JSON list
 * of `{tokens, max_index, ...}` plus one NaN-padded [examples, width] activations array) read into
 * one object per example, and one row per example (its value, then its tokens as a TokenStrip
 * with the max token outlined and each token's activation in its tooltip).
 */

import type { DecodedArray } from "./codec";
import { TokenStrip } from "./tokens";
import { el, intOr } from "./view";

/** One example's tokens, the index of its max token (-1 when unknown) and one activation per token. */
export interface ParsedExample {
  tokens: string[];
  maxIndex: number;
  activations: Float32Array;
}

/**
 * The examples of a reply: `items` (anything but a list reads as none) and their activations
 * `acts`, shape [examples, width], each row cut to its example's tokens. Errors name the reply
 * and the array, e.g. `{reply: "feature reply", acts: "example_acts"}`.
 */
export function parseExamples(
  items: unknown,
  acts: DecodedArray,
  what: { reply: string; acts: string },
): ParsedExample[] {
  const list: unknown[] = Array.isArray(items) ? items : [];
  const width = acts.shape[1] ?? 0;
  if (acts.shape.length !== 2 || acts.shape[0] !== list.length) {
    throw new Error(`${what.reply}: ${list.length} examples but ${what.acts} of shape [${acts.shape.join(", ")}]`);
  }
  return list.map((item: any, i) => {
    const tokens: string[] = Array.isArray(item?.tokens) ? item.tokens.map(String) : [];
    if (tokens.length > width)
      throw new Error(`${what.reply}: example ${i} has ${tokens.length} tokens but ${width} activations`);
    return {
      tokens,
      maxIndex: intOr(item?.max_index, -1),
      activations: Float32Array.from(acts.data.subarray(i * width, i * width + tokens.length)),
    };
  });
}

export interface ExampleRowOptions {
  /** The view's classes for the row and for its value label. */
  rowClass: string;
  valueClass: string;
  /** What the examples belong to ("neuron 12", "feature 5"), for the value's tooltip and the strip's label. */
  unit: string;
  /** The example's value as the view writes it. */
  value: string;
  /** Wrap the value label with more beside it; the row then holds the wrapper. */
  wrapValue?: (value: HTMLSpanElement) => HTMLElement;
}

/**
 * Example `index` as a row (testid `example`, `data-index`): its value label (`example-value`),
 * then its tokens (`example-strip`) with the max token outlined and each token's activation in
 * its tooltip. The caller colours the strip and may listen to it.
 */
export function exampleRow(
  example: ParsedExample,
  index: number,
  opts: ExampleRowOptions,
): { row: HTMLDivElement; strip: TokenStrip } {
  const { tokens, maxIndex, activations } = example;
  const row = el("div", opts.rowClass, "example");
  row.dataset.index = String(index);
  const value = el("span", opts.valueClass, "example-value");
  value.textContent = opts.value;
  value.title = `activation of ${opts.unit} at the outlined token`;
  const strip = new TokenStrip({ label: `example ${index + 1} of ${opts.unit}` });
  strip.element.dataset.testid = "example-strip";
  strip.setTokens(tokens);
  strip.setMarks(maxIndex >= 0 && maxIndex < tokens.length ? maxIndex : null, null);
  strip.setTooltips((t) => `activation ${formatActivation(activations[t])}`);
  row.append(opts.wrapValue?.(value) ?? value, strip.element);
  return { row, strip };
}

/** An activation with three decimals, "–" when it is not finite. */
export function formatActivation(v: number): string {
  return Number.isFinite(v) ? v.toFixed(3) : "–";
}
