// The drain fence the controller uses to scale a pod down without racing a new client:
//   1. the controller sees open == 0 for the idle timeout and POSTs /fence;
//   2. it routes the Service to the activator, then reads GET /fence (or the POST's answer);
//   3. it scales down only if, under the fence, open == 0 and fenceBroken is false.
// A connection that arrives while fenced is still accepted and proxied (no connection is ever
// refused or dropped); it only breaks the fence so the controller aborts and unfences.
// Pure state transitions; the stats server holds the current value.

export interface FenceState {
  fenced: boolean;
  /** a client connected while fenced: the scale-down in progress must abort */
  fenceBroken: boolean;
  /** epoch ms of the POST /fence that started the current fence; null when not fenced */
  fencedAtMs: number | null;
}

export const UNFENCED: FenceState = { fenced: false, fenceBroken: false, fencedAtMs: null };

/**
 * Fencing again while fenced keeps the state, so a retried POST cannot erase a break that happened
 * in between; to start over the controller unfences first.
 */
export function fence(state: FenceState, nowMs: number): FenceState {
  if (state.fenced) return state;
  return { fenced: true, fenceBroken: false, fencedAtMs: nowMs };
}

export function unfence(_state: FenceState): FenceState {
  return UNFENCED;
}

/** A client connection was accepted; `broke` is true only for the first one under a fence. */
export function connectionAccepted(state: FenceState): { state: FenceState; broke: boolean } {
  if (!state.fenced || state.fenceBroken) return { state, broke: false };
  return { state: { ...state, fenceBroken: true }, broke: true };
}

/** The live fence of one sidecar: the proxy reports accepted connections, the stats server fences. */
export interface FenceControl {
  state(): FenceState;
  fence(nowMs: number): FenceState;
  unfence(): FenceState;
  /** the proxy's onAccept hook; returns true when this connection broke the fence */
  connectionAccepted(): boolean;
}

export function createFenceControl(): FenceControl {
  let current = UNFENCED;
  return {
    state: () => current,
    fence: (nowMs) => (current = fence(current, nowMs)),
    unfence: () => (current = unfence(current)),
    connectionAccepted() {
      const next = connectionAccepted(current);
      current = next.state;
      return next.broke;
    },
  };
}
