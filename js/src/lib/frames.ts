/**
 * Training frames reach a view two ways: pushed as events while a run goes, and fetched by request
 * (on render and after each `revision` bump). `FrameOrder` decides which one is newest;
 * `followFrames` wires both ways in for a view.
 */

import type { Response } from "./protocol";
import type { ViewScope } from "./view";

/**
 * Which frame is newest. A pushed frame is the newest state when it comes: it is always drawn, and
 * stamped with the revision the view has then (a run's end bumps `revision` before it pushes its
 * final frame, on the same channel). A fetched frame carries the revision its reply was computed
 * for, and is drawn only if it is not older than the newest pushed frame: a newer revision, or
 * the same one and at least its step. (Within one revision the step only grows, except when a run
 * restarts: a fetched frame of the new run may then be dropped, and the new run's pushes follow.)
 */
export class FrameOrder {
  private pushed: { revision: number; step: number } | null = null;

  push(revision: number, step: number): void {
    this.pushed = { revision, step };
  }

  current(revision: number, step: number): boolean {
    const p = this.pushed;
    return p === null || revision > p.revision || (revision === p.revision && step >= p.step);
  }
}

/**
 * A training view's frames, both ways in: the `frame` event the kernel pushes while a run goes and
 * the `frame` resource (coalesced, fetched on render and on each `revision` bump), ordered by
 * `FrameOrder`. However many arrive, `draw` runs at most once per animation frame, with the newest.
 * `decode` may return null for a reply with nothing to draw; what it throws goes to the banner
 * under "frame", cleared by the next good frame.
 */
export function followFrames<F extends { step: number }>(
  scope: ViewScope<any>,
  spec: { decode: (reply: Response) => F | null; draw: (frame: F) => void },
): void {
  const order = new FrameOrder();
  let pending: F | null = null;
  let raf = 0;
  const take = (frame: F) => {
    scope.banner.clear("frame");
    pending = frame;
    if (raf !== 0) return;
    raf = requestAnimationFrame(
      scope.guard("view", () => {
        raf = 0;
        const f = pending;
        pending = null;
        if (f !== null) spec.draw(f);
      }),
    );
  };
  scope.onDispose(() => cancelAnimationFrame(raf));
  scope.onDispose(
    scope.client.onEvent(
      "frame",
      scope.guard("frame", (reply) => {
        const frame = spec.decode(reply);
        if (frame === null) return;
        order.push(Number(scope.model.get("revision")) || 0, frame.step);
        take(frame);
      }),
    ),
  );
  scope.resource({
    method: "frame",
    policy: "coalesce",
    decode: spec.decode,
    draw: (frame, { revision }) => {
      if (frame !== null && order.current(revision, frame.step)) take(frame);
    },
  });
}
