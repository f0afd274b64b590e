import { afterEach, describe, expect, test } from "vitest";
import { encodeArray } from "../src/lib/codec";
import { exampleRow, formatActivation, parseExamples } from "../src/lib/examples";
import { el } from "../src/lib/view";

afterEach(() => document.body.replaceChildren());

/**
 * A reply's examples as Python's `add_examples` sends them: `items` as JSON, `values` float32 and the
 * activations NaN-padded into [examples, width]; `acts`/`values` override the arrays' shapes.
 */
function reply(
  items: unknown,
  rows: number[][],
  opts: { width?: number; dtype?: "float16" | "float32"; values?: number[]; actsShape?: number[] } = {},
) {
  const width = opts.width ?? Math.max(0, ...rows.map((r) => r.length));
  const flat = rows.flatMap((r) => Array.from({ length: width }, (_, i) => (i < r.length ? r[i] : NaN)));
  const acts = encodeArray(flat, opts.actsShape ?? [rows.length, width], opts.dtype ?? "float16", { bufferIndex: 0 });
  const v = opts.values ?? rows.map((r) => Math.max(...r, 0));
  const values = encodeArray(v, [v.length], "float32", { bufferIndex: 1 });
  return {
    result: { examples: items, example_acts: acts.header, example_values: values.header },
    buffers: [new DataView(acts.buffer), new DataView(values.buffer)],
  };
}

function parse(r: ReturnType<typeof reply>, what = "feature reply") {
  return parseExamples(r.result, r.buffers, what);
}

describe("parseExamples", () => {
  test("reads tokens, max index, value, window, position and source, and cuts each activation row to its tokens", () => {
    const items = [
      { tokens: ["a", " cat", 7], max_index: 1, window: 12, position: 40, source: 3 },
      { tokens: ["x"], max_index: "0" },
    ];
    const examples = parse(reply(items, [[0.5, 2, -1], [3]], { values: [2, 3] }));
    expect(examples).toHaveLength(2);
    expect(examples[0].tokens).toEqual(["a", " cat", "7"]);
    expect(examples[0].maxIndex).toBe(1);
    expect([examples[0].value, examples[0].window, examples[0].position, examples[0].source]).toEqual([2, 12, 40, 3]);
    expect([...examples[0].activations]).toEqual([0.5, 2, -1]);
    expect(examples[1].maxIndex).toBe(-1); // not an integer
    expect([examples[1].value, examples[1].window, examples[1].position, examples[1].source]).toEqual([3, -1, -1, -1]);
    expect(examples[1].activations).toBeInstanceOf(Float32Array);
    expect([...examples[1].activations]).toEqual([3]); // the NaN padding is cut off
    expect(Object.keys(examples[0]).sort()).toEqual([
      "activations",
      "maxIndex",
      "position",
      "source",
      "tokens",
      "value",
      "window",
    ]);
  });

  test("anything but a list is no examples; an example without tokens has none", () => {
    expect(parse(reply(undefined, [], { width: 4 }))).toEqual([]);
    const [e] = parse(reply([{}], [[]], { width: 2, dtype: "float32" }));
    expect(e.tokens).toEqual([]);
    expect(e.activations).toHaveLength(0);
  });

  test("errors name the reply, the array and the shapes", () => {
    expect(() => parse(reply([{ tokens: ["a"] }], [], { width: 1, values: [1] }))).toThrow(
      "feature reply: 1 examples but example_acts of shape [0, 1]",
    );
    expect(() => parse(reply([{}, {}], [[1], [2]], { actsShape: [2] }), "examples reply")).toThrow(
      "examples reply: 2 examples but example_acts of shape [2]",
    );
    expect(() => parse(reply([{ tokens: ["a"] }], [[1]], { values: [1, 2] }))).toThrow(
      "feature reply: 1 examples but example_values of shape [2]",
    );
    expect(() => parse(reply([{ tokens: ["a", "b", "c"] }], [[1, 2]]))).toThrow(
      "feature reply: example 0 has 3 tokens but 2 activations",
    );
    expect(() => parseExamples({ examples: [], example_values: {} }, [], "examples reply")).toThrow(
      "examples reply has no example_acts",
    );
  });
});

describe("exampleRow", () => {
  const example = { tokens: ["<b>hi</b>", " cat", "\n"], maxIndex: 1, activations: new Float32Array([0.25, 4, NaN]) };
  const spans = (root: Element) => [...root.querySelectorAll<HTMLElement>("[data-testid=token]")];

  test("a row with the value label, then the tokens with the max outlined and activations in tooltips", () => {
    const { row, strip } = exampleRow(example, 2, { rowClass: "r", valueClass: "v", unit: "feature 7", value: "4.00" });
    document.body.append(row);
    expect(row.className).toBe("r");
    expect(row.dataset.testid).toBe("example");
    expect(row.dataset.index).toBe("2");
    const [value, stripEl] = [...row.children] as HTMLElement[];
    expect(value.dataset.testid).toBe("example-value");
    expect(value.className).toBe("v");
    expect(value.textContent).toBe("4.00");
    expect(value.title).toBe("activation of feature 7 at the outlined token");
    expect(stripEl).toBe(strip.element);
    expect(stripEl.dataset.testid).toBe("example-strip");
    expect(stripEl.getAttribute("aria-label")).toBe("example 3 of feature 7");
    expect(spans(row).map((s) => s.textContent)).toEqual(["<b>hi</b>", " cat", "↵"]);
    expect(row.querySelectorAll("b")).toHaveLength(0);
    expect(spans(row).map((s) => s.classList.contains("miw-token-primary"))).toEqual([false, true, false]);
    expect(spans(row).map((s) => s.title)).toEqual([
      '0: "<b>hi</b>" · activation 0.250',
      '1: " cat" · activation 4.000',
      '2: "\\n" · activation –',
    ]);
  });

  test("a max index outside the tokens outlines none", () => {
    for (const maxIndex of [-1, 3]) {
      const { row } = exampleRow({ ...example, maxIndex }, 0, {
        rowClass: "r",
        valueClass: "v",
        unit: "neuron 1",
        value: "1",
      });
      expect(row.querySelectorAll(".miw-token-primary")).toHaveLength(0);
    }
  });

  test("wrapValue puts the value beside more text; the caller can listen to the strip", () => {
    const where = el("span", "where");
    where.textContent = "window 3, token 9";
    const { row, strip } = exampleRow(example, 0, {
      rowClass: "r",
      valueClass: "v",
      unit: "neuron 12",
      value: "4.000",
      wrapValue: (value) => {
        const meta = el("div", "meta");
        meta.append(value, where);
        return meta;
      },
    });
    document.body.append(row);
    const [meta, stripEl] = [...row.children] as HTMLElement[];
    expect(meta.className).toBe("meta");
    expect([...meta.children].map((c) => c.className)).toEqual(["v", "where"]);
    expect(stripEl).toBe(strip.element);
    strip.onHover((t) => (where.textContent = t === null ? "left" : `token ${t}`));
    spans(row)[1].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(where.textContent).toBe("token 1");
  });

  test("formatActivation: three decimals, a dash when not finite", () => {
    expect(formatActivation(-0.5)).toBe("-0.500");
    expect(formatActivation(NaN)).toBe("–");
    expect(formatActivation(Infinity)).toBe("–");
  });
});
