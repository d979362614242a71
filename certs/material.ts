// Turns a decision (rotation-policy.ts) into the Secret data to write. Deterministic apart from the key
// generation and serial numbers of the certificate factory, which tests may replace.
import { createCa, createServingCert } from './generate.ts';
import type { CertKeyPair, CreateCaOptions, CreateServingCertOptions } from './generate.ts';
import { decide, decisionKind, droppablePrevious } from './rotation-policy.ts';
import type { CertPolicy, Decision } from './rotation-policy.ts';
import { SECRET_KEYS, inspectSecret, parseCert, servingProblem } from './secret-inspection.ts';
import type { CertSecretData, ParsedCert, SecretView } from './secret-inspection.ts';
import { isCaCertificate } from './parse.ts';

export interface CertFactory {
  createCa(options: CreateCaOptions): CertKeyPair;
  createServingCert(options: CreateServingCertOptions): CertKeyPair;
}

export const FORGE_FACTORY: CertFactory = { createCa, createServingCert };

export interface BuildOptions {
  now: Date;
  policy: CertPolicy;
  /** Each CA gets this plus its creation time, so old and new CA are told apart in logs and by clients. */
  caCommonName: string;
  factory?: CertFactory;
}

export interface Plan {
  /** The data to write; the input itself when nothing changes. */
  data: CertSecretData | undefined;
  /** The decisions applied, in order (empty when the Secret is reused as it is). */
  steps: Decision[];
  /** The decision that ended planning: reuse, or a step that was held back. */
  final: Decision;
  /** Set when a CA switch was due but held back (its CA is not yet published in every caBundle). */
  postponed?: string;
}

export interface PlanOptions extends BuildOptions {
  /**
   * Whether the API server already trusts `nextCa` (it is in every caBundle); a CA switch waits until
   * it does. Without it, switches are not held back (no caBundle is managed).
   */
  canSwitchTo?: (nextCa: ParsedCert) => boolean;
  maxSteps?: number;
}

/**
 * Applies decisions until the data decides as reuse. Several problems (say a broken bundle and an
 * expired serving cert) are fixed in one write instead of one per check interval.
 */
export function planCertificates(data: CertSecretData | undefined, options: PlanOptions): Plan {
  const steps: Decision[] = [];
  let current = data;
  const maxSteps = options.maxSteps ?? 6;
  const done = (final: Decision, postponed?: string): Plan => {
    // Whatever we hand back must be servable: never a certificate the API server refuses.
    if (steps.length > 0) {
      const problem = unservableReason(current!, options.now, options.policy);
      if (problem !== undefined) {
        throw new Error(`internal error: planned certificates are not servable: ${problem}`);
      }
    }
    return { data: current, steps, final, ...(postponed !== undefined ? { postponed } : {}) };
  };
  for (;;) {
    const decision = decide(current, options.now, options.policy);
    if (decision.action === 'reuse') return done(decision);
    if (decision.action === 'rotate-ca' && decision.step === 'switch' && options.canSwitchTo) {
      const next = inspectSecret(current!, options.now).next;
      if (next && !options.canSwitchTo(next.cert)) return done(decision, decision.reason);
    }
    const previous = steps[steps.length - 1];
    if (
      steps.length >= maxSteps ||
      (previous && decisionKind(previous) === decisionKind(decision) && previous.reason === decision.reason)
    ) {
      throw new Error(
        `internal error: certificate planning does not settle (after ${steps.map(decisionKind).join(', ')}: ${decision.action}: ${decision.reason})`,
      );
    }
    current = applyDecision(current, decision, options);
    steps.push(decision);
  }
}

