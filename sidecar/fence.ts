// The drain fence the controller uses to scale a pod down without racing a new client:
//   1. the controller sees open == 0 for the idle timeout and POSTs /fence (optionally with the
//      handoff address, where the sidecar sends clients that still arrive once it is stopping);
//   2. it routes the Service to the activator, then reads GET /fence (or the POST's answer);
//   3. it scales down only if the fence is clean: under the fence, open == 0, backlog == 0 and
//      fenceBroken is false (the `clean` field of the answers says exactly that).
// A connection that arrives while fenced is still accepted and proxied (no connection is ever
// refused or dropped); it only breaks the fence so the controller aborts and unfences.
//
// The fence breaks when the proxy's monotonic `opened` counter passes its value when the fence
// was set (the data path counts every accepted connection before a byte of it moves, and needs no
// call into JavaScript per connection: the native data path runs on its own thread), or when a
// read under the fence sees a client waiting in the listen backlog (listen-backlog.ts): that
// client is connected, and will be accepted under the fence. A client that was waiting in the
// backlog when the fence was set breaks it too, since it cannot be told apart from one that came
// a moment later.
// Pure state transitions; the stats server holds the current value.
import type { HostPort } from '../flags/options.ts';

export interface FenceState {
  fenced: boolean;
  /** a client connected while fenced: the scale-down in progress must abort */
  fenceBroken: boolean;
  /** epoch ms of the POST /fence that started the current fence; null when not fenced */
  fencedAtMs: number | null;
  /** the proxy's `opened` counter when the fence was set; null when not fenced */
  openedAtFence: number | null;
  /** where new connections go once the sidecar is stopping (POST /fence?handoff=); null: nowhere */
  handoff: HostPort | null;
}

export const UNFENCED: FenceState = {
  fenced: false,
  fenceBroken: false,
  fencedAtMs: null,
  openedAtFence: null,
  handoff: null,
};

/**
 * Fencing again while fenced keeps the state, so a retried POST cannot erase a break that happened
 * in between; to start over the controller unfences first. A handoff address given with the POST
 * is recorded (replacing an earlier one); one not given leaves the recorded one alone.
 */
export function fence(state: FenceState, nowMs: number, opened: number, handoff?: HostPort): FenceState {
  const next = state.fenced
    ? state
    : { fenced: true, fenceBroken: false, fencedAtMs: nowMs, openedAtFence: opened, handoff: state.handoff };
  return handoff === undefined ? next : { ...next, handoff };
}

/** Clears the fence and the handoff address. */
export function unfence(_state: FenceState): FenceState {
  return UNFENCED;
}

/** What the proxy shows at one read: its `opened` counter and the clients in its listen backlog. */
export interface Arrivals {
  opened: number;
  backlog: number;
}

/**
 * The fence as of `arrivals`; `broke` is true only when this observation is the first to see a
 * connection accepted under the fence, or a client waiting to be accepted.
 */
export function observe(state: FenceState, arrivals: Arrivals): { state: FenceState; broke: boolean } {
  if (!state.fenced || state.fenceBroken || state.openedAtFence === null) return { state, broke: false };
  if (arrivals.opened <= state.openedAtFence && arrivals.backlog === 0) return { state, broke: false };
  return { state: { ...state, fenceBroken: true }, broke: true };
}

/** The fence allows a scale-down: fenced, not broken, nothing open and nobody waiting to be accepted. */
export function isClean(state: FenceState, open: number, backlog: number): boolean {
  return state.fenced && !state.fenceBroken && open === 0 && backlog === 0;
}

/** The live fence of one sidecar, reading the proxy's `opened` counter and its listen backlog. */
export interface FenceControl {
  state(): FenceState;
  fence(nowMs: number, handoff?: HostPort): FenceState;
  unfence(): FenceState;
}

/**
 * `arrivals` reads the proxy (Proxy.counts) only while a fence stands unbroken, or to set one.
 * `onBroken` runs once per fence, when a read first sees a connection that arrived under it.
 */
export function createFenceControl(
  arrivals: () => Arrivals,
  onBroken?: (state: FenceState, arrivals: Arrivals) => void,
): FenceControl {
  let current = UNFENCED;
  const check = () => {
    if (!current.fenced || current.fenceBroken) return current;
    const now = arrivals();
    const next = observe(current, now);
    current = next.state;
    if (next.broke) onBroken?.(current, now);
    return current;
  };
  return {
    state: check,
    fence: (nowMs, handoff) => {
      // a fence that stands sees what came before this retry
      check();
      current = fence(current, nowMs, arrivals().opened, handoff);
      // a client already waiting to be accepted breaks a new fence at once
      return check();
    },
    unfence: () => (current = unfence(current)),
  };
}
