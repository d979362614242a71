// The webhook's certificate Secret taken apart: which PEM blocks it holds, which CA is active and
// which is next, and whether the serving certificate would be accepted. Never decides what to do
// about it (rotation-policy.ts does), so the rules of judging a Secret and of acting on it change
// apart, and the material builder (material.ts) reuses the parsed view instead of parsing again.
//
// Secret layout (type kubernetes.io/tls), all values PEM text:
//   tls.crt      serving certificate (the leaf only), issued by the active CA
//   tls.key      its private key (PKCS#8)
//   ca.crt       the trust bundle published as caBundle: the active CA first, then the next CA while a
//                rotation is pending, then previous CAs that are kept until every replica serves a
//                certificate from the active one
//   ca.key       private key of the active CA; which certificate in ca.crt is "active" is found by key
//   ca-next.key  private key of the next CA, present only between "add next CA" and "switch"
// Any other keys are left alone.
import { X509Certificate } from 'node:crypto';
import { errorMessage } from '../kube/errors.ts';
import { createSecureContext } from 'node:tls';
import forge from 'node-forge';

import { describeCert } from './inspect.ts';
import {
  CertificateError,
  MIN_RSA_BITS,
  canonicalIp,
  isCaCertificate,
  parseCertificate,
  parseRsaPrivateKey,
  rsaPublicKeyOf,
  samePublicKey,
} from './parse.ts';

export const SECRET_KEYS = {
  cert: 'tls.crt',
  key: 'tls.key',
  caBundle: 'ca.crt',
  caKey: 'ca.key',
  nextCaKey: 'ca-next.key',
} as const;

/** Secret data decoded to text (base64 is the store's business). */
export type CertSecretData = Readonly<Record<string, string>>;

export type RepairProblem =
  | 'missing'
  | 'garbage'
  | 'key-mismatch'
  | 'not-a-ca'
  | 'weak-ca-key'
  | 'ca-expired'
  | 'ca-not-yet-valid'
  | 'next-ca-invalid'
  | 'bundle-garbage'
  | 'not-a-serving-cert'
  | 'weak-serving-cert'
  | 'not-from-ca'
  | 'wrong-sans'
  | 'serving-expired'
  | 'serving-not-yet-valid';

/** Names the serving certificate must cover (it may cover more). */
export interface RequiredNames {
  dnsNames: readonly string[];
  ipAddresses: readonly string[];
}

export interface ParsedCert {
  pem: string;
  cert: forge.pki.Certificate;
  x509: X509Certificate;
  notBefore: Date;
  notAfter: Date;
  fingerprint: string;
}

export interface CaPair {
  cert: ParsedCert;
  keyPem: string;
}

/** The Secret's data taken apart; what decide() judges and the builder (material.ts) reuses. */
export interface SecretView {
  /** Parseable certificates of ca.crt, duplicates removed, in stored order. */
  bundle: ParsedCert[];
  /** Why ca.crt needs rewriting even though its usable part is fine (garbage blocks, duplicates). */
  bundleNoise: string[];
  active?: CaPair;
  /** Why there is no usable active CA. */
  caProblem?: { problem: RepairProblem; reason: string };
  next?: CaPair;
  nextProblem?: string;
  /** Bundle certificates that are neither active nor next. */
  previous: ParsedCert[];
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;
// Go (the API server) refuses SHA-1 signatures since Go 1.18; only SHA-2 RSA signatures pass everywhere.
const SHA2_RSA = new Set(['1.2.840.113549.1.1.11', '1.2.840.113549.1.1.12', '1.2.840.113549.1.1.13']);

/** Every PEM block of `text`, verbatim (one unparseable block must not spoil the others). */
export function pemBlocks(text: string): { type: string; pem: string }[] {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ type: m[1]!, pem: `${m[0]}\n` }));
}

export function parseCert(pem: string, what: string): ParsedCert {
  const cert = parseCertificate(pem, what);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pem);
  } catch (err) {
    throw new CertificateError(`${what}: OpenSSL cannot parse it (${errorMessage(err)})`, { cause: err });
  }
  return {
    pem: pemBlocks(pem).find((b) => b.type === 'CERTIFICATE')?.pem ?? pem,
    cert,
    x509,
    notBefore: cert.validity.notBefore,
    notAfter: cert.validity.notAfter,
    fingerprint: x509.fingerprint256,
  };
}

