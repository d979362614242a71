// What to do with the webhook's certificate Secret, as a pure function of its data, the time and the
// policy. Every path that talks to the API server (rotator.ts) asks this first, so the rules for
// reuse, renewal, CA rotation and repair live in one place and are tested without a cluster. What
// the Secret holds and what is wrong with it comes from secret-inspection.ts (which also describes
// the Secret's layout).
//
// CA rotation runs in three steps, each one a separate decision at a separate time, so that the
// API server always trusts the CA of every certificate any replica may still be serving:
//   add-next        ca.crt = [active, next]; tls.crt still from the active CA
//   switch          (caOverlap after add-next) next becomes active, tls.crt re-issued from it;
//                   ca.crt = [new active, old]
//   drop-previous   (caOverlap after the switch) ca.crt = [active]
// The start times are read from the certificates themselves (notBefore of the next CA and of the
// leaf), so the state survives restarts and is the same for every replica without extra bookkeeping.
import { DAY_MS, formatCertDuration } from './duration.ts';
import { CLOCK_SKEW_MS } from './generate.ts';
import { CertificateError } from './parse.ts';
import type {
  CertSecretData,
  ParsedCert,
  RepairProblem,
  RequiredNames,
  SecretView,
} from './secret-inspection.ts';
import { SECRET_KEYS, inspectSecret, parseCert, servingProblem } from './secret-inspection.ts';

/** The names to cover (dnsNames, ipAddresses) come from RequiredNames. */
export interface CertPolicy extends RequiredNames {
  caValidityDays: number;
  servingValidityDays: number;
  /** Renew the serving certificate when it expires within this; also sets when the CA rotation starts. */
  renewBeforeDays: number;
  /** How long caBundle holds both CAs before the switch, and both again after it. */
  caOverlapDays: number;
}

export const DEFAULT_VALIDITY = {
  caValidityDays: 3650,
  servingValidityDays: 365,
  renewBeforeDays: 90,
  caOverlapDays: 30,
} as const;

export type RotateStep = 'add-next' | 'switch' | 'drop-previous';

export type Decision =
  | { action: 'reuse'; reason: string }
  | { action: 'create'; reason: string }
  | { action: 'renew-serving'; reason: string }
  | { action: 'rotate-ca'; step: RotateStep; reason: string }
  /**
   * scope all: new CA and serving cert (still-valid old CA certificates stay in ca.crt for an overlap);
   * serving: new serving cert from the active CA; bundle: rewrite ca.crt / drop ca-next.key.
   */
  | { action: 'repair'; scope: 'all' | 'serving' | 'bundle'; problem: RepairProblem; reason: string };

/** A short label for metrics and logs: reuse, create, renew-serving, rotate-ca/switch, repair/serving. */
export function decisionKind(decision: Decision): string {
  if (decision.action === 'rotate-ca') return `rotate-ca/${decision.step}`;
  if (decision.action === 'repair') return `repair/${decision.scope}`;
  return decision.action;
}

/** Throws a CertificateError when the policy would churn certificates or rotate without overlap. */
export function validatePolicy(policy: CertPolicy): void {
  const { caValidityDays: ca, servingValidityDays: serving, renewBeforeDays: renew } = policy;
  const overlap = policy.caOverlapDays;
  for (const [name, value] of Object.entries({ ca, serving, renew, overlap })) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new CertificateError(`certificate policy: ${name} must be a positive duration`);
    }
  }
  if (renew >= serving) {
    throw new CertificateError(
      `certificate policy: renew-before (${days(renew)}) must be shorter than the serving validity (${days(serving)}), ` +
        'or every check would renew',
    );
  }
  if (renew + 2 * overlap >= ca) {
    throw new CertificateError(
      `certificate policy: the CA validity (${days(ca)}) must exceed renew-before + 2 x CA overlap ` +
        `(${days(renew + 2 * overlap)}): the CA rotation starts that long before the CA expires`,
    );
  }
  if (policy.dnsNames.length === 0 && policy.ipAddresses.length === 0) {
    throw new CertificateError('certificate policy: at least one DNS name or IP address is required');
  }
}

// X.509 times are whole seconds (generate.ts truncates), so an instant read back from a certificate may
// be up to a second early; waits measured from one are stretched by that much to never end too soon.
const TIME_PRECISION_MS = 1000;

