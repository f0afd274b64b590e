import { afterEach, describe, expect, test } from "vitest";
import type { Response } from "../src/lib/protocol";
import { ViewScope } from "../src/lib/view";
import { FakeModel } from "./helpers";

const tick = () => new Promise((r) => setTimeout(r, 0));

afterEach(() => document.body.replaceChildren());

interface Drawn {
  value: unknown;
  revision: number;
  params: Record<string, unknown>;
}

/** A scope on a fake model with one resource for method `m` that records what it draws. */
function setup(opts: {
  params?: (model: FakeModel) => Record<string, unknown> | null;
  cache?: number;
  policy?: "supersede" | "coalesce";
  refetchOn?: string[];
  decode?: (r: Response) => unknown;
  revision?: number;
}) {
  const model = new FakeModel({ revision: opts.revision ?? 1, error: "", x: 0 });
  const scope = new ViewScope(model);
  const drawn: Drawn[] = [];
  const loading: boolean[] = [];
  scope.onLoading((l) => loading.push(l));
  const resource = scope.resource({
    method: "m",
    params: opts.params && (() => opts.params!(model)),
    cache: opts.cache,
    policy: opts.policy,
    refetchOn: opts.refetchOn as any,
    decode: opts.decode ?? ((r) => r.result.value),
    draw: (value, meta) => drawn.push({ value, ...meta }),
  });
  const requests = () => model.requests("m");
  const last = () => requests().at(-1);
  const cancels = () => model.sent.filter((s) => s.content.type === "cancel").map((s) => s.content.id);
  const answer = (req: any, value: unknown, revision: number) => model.reply(req.id, { value, revision });
  const banner = () => scope.banner.element.querySelector("[data-testid=error]")?.textContent ?? "";
  return { model, scope, resource, drawn, loading, requests, last, cancels, answer, banner };
}

