/**
 * Top corpus examples, as TopExamples and FeatureView show them. Both widgets send them in one
 * shape (Python: `add_examples` in `mi_widgets/capture/corpus.py`): `examples`, a JSON list of
 * `{tokens, max_index, window, position, source}`; `example_values`, float32 [examples], each
 * example's value as the scan found it; `example_acts`, [examples, width], each example's
 * activations NaN-padded past its tokens. `parseExamples` reads them into one object per example,
 * and `exampleRow` draws one (its value, then its tokens as a TokenStrip with the max token
 * outlined and each token's activation in its tooltip).
 */

import { type ArrayHeader, asFloat32, type DecodedArray, decodeArray } from "./codec";
import { TokenStrip } from "./tokens";
import { el, intOr } from "./view";

/** One top example of a unit (Python: `capture.corpus.Example`). Unknown integers read as -1. */
export interface Example {
  /** The context's token labels. */
  tokens: string[];
  /** The maximum's index in `tokens`. */
  maxIndex: number;
  /** The unit's activation at the maximum, as the scan found it. */
  value: number;
  /** The corpus window (row) the context is in, and the maximum's token position in that window. */
  window: number;
  position: number;
  /** The corpus item (text or token row) the window was cut from. */
  source: number;
  /** One activation per token. */
  activations: Float32Array;
}

/**
 * The examples of a reply (`result.examples`, `example_values`, `example_acts`; anything but a
 * list reads as no examples), each activation row cut to its example's tokens. Errors name the
 * reply (`"feature reply"`), the array and the shapes.
 */
export function parseExamples(result: any, buffers: ReadonlyArray<DataView>, reply = "reply"): Example[] {
  const list: unknown[] = Array.isArray(result?.examples) ? result.examples : [];
  const array = (name: string): DecodedArray => {
    const header = result?.[name] as ArrayHeader | undefined;
    if (header === null || typeof header !== "object") throw new Error(`${reply} has no ${name}`);
    return decodeArray(header, buffers);
  };
  const acts = array("example_acts");
  const values = array("example_values");
  const width = acts.shape[1] ?? 0;
  if (acts.shape.length !== 2 || acts.shape[0] !== list.length) {
    throw new Error(`${reply}: ${list.length} examples but example_acts of shape [${acts.shape.join(", ")}]`);
  }
  if (values.shape.length !== 1 || values.shape[0] !== list.length) {
    throw new Error(`${reply}: ${list.length} examples but example_values of shape [${values.shape.join(", ")}]`);
  }
  const rows = asFloat32(acts);
  return list.map((item: any, i) => {
    const tokens: string[] = Array.isArray(item?.tokens) ? item.tokens.map(String) : [];
    if (tokens.length > width)
      throw new Error(`${reply}: example ${i} has ${tokens.length} tokens but ${width} activations`);
    return {
      tokens,
      maxIndex: intOr(item?.max_index, -1),
      value: values.data[i],
      window: intOr(item?.window, -1),
      position: intOr(item?.position, -1),
      source: intOr(item?.source, -1),
      activations: rows.subarray(i * width, i * width + tokens.length),
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
  example: Pick<Example, "tokens" | "maxIndex" | "activations">,
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