function keyMatches(keyPem: string, cert: ParsedCert, what: string): boolean {
  const key = parseRsaPrivateKey(keyPem, what);
  return samePublicKey(rsaPublicKeyOf(cert.cert, what), key);
}

function rsaBits(cert: ParsedCert): number {
  return (cert.cert.publicKey as forge.pki.rsa.PublicKey).n.bitLength();
}

function issuedBy(leaf: ParsedCert, ca: ParsedCert): boolean {
  try {
    return leaf.x509.checkIssued(ca.x509) && leaf.x509.verify(ca.x509.publicKey);
  } catch {
    return false;
  }
}

/** Takes the CA side of the Secret apart; never throws. */
export function inspectSecret(data: CertSecretData, now: Date): SecretView {
  const view: SecretView = { bundle: [], bundleNoise: [], previous: [] };
  const bundleText = data[SECRET_KEYS.caBundle];
  if (!bundleText?.trim()) {
    view.caProblem = { problem: 'missing', reason: `${SECRET_KEYS.caBundle} is missing or empty` };
    return view;
  }
  const blocks = pemBlocks(bundleText);
  blocks.forEach((block, i) => {
    const what = `${SECRET_KEYS.caBundle} block #${i + 1}`;
    if (block.type !== 'CERTIFICATE') {
      view.bundleNoise.push(`${what} is a ${block.type}, not a CERTIFICATE`);
      return;
    }
    try {
      const cert = parseCert(block.pem, what);
      if (view.bundle.some((c) => c.fingerprint === cert.fingerprint)) {
        view.bundleNoise.push(`${what} is a duplicate`);
      } else {
        view.bundle.push(cert);
      }
    } catch (err) {
      view.bundleNoise.push(errorMessage(err));
    }
  });
  if (view.bundle.length === 0) {
    const why = view.bundleNoise[0] ?? 'no PEM block found';
    view.caProblem = {
      problem: 'garbage',
      reason: `${SECRET_KEYS.caBundle} holds no usable certificate: ${why}`,
    };
    return view;
  }

  const caKey = data[SECRET_KEYS.caKey];
  if (!caKey?.trim()) {
    view.caProblem = {
      problem: 'missing',
      reason: `${SECRET_KEYS.caKey} is missing, so no serving certificate can be issued`,
    };
    return view;
  }
  let activeCert: ParsedCert | undefined;
  try {
    activeCert = view.bundle.find((c) => keyMatches(caKey, c, SECRET_KEYS.caKey));
  } catch (err) {
    view.caProblem = { problem: 'garbage', reason: errorMessage(err) };
    return view;
  }
  if (!activeCert) {
    view.caProblem = {
      problem: 'key-mismatch',
      reason: `${SECRET_KEYS.caKey} matches none of the ${view.bundle.length} certificate(s) in ${SECRET_KEYS.caBundle}`,
    };
    return view;
  }
  const activeProblem = caUnusable(activeCert, caKey, now);
  if (activeProblem) {
    view.caProblem = activeProblem;
    return view;
  }
  view.active = { cert: activeCert, keyPem: caKey };

  const nextKey = data[SECRET_KEYS.nextCaKey];
  if (nextKey !== undefined) {
    try {
      const nextCert = view.bundle.find(
        (c) => c !== activeCert && keyMatches(nextKey, c, SECRET_KEYS.nextCaKey),
      );
      if (!nextCert) {
        view.nextProblem = `${SECRET_KEYS.nextCaKey} matches no certificate in ${SECRET_KEYS.caBundle} other than the active CA`;
      } else {
        const problem = caUnusable(nextCert, nextKey, now);
        if (problem) view.nextProblem = `next CA: ${problem.reason}`;
        else view.next = { cert: nextCert, keyPem: nextKey };
      }
    } catch (err) {
      view.nextProblem = errorMessage(err);
    }
  }
  view.previous = view.bundle.filter((c) => c !== activeCert && c !== view.next?.cert);
  return view;
}