describe("Resource: one stale policy", () => {
  test("fetches on creation, draws the reply with its revision, and tracks loading", async () => {
    const t = setup({});
    expect(t.requests()).toHaveLength(1);
    expect(t.last().params).toEqual({});
    expect(t.resource.loading).toBe(true);
    expect(t.scope.loading).toBe(true);
    t.answer(t.last(), "a", 1);
    await tick();
    expect(t.drawn).toEqual([{ value: "a", revision: 1, params: {} }]);
    expect(t.resource.loading).toBe(false);
    expect(t.loading).toEqual([true, false]);
    expect(t.resource.data).toBe("a");
    expect(t.resource.revision).toBe(1);
  });

  test("supersede: a revision change cancels the request in flight; its late reply is never drawn", async () => {
    const t = setup({});
    const first = t.last();
    t.model.set("revision", 2);
    expect(t.cancels()).toContain(first.id);
    const second = t.last();
    expect(second.id).not.toBe(first.id);
    t.answer(first, "old", 1);
    await tick();
    expect(t.drawn).toEqual([]);
    t.answer(second, "new", 2);
    await tick();
    expect(t.drawn.map((d) => d.value)).toEqual(["new"]);
  });

  test("a reply computed for a revision older than the one asked at is dropped", async () => {
    const t = setup({ revision: 5 });
    t.answer(t.last(), "behind", 4);
    await tick();
    expect(t.drawn).toEqual([]);
    expect(t.resource.loading).toBe(false);
    expect(t.banner()).toBe("");
  });

  test("a reply older than what is drawn is dropped; a newer one (kernel ahead) is drawn", async () => {
    const t = setup({ params: (m) => ({ x: m.get("x") }), refetchOn: ["x"] });
    t.answer(t.last(), "r3", 3); // the kernel moved on before the trait arrived: newer data is fine
    await tick();
    expect(t.drawn.map((d) => [d.value, d.revision])).toEqual([["r3", 3]]);
    t.model.set("x", 1); // same revision 1 in the view, new params
    t.answer(t.last(), "r2", 2); // older than what is drawn
    await tick();
    expect(t.drawn).toHaveLength(1);
  });

  test("coalesce: revision bumps during a fetch fold into one more, and the landed reply is drawn", async () => {
    const t = setup({ policy: "coalesce", revision: 0 });
    t.model.set("revision", 1);
    t.model.set("revision", 2);
    expect(t.requests()).toHaveLength(1);
    expect(t.cancels()).toEqual([]);
    t.answer(t.last(), "r0", 0);
    await tick();
    expect(t.drawn.map((d) => d.value)).toEqual(["r0"]); // a scan's partial result is drawn, not starved
    expect(t.requests()).toHaveLength(2);
    expect(t.last().id).not.toBe(t.requests()[0].id);
    t.answer(t.last(), "r2", 2);
    await tick();
    expect(t.drawn.map((d) => d.value)).toEqual(["r0", "r2"]);
    expect(t.requests()).toHaveLength(2); // nothing more was asked for
  });

  test("coalesce: new params still supersede (the user's choice does not wait for the old reply)", async () => {
    const t = setup({ policy: "coalesce", params: (m) => ({ x: m.get("x") }), refetchOn: ["x"] });
    const first = t.last();
    t.model.set("x", 5);
    expect(t.cancels()).toContain(first.id);
    expect(t.last().params).toEqual({ x: 5 });
    t.answer(first, "x0", 1);
    t.answer(t.last(), "x5", 1);
    await tick();
    expect(t.drawn.map((d) => d.value)).toEqual(["x5"]);
  });

  test("followRevision false: no refetch on a revision change and no revision check", async () => {
    const model = new FakeModel({ revision: 4, error: "" });
    const scope = new ViewScope(model);
    const drawn: unknown[] = [];
    scope.resource({
      method: "p",
      followRevision: false,
      decode: (r) => r.result.value,
      draw: (v) => drawn.push(v),
    });
    model.set("revision", 5);
    expect(model.requests("p")).toHaveLength(1);
    expect(model.sent.filter((s) => s.content.type === "cancel")).toEqual([]);
    model.reply(model.requests("p")[0].id, { value: "tokens", revision: 0 });
    await tick();
    expect(drawn).toEqual(["tokens"]);
    scope.dispose();
  });

  test("asking again for what is in flight or drawn sends nothing; force asks anyway", async () => {
    const t = setup({});
    void t.resource.fetch();
    void t.resource.fetch();
    expect(t.requests()).toHaveLength(1);
    t.answer(t.last(), "a", 1);
    await tick();
    void t.resource.fetch();
    expect(t.requests()).toHaveLength(1);
    void t.resource.fetch({ force: true });
    expect(t.requests()).toHaveLength(2);
  });

  test("new params supersede the request in flight; refetchOn traits refetch", async () => {
    const t = setup({ params: (m) => ({ x: m.get("x") }), refetchOn: ["x"] });
    const first = t.last();
    t.model.set("x", 7);
    expect(t.cancels()).toContain(first.id);
    expect(t.last().params).toEqual({ x: 7 });
    t.answer(first, "x0", 1);
    t.answer(t.last(), "x7", 1);
    await tick();
    expect(t.drawn.map((d) => [d.value, d.params])).toEqual([["x7", { x: 7 }]]);
  });

  test("the cache answers a revisited key without a request, until the revision moves", async () => {
    const t = setup({ params: (m) => ({ x: m.get("x") }), refetchOn: ["x"], cache: 2 });
    t.answer(t.last(), "x0", 1);
    await tick();
    t.model.set("x", 1);
    t.answer(t.last(), "x1", 1);
    await tick();
    t.model.set("x", 0);
    expect(t.requests()).toHaveLength(2); // from the cache
    expect(t.drawn.map((d) => d.value)).toEqual(["x0", "x1", "x0"]);
    t.model.set("revision", 2);
    expect(t.requests()).toHaveLength(3); // a new revision: the cache is stale
    expect(t.last().params).toEqual({ x: 0 });
  });

  test("a revision change replaces the request without the loading flag dropping in between", async () => {
    const t = setup({});
    t.model.set("revision", 2);
    expect(t.loading).toEqual([true, true]);
    t.answer(t.last(), "r2", 2);
    await tick();
    expect(t.loading).toEqual([true, true, false]);
  });

  test("what was drawn is drawn again when asked for after nothing (params null) or after something else", async () => {
    let wanted: Record<string, unknown> | null = { a: 1 };
    const t = setup({ params: () => wanted });
    t.answer(t.last(), "a1", 1);
    await tick();
    wanted = null;
    void t.resource.fetch();
    wanted = { a: 1 };
    void t.resource.fetch();
    expect(t.requests()).toHaveLength(2); // asked again: the view may have cleared what it showed
    t.answer(t.last(), "a1 again", 1);
    await tick();
    wanted = { a: 2 };
    void t.resource.fetch();
    const other = t.last();
    wanted = { a: 1 }; // back before the other answered: no request, the drawn data is drawn again
    void t.resource.fetch();
    expect(t.cancels()).toContain(other.id);
    expect(t.requests()).toHaveLength(3);
    expect(t.drawn.map((d) => d.value)).toEqual(["a1", "a1 again", "a1 again"]);
  });

  test("a cached reply older than what is drawn is not drawn from the cache", async () => {
    const t = setup({ params: (m) => ({ x: m.get("x") }), refetchOn: ["x"], cache: 4 });
    t.answer(t.last(), "x0@1", 1);
    await tick();
    t.model.set("x", 1);
    t.answer(t.last(), "x1@2", 2); // the kernel is ahead of the trait
    await tick();
    t.model.set("x", 0); // cached at revision 1, older than what is drawn
    expect(t.requests()).toHaveLength(3);
    expect(t.drawn.map((d) => d.value)).toEqual(["x0@1", "x1@2"]);
  });

  test("key: what the data depends on beyond params makes a fetch new without being sent", async () => {
    const model = new FakeModel({ revision: 1, error: "", text: "a" });
    const scope = new ViewScope(model);
    const drawn: unknown[] = [];
    scope.resource({
      method: "p",
      params: () => ({ index: 0 }),
      key: () => model.get("text"),
      refetchOn: ["text"],
      decode: (r) => r.result.value,
      draw: (v) => drawn.push(v),
    });
    model.reply(model.requests("p")[0].id, { value: "for a", revision: 1 });
    await tick();
    model.set("text", "b"); // same params, other text under the index
    expect(model.requests("p")).toHaveLength(2);
    expect(model.requests("p")[1].params).toEqual({ index: 0 });
    model.reply(model.requests("p")[1].id, { value: "for b", revision: 1 });
    await tick();
    expect(drawn).toEqual(["for a", "for b"]);
    scope.dispose();
  });

  test("current: what is drawn is what params want now, for the current revision or a newer one", async () => {
    const t = setup({ params: (m) => ({ x: m.get("x") }), refetchOn: ["x"] });
    expect(t.resource.current).toBe(false); // nothing drawn yet
    t.answer(t.last(), "x0@2", 2); // the kernel is ahead of the trait
    await tick();
    expect(t.resource.current).toBe(true);
    t.model.set("x", 1);
    expect(t.resource.current).toBe(false); // other params asked for
    t.model.replyError(t.last().id, "ValueError", "no x 1");
    await tick();
    expect(t.resource.current).toBe(false); // and they failed: x0 is still drawn, but not what is wanted
    t.model.set("x", 0);
    expect(t.resource.current).toBe(true);
    t.model.set("revision", 3);
    expect(t.resource.current).toBe(false); // computed for revision 2
  });

  test("params null: nothing is asked and the request in flight is dropped", async () => {
    let wanted: Record<string, unknown> | null = null;
    const t = setup({ params: () => wanted });
    expect(t.requests()).toHaveLength(0);
    wanted = { a: 1 };
    void t.resource.fetch();
    const req = t.last();
    wanted = null;
    void t.resource.fetch();
    expect(t.cancels()).toContain(req.id);
    expect(t.resource.loading).toBe(false);
  });

  test("errors go to the banner under the method's name and clear on the next success", async () => {
    const t = setup({
      decode: (r) => {
        if (r.result.value === "bad") throw new Error("bad reply shape");
        return r.result.value;
      },
    });
    t.model.replyError(t.last().id, "ValueError", "no such head");
    await tick();
    expect(t.banner()).toContain("ValueError: no such head");
    t.model.set("revision", 2);
    t.answer(t.last(), "bad", 2);
    await tick();
    expect(t.banner()).toContain("bad reply shape");
    t.model.set("revision", 3);
    t.answer(t.last(), "good", 3);
    await tick();
    expect(t.banner()).toBe("");
    expect(t.scope.banner.visible).toBe(false);
    expect(t.drawn.map((d) => d.value)).toEqual(["good"]);
  });

  test("a reply without a revision is an error, not data", async () => {
    const t = setup({});
    t.model.reply(t.last().id, { value: "a" });
    await tick();
    expect(t.drawn).toEqual([]);
    expect(t.banner()).toContain("m reply has no revision");
  });

  test("dispose cancels what is in flight and later fetches do nothing", async () => {
    const t = setup({});
    const req = t.last();
    t.scope.dispose();
    expect(t.cancels()).toContain(req.id);
    expect(t.model.listenerCount()).toBe(0);
    await t.resource.fetch();
    expect(t.requests()).toHaveLength(1);
  });
});

