// The drain fence the controller uses to scale a pod down without racing a new client:
//   1. the controller sees open == 0 for the idle timeout and POSTs /fence;
//   2. it routes the Service to the activator, then reads GET /fence (or the POST's answer);
//   3. it scales down only if, under the fence, open == 0 and fenceBroken is false.
// A connection that arrives while fenced is still accepted and proxied (no connection is ever
// refused or dropped); it only breaks the fence so the controller aborts and unfences.
//
// The fence compares the proxy's monotonic `opened` counter with its value when the fence was
// set: the data path counts every accepted connection before a byte of it moves, and it needs no
// call into JavaScript per connection (the native data path runs on its own thread).
// Pure state transitions; the stats server holds the current value.

export interface FenceState {
  fenced: boolean;
  /** a client connected while fenced: the scale-down in progress must abort */
  fenceBroken: boolean;
  /** epoch ms of the POST /fence that started the current fence; null when not fenced */
  fencedAtMs: number | null;
  /** the proxy's `opened` counter when the fence was set; null when not fenced */
  openedAtFence: number | null;
}

export const UNFENCED: FenceState = {
  fenced: false,
  fenceBroken: false,
  fencedAtMs: null,
  openedAtFence: null,
};

/**
 * Fencing again while fenced keeps the state, so a retried POST cannot erase a break that happened
 * in between; to start over the controller unfences first.
 */
export function fence(state: FenceState, nowMs: number, opened: number): FenceState {
  if (state.fenced) return state;
  return { fenced: true, fenceBroken: false, fencedAtMs: nowMs, openedAtFence: opened };
}

export function unfence(_state: FenceState): FenceState {
  return UNFENCED;
}

/**
 * The fence as of the proxy's `opened` counter now; `broke` is true only when this observation
 * is the first to see a connection accepted under the fence.
 */
export function observeOpened(state: FenceState, opened: number): { state: FenceState; broke: boolean } {
  if (!state.fenced || state.fenceBroken || state.openedAtFence === null || opened <= state.openedAtFence) {
    return { state, broke: false };
  }
  return { state: { ...state, fenceBroken: true }, broke: true };
}

/** The live fence of one sidecar, reading the proxy's `opened` counter. */
export interface FenceControl {
  state(): FenceState;
  fence(nowMs: number): FenceState;
  unfence(): FenceState;
}

/** `onBroken` runs once per fence, when a read first sees a connection that arrived under it. */
export function createFenceControl(
  opened: () => number,
  onBroken?: (state: FenceState, opened: number) => void,
): FenceControl {
  let current = UNFENCED;
  const observe = () => {
    const now = opened();
    const next = observeOpened(current, now);
    current = next.state;
    if (next.broke) onBroken?.(current, now);
    return current;
  };
  return {
    state: observe,
    fence: (nowMs) => (current = fence(observe(), nowMs, opened())),
    unfence: () => (current = unfence(current)),
  };
}