function caUnusable(ca: ParsedCert, keyPem: string, now: Date): SecretView['caProblem'] {
  const subject = `CA "${ca.x509.subject.replace(/\n/g, ', ')}"`;
  if (!isCaCertificate(ca.cert)) {
    return {
      problem: 'not-a-ca',
      reason: `${subject} is not a CA certificate (basicConstraints cA is not true)`,
    };
  }
  const bits = parseRsaPrivateKey(keyPem, 'CA key').n.bitLength();
  if (bits < MIN_RSA_BITS) {
    return {
      problem: 'weak-ca-key',
      reason: `${subject} has a ${bits}-bit key; at least ${MIN_RSA_BITS} is required`,
    };
  }
  if (ca.notAfter <= now) {
    return { problem: 'ca-expired', reason: `${subject} expired at ${iso(ca.notAfter)}` };
  }
  if (ca.notBefore > now) {
    return { problem: 'ca-not-yet-valid', reason: `${subject} is not valid before ${iso(ca.notBefore)}` };
  }
  return undefined;
}

/**
 * Why the serving certificate in `data` would be refused, judged against `ca` (the active CA): an
 * undefined answer means the API server (Go) and the HTTPS server (OpenSSL) both accept it.
 */
export function servingProblem(
  data: CertSecretData,
  ca: ParsedCert,
  now: Date,
  policy: RequiredNames,
): { problem: RepairProblem; reason: string } | undefined {
  const certPem = data[SECRET_KEYS.cert];
  const keyPem = data[SECRET_KEYS.key];
  if (!certPem?.trim()) return { problem: 'missing', reason: `${SECRET_KEYS.cert} is missing or empty` };
  if (!keyPem?.trim()) return { problem: 'missing', reason: `${SECRET_KEYS.key} is missing or empty` };
  let leaf: ParsedCert;
  try {
    leaf = parseCert(certPem, SECRET_KEYS.cert);
    if (!keyMatches(keyPem, leaf, SECRET_KEYS.key)) {
      return { problem: 'key-mismatch', reason: `${SECRET_KEYS.key} is not the key of ${SECRET_KEYS.cert}` };
    }
  } catch (err) {
    return { problem: 'garbage', reason: errorMessage(err) };
  }
  if (isCaCertificate(leaf.cert)) {
    return { problem: 'not-a-serving-cert', reason: `${SECRET_KEYS.cert} is a CA certificate` };
  }
  const bits = rsaBits(leaf);
  if (bits < MIN_RSA_BITS) {
    return { problem: 'weak-serving-cert', reason: `${SECRET_KEYS.cert} has a ${bits}-bit key` };
  }
  if (!SHA2_RSA.has(leaf.cert.signatureOid)) {
    return {
      problem: 'weak-serving-cert',
      reason: `${SECRET_KEYS.cert} is signed with ${forge.pki.oids[leaf.cert.signatureOid] ?? leaf.cert.signatureOid}, which Go refuses`,
    };
  }
  if (!issuedBy(leaf, ca)) {
    return { problem: 'not-from-ca', reason: `${SECRET_KEYS.cert} was not issued by the active CA` };
  }
  const described = describeCert(certPem);
  const dns = new Set(described.dnsNames.map((n) => n.toLowerCase()));
  const ips = new Set(described.ipAddresses);
  const missing = [
    ...policy.dnsNames.filter((n) => !dns.has(n.toLowerCase())),
    ...policy.ipAddresses.filter((ip) => !ips.has(canonicalIp(ip) ?? ip)),
  ];
  if (missing.length > 0) {
    return { problem: 'wrong-sans', reason: `${SECRET_KEYS.cert} does not cover ${missing.join(', ')}` };
  }
  if (leaf.notAfter <= now) {
    return { problem: 'serving-expired', reason: `${SECRET_KEYS.cert} expired at ${iso(leaf.notAfter)}` };
  }
  if (leaf.notBefore > now) {
    return {
      problem: 'serving-not-yet-valid',
      reason: `${SECRET_KEYS.cert} is not valid before ${iso(leaf.notBefore)}`,
    };
  }
  try {
    // OpenSSL's own verdict (e.g. "ee key too small" at higher security levels) before anyone serves it.
    createSecureContext({ cert: certPem, key: keyPem, minVersion: 'TLSv1.2' });
  } catch (err) {
    return {
      problem: 'weak-serving-cert',
      reason: `OpenSSL refuses ${SECRET_KEYS.cert}: ${errorMessage(err)}`,
    };
  }
  return undefined;
}

function iso(date: Date): string {
  return date.toISOString();
}
