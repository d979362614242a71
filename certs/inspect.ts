// Read-only questions about certificates already on hand (e.g. from a Secret), answered with node-forge.
// Malformed input throws CertificateError; a well-formed certificate that fails a check returns false.
import forge from 'node-forge';
import {
  CertificateError,
  canonicalIp,
  isCaCertificate,
  parseCertificate,
  parseCertificates,
  parseRsaPrivateKey,
  rsaPublicKeyOf,
  samePublicKey,
} from './parse.ts';

export interface CertDescription {
  /** Subject CN, if the subject has one. */
  commonName: string | undefined;
  dnsNames: string[];
  /** Canonical text form (IPv6 compressed, lower case). */
  ipAddresses: string[];
  notBefore: Date;
  notAfter: Date;
  /** Lower-case hex, as encoded (no sign octet is present for our serials). */
  serialHex: string;
  isCa: boolean;
}

interface ParsedAltName {
  type: number;
  value?: string;
  ip?: string;
}

/** Describes the first certificate in `pem` (for a tls.crt holding a chain, that is the leaf). */
export function describeCert(pem: string): CertDescription {
  const cert = parseCertificate(pem, 'describeCert');
  const cn = cert.subject.getField('CN') as { value?: unknown; valueTagClass?: number } | null;
  const san = cert.getExtension('subjectAltName') as { altNames?: ParsedAltName[] } | undefined;
  const altNames = san?.altNames ?? [];
  return {
    commonName: typeof cn?.value === 'string' ? attributeText(cn.value, cn.valueTagClass) : undefined,
    dnsNames: altNames
      .filter((n) => n.type === 2 && typeof n.value === 'string')
      .map((n) => n.value as string),
    ipAddresses: altNames
      .filter((n) => n.type === 7 && typeof n.ip === 'string')
      .map((n) => canonicalIp(n.ip as string) ?? (n.ip as string)),
    notBefore: cert.validity.notBefore,
    notAfter: cert.validity.notAfter,
    serialHex: cert.serialNumber.toLowerCase(),
    isCa: isCaCertificate(cert),
  };
}

/**
 * Whether the first certificate in `leafPem` was issued by a CA in `caPem` and is valid at `now`.
 * `caPem` may be a bundle, as a caBundle is while a CA rotation overlaps old and new.
 * The CA itself is also checked (validity, basicConstraints/keyUsage), not just trusted blindly.
 */
export function verifyChain(leafPem: string, caPem: string, now: Date = new Date()): boolean {
  const leaf = parseCertificate(leafPem, 'verifyChain: leafPem');
  const cas = parseCertificates(caPem, 'verifyChain: caPem');
  assertValidDate('verifyChain', now);
  return cas.some((ca) => {
    try {
      return forge.pki.verifyCertificateChain(forge.pki.createCaStore([ca]), [leaf, ca], {
        validityCheckDate: now,
      });
    } catch {
      // forge reports a failed check by throwing `{ message, error }`. Both inputs already parsed, so any
      // throw here means "forge cannot establish this chain", which callers should treat as untrusted.
      return false;
    }
  });
}

/** Whether `keyPem` is the private key for the first certificate in `certPem`. */
export function keyMatchesCert(keyPem: string, certPem: string): boolean {
  const key = parseRsaPrivateKey(keyPem, 'keyMatchesCert: keyPem');
  const cert = parseCertificate(certPem, 'keyMatchesCert: certPem');
  return samePublicKey(rsaPublicKeyOf(cert, 'keyMatchesCert: certPem'), key);
}

/** True when the certificate's notAfter is at most `ms` after `now` (including already expired). */
export function expiresWithin(pem: string, ms: number, now: Date = new Date()): boolean {
  const cert = parseCertificate(pem, 'expiresWithin');
  if (typeof ms !== 'number' || Number.isNaN(ms) || ms < 0) {
    throw new CertificateError(`expiresWithin: ms must be a non-negative number, got ${JSON.stringify(ms)}`);
  }
  assertValidDate('expiresWithin', now);
  return cert.validity.notAfter.getTime() - now.getTime() <= ms;
}

function assertValidDate(fn: string, now: unknown): void {
  if (!(now instanceof Date) || !Number.isFinite(now.getTime())) {
    throw new CertificateError(`${fn}: now must be a valid Date`);
  }
}

function attributeText(raw: string, tag: number | undefined): string {
  // forge leaves UTF8String values as raw UTF-8 bytes.
  if (tag !== (forge.asn1.Type.UTF8 as number)) return raw;
  try {
    return forge.util.decodeUtf8(raw);
  } catch {
    return raw;
  }
}
