// Whether a fenced target may really go (pure). The scale-down fences every pod's sidecar, routes
// the Service to the activators, waits for the route to settle and reads the fence again; it
// removes the pods only when every sidecar, under its fence, still shows the idle state the
// decision rested on. Anything else aborts: a connection that slipped in (opened moved on, the
// fence broke, one is open or waiting in the accept queue), a sidecar that restarted, one that
// cannot be read or that is not fenced (it restarted, or a fence was refused).
import type { IdleEvidence } from './idle-decision.ts';

/** A sidecar's answer to POST /fence or GET /fence. */
export interface FenceReading {
  bootId: string;
  open: number;
  opened: number;
  backlog?: number;
  fenced: boolean;
  fenceBroken: boolean;
}

export type FenceVerdict = { clean: true } | { clean: false; reason: string };

export function judgeFence(
  evidence: readonly IdleEvidence[],
  readings: ReadonlyMap<string, FenceReading | { error: string }>,
): FenceVerdict {
  if (evidence.length === 0) return { clean: false, reason: 'no idle evidence to check the fence against' };
  for (const e of evidence) {
    const r = readings.get(e.pod);
    if (!r) return { clean: false, reason: `pod ${e.pod}: fence not read` };
    if ('error' in r) return { clean: false, reason: `pod ${e.pod}: ${r.error}` };
    if (r.bootId !== e.bootId) return { clean: false, reason: `pod ${e.pod}: the sidecar restarted` };
    if (!r.fenced) return { clean: false, reason: `pod ${e.pod}: the sidecar is not fenced` };
    if (r.fenceBroken) return { clean: false, reason: `pod ${e.pod}: a client connected under the fence` };
    if (r.open > 0) return { clean: false, reason: `pod ${e.pod}: ${r.open} open connection(s)` };
    if ((r.backlog ?? 0) > 0) {
      return { clean: false, reason: `pod ${e.pod}: ${r.backlog} connection(s) waiting to be accepted` };
    }
    if (r.opened !== e.opened) {
      return {
        clean: false,
        reason: `pod ${e.pod}: ${r.opened - e.opened} connection(s) since the idle clock started`,
      };
    }
  }
  return { clean: true };
}
