/**
 * Training frames reach a view two ways: pushed as events while a run goes, and fetched by request
 * (on render and after each `revision` bump). `FrameOrder` decides which one is newest.
 */

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