/** The Secret data after carrying out `decision` (reuse returns `data` unchanged). */
export function applyDecision(
  data: CertSecretData | undefined,
  decision: Decision,
  options: BuildOptions,
): CertSecretData | undefined {
  if (decision.action === 'reuse') return data;
  const { now, policy } = options;
  const factory = options.factory ?? FORGE_FACTORY;
  const view = data ? inspectSecret(data, now) : undefined;
  const rest = otherKeys(data);

  const newCa = () =>
    factory.createCa({
      commonName: `${options.caCommonName} ${now.toISOString().replace(/\.\d{3}Z$/, 'Z')}`,
      validityDays: policy.caValidityDays,
      now,
    });
  const leafFrom = (ca: CertKeyPair) =>
    factory.createServingCert({
      ca,
      dnsNames: policy.dnsNames,
      ipAddresses: policy.ipAddresses,
      validityDays: policy.servingValidityDays,
      now,
    });
  const write = (leaf: CertKeyPair, bundle: string[], caKey: string, nextCaKey?: string): CertSecretData => ({
    ...rest,
    [SECRET_KEYS.cert]: leaf.certPem,
    [SECRET_KEYS.key]: leaf.keyPem,
    [SECRET_KEYS.caBundle]: bundle.join(''),
    [SECRET_KEYS.caKey]: caKey,
    ...(nextCaKey !== undefined ? { [SECRET_KEYS.nextCaKey]: nextCaKey } : {}),
  });
  const pair = (c: { cert: ParsedCert; keyPem: string }): CertKeyPair => ({
    certPem: c.cert.pem,
    keyPem: c.keyPem,
  });
  const currentLeaf = (): CertKeyPair => ({
    certPem: data![SECRET_KEYS.cert]!,
    keyPem: data![SECRET_KEYS.key]!,
  });
  const needActive = (v: SecretView | undefined) => {
    if (!v?.active) throw new Error(`internal error: ${decision.action} without an active CA`);
    return v.active;
  };

  switch (decision.action) {
    case 'create': {
      const ca = newCa();
      return write(leafFrom(ca), [ca.certPem], ca.keyPem);
    }
    case 'repair': {
      if (decision.scope === 'all') {
        const ca = newCa();
        // CA certificates that are still valid stay trusted for an overlap, so replicas that still serve a
        // certificate from them keep working until they pick up the new one.
        const keep = (view?.bundle ?? []).filter(
          (c) => isCaCertificate(c.cert) && c.notBefore <= now && c.notAfter > now,
        );
        return write(leafFrom(ca), [ca.certPem, ...keep.map((c) => c.pem)], ca.keyPem);
      }
      const active = needActive(view);
      const next = view!.next;
      const bundle = [active.cert, ...(next ? [next.cert] : []), ...view!.previous].map((c) => c.pem);
      const leaf = decision.scope === 'serving' ? leafFrom(pair(active)) : currentLeaf();
      return write(leaf, bundle, active.keyPem, next?.keyPem);
    }
    case 'renew-serving': {
      const active = needActive(view);
      const bundle = [active.cert, ...(view!.next ? [view!.next.cert] : []), ...view!.previous].map(
        (c) => c.pem,
      );
      return write(leafFrom(pair(active)), bundle, active.keyPem, view!.next?.keyPem);
    }
    case 'rotate-ca': {
      const active = needActive(view);
      if (decision.step === 'add-next') {
        const next = newCa();
        const bundle = [active.cert.pem, next.certPem, ...view!.previous.map((c) => c.pem)];
        return write(currentLeaf(), bundle, active.keyPem, next.keyPem);
      }
      if (decision.step === 'switch') {
        const next = view!.next;
        if (!next) throw new Error('internal error: CA switch without a next CA');
        const bundle = [next.cert, active.cert, ...view!.previous].map((c) => c.pem);
        return write(leafFrom(pair(next)), bundle, next.keyPem);
      }
      const leaf = parseCert(data![SECRET_KEYS.cert]!, SECRET_KEYS.cert);
      const drop = new Set(droppablePrevious(view!, leaf.notBefore, now, policy).map((c) => c.fingerprint));
      const bundle = [
        active.cert,
        ...(view!.next ? [view!.next.cert] : []),
        ...view!.previous.filter((c) => !drop.has(c.fingerprint)),
      ].map((c) => c.pem);
      return write(currentLeaf(), bundle, active.keyPem, view!.next?.keyPem);
    }
  }
}

/** Why `data` cannot be served as it is, or undefined when it can (used before adopting a Secret). */
export function unservableReason(data: CertSecretData, now: Date, policy: CertPolicy): string | undefined {
  const view = inspectSecret(data, now);
  if (!view.active) return view.caProblem?.reason ?? 'no usable CA';
  return servingProblem(data, view.active.cert, now, policy)?.reason;
}

function otherKeys(data: CertSecretData | undefined): Record<string, string> {
  const ours = new Set<string>(Object.values(SECRET_KEYS));
  return Object.fromEntries(Object.entries(data ?? {}).filter(([k]) => !ours.has(k)));
}