describe("ViewScope.command", () => {
  test("busy while out; a newer call supersedes; errors go to the banner; null when it failed", async () => {
    const model = new FakeModel({ revision: 0, error: "" });
    const scope = new ViewScope(model);
    const first = scope.command("run", { prompt: "a" });
    expect(scope.busy("run")).toBe(true);
    const second = scope.command("run", { prompt: "b" });
    const [r1, r2] = model.requests("run");
    expect(model.sent.some((s) => s.content.type === "cancel" && s.content.id === r1.id)).toBe(true);
    await expect(first).resolves.toBeNull();
    expect(scope.busy("run")).toBe(true); // the second is still out
    model.replyError(r2.id, "ValueError", "prompt too long");
    await expect(second).resolves.toBeNull();
    expect(scope.busy("run")).toBe(false);
    expect(scope.banner.element.textContent).toContain("prompt too long");
    const third = scope.command("run", { prompt: "c" });
    expect(scope.banner.visible).toBe(false); // cleared when asked again
    model.reply(model.requests("run").at(-1).id, { ok: 1 });
    await expect(third).resolves.toMatchObject({ result: { ok: 1 } });
    const fourth = scope.command("run", { prompt: "d" });
    model.replyError(model.requests("run").at(-1).id, "Cancelled", "the widget was closed");
    await expect(fourth).resolves.toBeNull();
    expect(scope.busy("run")).toBe(false); // a kernel-side cancel ends the busy state
    expect(scope.banner.visible).toBe(false); // and is not an error
    scope.dispose();
  });
});