/** What to do with the certificate Secret; `data` undefined means the Secret does not exist. */
export function decide(data: CertSecretData | undefined, now: Date, policy: CertPolicy): Decision {
  if (data === undefined) return { action: 'create', reason: 'the Secret does not exist' };
  const view = inspectSecret(data, now);
  if (!view.active) {
    const { problem, reason } = view.caProblem ?? { problem: 'garbage' as const, reason: 'no usable CA' };
    return { action: 'repair', scope: 'all', problem, reason };
  }
  const active = view.active.cert;
  const overlapMs = policy.caOverlapDays * DAY_MS;
  const activeLeftMs = active.notAfter.getTime() - now.getTime();

  if (view.nextProblem !== undefined) {
    return { action: 'repair', scope: 'bundle', problem: 'next-ca-invalid', reason: view.nextProblem };
  }
  if (view.bundleNoise.length > 0) {
    return {
      action: 'repair',
      scope: 'bundle',
      problem: 'bundle-garbage',
      reason: view.bundleNoise.join('; '),
    };
  }

  if (view.next) {
    const publishedAt = view.next.cert.notBefore.getTime() + CLOCK_SKEW_MS + TIME_PRECISION_MS;
    if (now.getTime() >= publishedAt + overlapMs) {
      return {
        action: 'rotate-ca',
        step: 'switch',
        reason: `the next CA has been in ${SECRET_KEYS.caBundle} since ${iso(new Date(publishedAt))}, the CA overlap of ${days(policy.caOverlapDays)}`,
      };
    }
    if (activeLeftMs <= overlapMs) {
      return {
        action: 'rotate-ca',
        step: 'switch',
        reason: `the active CA expires at ${iso(active.notAfter)}, before the CA overlap would end`,
      };
    }
  }

  const leafProblem = servingProblem(data, active, now, policy);
  if (leafProblem) return { action: 'repair', scope: 'serving', ...leafProblem };
  const leaf = parseCert(data[SECRET_KEYS.cert]!, SECRET_KEYS.cert);

  const renewBeforeMs = policy.renewBeforeDays * DAY_MS;
  const leafLeftMs = leaf.notAfter.getTime() - now.getTime();
  if (leafLeftMs <= renewBeforeMs) {
    // A serving cert cannot outlive its CA; when the CA ends soon, renewing again and again would only
    // churn, so renew only when it buys real lifetime and otherwise leave it to the CA rotation.
    const renewedNotAfter = Math.min(
      now.getTime() + policy.servingValidityDays * DAY_MS,
      active.notAfter.getTime(),
    );
    if (renewedNotAfter - leaf.notAfter.getTime() >= (policy.servingValidityDays * DAY_MS) / 100) {
      return {
        action: 'renew-serving',
        reason: `${SECRET_KEYS.cert} expires at ${iso(leaf.notAfter)}, within the renew-before window of ${days(policy.renewBeforeDays)}`,
      };
    }
  }

  if (!view.next && activeLeftMs <= renewBeforeMs + 2 * overlapMs) {
    return {
      action: 'rotate-ca',
      step: 'add-next',
      reason: `the active CA expires at ${iso(active.notAfter)}, within renew-before + 2 x CA overlap (${days(policy.renewBeforeDays + 2 * policy.caOverlapDays)})`,
    };
  }

  if (view.previous.length > 0) {
    const expired = view.previous.filter((c) => c.notAfter <= now);
    const leafIssuedAt = leaf.notBefore.getTime() + CLOCK_SKEW_MS + TIME_PRECISION_MS;
    if (expired.length > 0 || now.getTime() >= leafIssuedAt + overlapMs) {
      return {
        action: 'rotate-ca',
        step: 'drop-previous',
        reason:
          expired.length === view.previous.length
            ? `${expired.length} previous CA certificate(s) in ${SECRET_KEYS.caBundle} expired`
            : `${SECRET_KEYS.cert} has come from the active CA since ${iso(new Date(leafIssuedAt))}, the CA overlap of ${days(policy.caOverlapDays)}`,
      };
    }
  }

  const pending = view.next ? '; CA rotation pending (next CA published)' : '';
  return {
    action: 'reuse',
    reason: `${SECRET_KEYS.cert} valid until ${iso(leaf.notAfter)}, CA until ${iso(active.notAfter)}${pending}`,
  };
}

/** Previous CA certificates that drop-previous removes at `now`. */
export function droppablePrevious(
  view: SecretView,
  leafNotBefore: Date,
  now: Date,
  policy: CertPolicy,
): ParsedCert[] {
  const overlapDone =
    now.getTime() >=
    leafNotBefore.getTime() + CLOCK_SKEW_MS + TIME_PRECISION_MS + policy.caOverlapDays * DAY_MS;
  return view.previous.filter((c) => overlapDone || c.notAfter <= now);
}

function iso(date: Date): string {
  return date.toISOString();
}

function days(value: number): string {
  return formatCertDuration(Math.round(value * DAY_MS));
}
