import { afterEach, describe, expect, test, vi } from "vitest";
import { type BaseTraits, parseUnitId, renderView, View, type ViewModel, ViewScope } from "../src/lib/view";
import { FakeModel } from "./helpers";

const tick = () => new Promise((r) => setTimeout(r, 0));
const frame = () => new Promise((r) => requestAnimationFrame(() => r(undefined)));

afterEach(() => {
  document.body.removeAttribute("data-jp-theme-light");
  document.body.replaceChildren();
});

function bannerText(scope: ViewScope): string {
  return scope.banner.element.querySelector("[data-testid=error]")?.textContent ?? "";
}

describe("ViewScope", () => {
  test("guard passes arguments through and sends errors to the banner under its source", () => {
    const model = new FakeModel({ error: "" });
    let changes = 0;
    const scope = new ViewScope(model, () => changes++);
    const seen: number[] = [];
    scope.guard("view", (a: number, b: number) => seen.push(a + b))(2, 3);
    expect(seen).toEqual([5]);
    expect(scope.banner.visible).toBe(false);

    scope.guard("run", () => {
      throw new Error("boom");
    })();
    expect(scope.banner.visible).toBe(true);
    expect(bannerText(scope)).toBe("boom");
    expect(changes).toBe(1);
    scope.banner.clear("run");
    expect(scope.banner.visible).toBe(false);
    scope.dispose();
  });

  test("on() listens through a guard until dispose, which also disposes the client", async () => {
    const model = new FakeModel({ error: "" });
    const scope = new ViewScope(model);
    const base = model.listenerCount(); // the request client's msg:custom listener
    expect(base).toBe(1);
    let calls = 0;
    scope.on("change:x", () => calls++);
    scope.on("change:y", () => {
      throw new Error("bad y");
    });
    expect(model.listenerCount()).toBe(base + 2);
    model.set("x", 1);
    expect(calls).toBe(1);
    model.set("y", 1);
    expect(bannerText(scope)).toBe("bad y");

    const pending = scope.client.request("m", {});
    scope.dispose();
    expect(model.listenerCount()).toBe(0);
    await expect(pending).rejects.toThrow(/cancelled/);
    model.set("x", 2);
    expect(calls).toBe(1);
  });

  test("dispose runs the cleanups once, in the order they were added", () => {
    const model = new FakeModel();
    const scope = new ViewScope(model);
    const order: string[] = [];
    scope.onDispose(() => order.push("a"));
    scope.on("change:x", () => {});
    scope.onDispose(() => order.push(`b:${model.listenerCount()}`));
    scope.dispose();
    // The client goes first, then a, then the model listener, then b.
    expect(order).toEqual(["a", "b:0"]);
    scope.dispose();
    expect(order).toEqual(["a", "b:0"]);
  });

  test("followTheme applies the theme a frame later and on changes, until dispose", async () => {
    document.body.setAttribute("data-jp-theme-light", "true");
    const el = document.createElement("div");
    document.body.append(el);
    const scope = new ViewScope(new FakeModel({ error: "" }));
    const seen: string[] = [];
    scope.followTheme(el, (t) => seen.push(t));
    expect(seen).toEqual([]);
    await frame();
    expect(seen).toEqual(["light"]);

    document.body.setAttribute("data-jp-theme-light", "false");
    await tick();
    expect(seen).toEqual(["light", "dark"]);

    scope.dispose();
    document.body.setAttribute("data-jp-theme-light", "true");
    await tick();
    await frame();
    expect(seen).toEqual(["light", "dark"]);
  });

  test("followTheme: dispose before the first frame cancels it; errors go to the banner", async () => {
    document.body.setAttribute("data-jp-theme-light", "true");
    const el = document.createElement("div");
    document.body.append(el);

    const early = new ViewScope(new FakeModel({ error: "" }));
    const seen: string[] = [];
    early.followTheme(el, (t) => seen.push(t));
    early.dispose();
    await frame();
    expect(seen).toEqual([]);

    const failing = new ViewScope(new FakeModel({ error: "" }));
    failing.followTheme(el, () => {
      throw new Error("no theme");
    });
    await frame();
    expect(bannerText(failing)).toBe("no theme");
    failing.dispose();
  });
});

describe("parseUnitId", () => {
  test("an id in 0..count-1, or what is wrong, in the unit's words", () => {
    const spec = { unit: "head", none: "this model has no heads" };
    expect(parseUnitId(" 0 ", 4, spec)).toEqual({ id: 0 });
    expect(parseUnitId("3", 4, spec)).toEqual({ id: 3 });
    expect(parseUnitId("4", 4, spec)).toEqual({ error: "head 4 is out of range: 0..3" });
    expect(parseUnitId("+1", 4, spec)).toEqual({ error: 'head must be a whole number in 0..3, got "+1"' });
    expect(parseUnitId("x", 0, spec)).toEqual({ error: "this model has no heads" });
  });

  test("signed: a leading sign is read, so a negative id is out of range", () => {
    const spec = { unit: "neuron", none: "none", signed: true };
    expect(parseUnitId("+1", 4, spec)).toEqual({ id: 1 });
    expect(parseUnitId("-2", 4, spec)).toEqual({ error: "neuron -2 is out of range: 0..3" });
    expect(parseUnitId("1e2", 4, spec)).toEqual({ error: 'neuron must be a whole number in 0..3, got "1e2"' });
  });
});

describe("export bar", () => {
  class Plain extends View<BaseTraits> {
    constructor(model: ViewModel<BaseTraits>, host: HTMLElement) {
      super(model, host, { className: "plain", testid: "plain" });
      this.root.append(this.banner.element, document.createElement("canvas"));
    }
  }

  test("renderView adds it last; a button asks the kernel for the picture and saves the reply as a file", async () => {
    const model = new FakeModel({ error: "", revision: 1 });
    const host = document.createElement("div");
    document.body.append(host);
    const saved: Array<{ name: string; type: string; size: number }> = [];
    const create = vi.spyOn(URL, "createObjectURL").mockImplementation((blob) => {
      saved.push({ name: "", type: (blob as Blob).type, size: (blob as Blob).size });
      return "blob:picture";
    });
    const click = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function (this: HTMLAnchorElement) {
      saved[saved.length - 1].name = this.download;
    });
    const dispose = renderView("Plain", (m: ViewModel<BaseTraits>, h) => new Plain(m, h)).render({ model, el: host });
    const root = host.querySelector("[data-testid=plain]")!;
    expect(root.lastElementChild?.getAttribute("data-testid")).toBe("export");

    (root.querySelector("[data-testid=export-svg]") as HTMLButtonElement).click();
    const [request] = model.requests("export");
    expect(request.params).toEqual({ format: "svg" });
    const svg = new TextEncoder().encode("<svg/>");
    model.reply(request.id, { filename: "Plain.svg", mime: "image/svg+xml", revision: 1 }, [svg.buffer]);
    await tick();
    expect(saved).toEqual([{ name: "Plain.svg", type: "image/svg+xml", size: svg.byteLength }]);

    (root.querySelector("[data-testid=export-png]") as HTMLButtonElement).click();
    const png = model.requests("export")[1];
    model.replyError(png.id, "NotImplementedError", "Plain has no static picture");
    await tick();
    expect(root.querySelector("[data-testid=error]")?.textContent).toContain("no static picture");
    expect(saved.length).toBe(1);
    create.mockRestore();
    click.mockRestore();
    dispose();
  });
});
