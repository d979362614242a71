// Whether an autoscaled target may scale to zero now, decided from what its sidecars reported
// (pure). The rules, in order:
// - a pod that is not Ready yet keeps the clock from starting (its start is no idle time);
// - unknown means active: a pod without a fresh reading this leadership term (sidecar
//   unreachable, stats too old, not read yet) blocks the scale-down;
// - a pod with an open connection, or one waiting in the sidecar's accept queue, is active, even
//   when the connection carries no traffic (a long quiet RUN step sends nothing);
// - otherwise the target is idle since the persisted idleSince, but only while every pod still
//   reports the boot id and the opened count recorded then: a sidecar that restarted, a pod that
//   came or went, or a connection that was opened and closed in between starts the clock again.
//   So a controller restart neither restarts the clock (the record is on the object) nor shortens
//   it (the record is believed only when fresh readings confirm it).
import type { ConditionReason } from '../../api/conditions.ts';
import { REASON } from '../../api/conditions.ts';
import { formatDuration } from '../../api/duration.ts';

/** What one sidecar's /stats said (the fields the decision needs). */
export interface SidecarStats {
  bootId: string;
  open: number;
  opened: number;
  /** connections in the accept queue the proxy has not taken yet (absent from older sidecars) */
  backlog?: number;
  lastActivity: string | null;
}

export type SidecarReading =
  { ok: true; stats: SidecarStats; readAtMs: number } | { ok: false; error: string; readAtMs: number };

export interface IdleEvidence {
  pod: string;
  bootId: string;
  opened: number;
}

/** The part of status.autoscaling the decision reads and rewrites. */
export interface IdleRecord {
  idleSince?: string;
  idleEvidence?: IdleEvidence[];
}

export interface IdleInput {
  nowMs: number;
  idleTimeoutMs: number;
  /** names of the target's pods that run (not terminating) */
  pods: string[];
  /** those of them that are not Ready: clients cannot reach them through the Service yet */
  notReady?: readonly string[];
  /** readings taken in this leadership term, by pod name */
  readings: ReadonlyMap<string, SidecarReading>;
  /** readings older than this are treated as missing */
  maxReadingAgeMs: number;
  record: IdleRecord | undefined;
}

export interface IdleDecision {
  scaleDown: boolean;
  reason: ConditionReason;
  /** for the Active condition and the log */
  message: string;
  /** what status.autoscaling should hold from now on */
  record: IdleRecord;
  /** the latest client activity any sidecar reported, ISO time */
  lastActivity: string | undefined;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

function sameEvidence(a: IdleEvidence[] | undefined, b: IdleEvidence[]): boolean {
  if (!a || a.length !== b.length) return false;
  const byPod = new Map(a.map((e) => [e.pod, e]));
  return b.every((e) => {
    const old = byPod.get(e.pod);
    return old !== undefined && old.bootId === e.bootId && old.opened === e.opened;
  });
}

function latest(times: (string | null | undefined)[]): string | undefined {
  let best: string | undefined;
  for (const t of times) if (t && (best === undefined || Date.parse(t) > Date.parse(best))) best = t;
  return best;
}

/** A rounded, readable span: 3m12s, 45s, 1h5m. */
export function humanSpan(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h > 0) return `${h}h${m ? `${m}m` : ''}`;
  return `${m}m${rest ? `${rest}s` : ''}`;
}

export function decideIdle(input: IdleInput): IdleDecision {
  const { nowMs, record } = input;
  const pods = [...input.pods].sort();
  const fresh: { pod: string; stats: SidecarStats }[] = [];
  const activities: (string | null)[] = [];
  for (const pod of pods) {
    const reading = input.readings.get(pod);
    if (reading?.ok) activities.push(reading.stats.lastActivity);
  }
  const lastActivity = latest(activities);
  const keep = (reason: ConditionReason, message: string, next: IdleRecord = record ?? {}) => ({
    scaleDown: false,
    reason,
    message,
    record: next,
    lastActivity,
  });

  if (pods.length === 0) return keep(REASON.AwaitingFreshStats, 'no running pod to read');
  // A pod that is not Ready yet has had no chance of a client: its time is not idle time.
  const starting = pods.find((p) => input.notReady?.includes(p));
  if (starting)
    return keep(REASON.AwaitingFreshStats, `pod ${starting} is not ready: the idle clock waits for it`);
  for (const pod of pods) {
    const reading = input.readings.get(pod);
    if (!reading) {
      return keep(REASON.AwaitingFreshStats, `sidecar of pod ${pod} not read yet: treated as active`);
    }
    const age = nowMs - reading.readAtMs;
    if (age > input.maxReadingAgeMs) {
      return keep(
        REASON.SidecarUnreachable,
        `last reading of pod ${pod} is ${humanSpan(age)} old: treated as active`,
      );
    }
    if (!reading.ok) {
      return keep(
        REASON.SidecarUnreachable,
        `sidecar of pod ${pod} unreachable (${reading.error}): treated as active`,
      );
    }
    fresh.push({ pod, stats: reading.stats });
  }

  const open = fresh.reduce((n, r) => n + r.stats.open, 0);
  const queued = fresh.reduce((n, r) => n + (r.stats.backlog ?? 0), 0);
  if (open + queued > 0) {
    const parts = [open && plural(open, 'open connection'), queued && `${queued} waiting to be accepted`];
    return keep(REASON.OpenConnections, parts.filter(Boolean).join(', '), {});
  }

  const evidence = fresh.map((r) => ({ pod: r.pod, bootId: r.stats.bootId, opened: r.stats.opened }));
  const continues = record?.idleSince !== undefined && sameEvidence(record.idleEvidence, evidence);
  const idleSince = continues ? record!.idleSince! : new Date(nowMs).toISOString();
  const restarted =
    !continues &&
    record?.idleEvidence?.some((old) => evidence.some((e) => e.pod === old.pod && e.bootId !== old.bootId));
  const next: IdleRecord = { idleSince, idleEvidence: evidence };
  const idleFor = nowMs - Date.parse(idleSince);
  const timeout = formatDuration(input.idleTimeoutMs);
  if (idleFor >= input.idleTimeoutMs) {
    return {
      scaleDown: true,
      reason: REASON.ScalingDown,
      message: `idle ${humanSpan(idleFor)} of ${timeout}: scaling to zero`,
      record: next,
      lastActivity,
    };
  }
  const until = new Date(Date.parse(idleSince) + input.idleTimeoutMs).toISOString();
  if (restarted) {
    return keep(
      REASON.SidecarRestarted,
      `a sidecar restarted since the idle clock started: idle again since ${idleSince}, scales to zero at ${until} (timeout ${timeout})`,
      next,
    );
  }
  // A message that stays the same for the whole idle period: one status write, not one per read.
  return keep(
    REASON.IdleBelowTimeout,
    `no connection since ${idleSince}: scales to zero at ${until} (timeout ${timeout})`,
    next,
  );
}
