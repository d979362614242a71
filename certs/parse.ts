// Internal helpers shared by generate.ts and inspect.ts. node-forge reports bad input with messages such
// as "Cannot read properties of undefined (reading 'type')" or throws plain objects; everything here turns
// that into a CertificateError that names the offending argument.
import { createPrivateKey } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';

import { errorMessage } from '../kube/errors.ts';

/**
 * Malformed or unsupported certificate/key input. A distinct class so that a caller (e.g. a rotator
 * reading a Secret) can treat "the stored material is unusable, regenerate it" differently from a bug.
 */
export class CertificateError extends Error {
  override name = 'CertificateError';
}

const CERT_PEM_TYPES = new Set(['CERTIFICATE', 'X509 CERTIFICATE', 'TRUSTED CERTIFICATE']);
const KEY_PEM_TYPES = new Set(['PRIVATE KEY', 'RSA PRIVATE KEY']);

// Weaker keys are refused by OpenSSL at its default security level on many distributions, so a
// smaller injected key would produce a certificate that fails only at handshake time.
export const MIN_RSA_BITS = 2048;

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (value instanceof Uint8Array) return 'Buffer/Uint8Array (decode it to a string first)';
  return typeof value;
}

function decodePem(pem: unknown, what: string): forge.pem.ObjectPEM[] {
  if (typeof pem !== 'string') {
    throw new CertificateError(`${what}: expected a PEM string, got ${typeName(pem)}`);
  }
  if (pem.trim() === '') throw new CertificateError(`${what}: PEM string is empty`);
  let blocks: forge.pem.ObjectPEM[];
  try {
    blocks = forge.pem.decode(pem);
  } catch (err) {
    throw new CertificateError(`${what}: malformed PEM (${errorMessage(err)})`, { cause: err });
  }
  if (blocks.length === 0) {
    throw new CertificateError(`${what}: no PEM block found (expected "-----BEGIN ...-----")`);
  }
  return blocks;
}

function pemTypes(blocks: forge.pem.ObjectPEM[]): string {
  return blocks.map((b) => `"${b.type}"`).join(', ');
}

/** Every certificate in `pem`, in order; a bundle (e.g. old + new CA during rotation) is allowed. */
export function parseCertificates(pem: unknown, what: string): forge.pki.Certificate[] {
  const blocks = decodePem(pem, what);
  const certBlocks = blocks.filter((b) => CERT_PEM_TYPES.has(b.type));
  if (certBlocks.length === 0) {
    throw new CertificateError(`${what}: no CERTIFICATE PEM block found (got ${pemTypes(blocks)})`);
  }
  return certBlocks.map((block, i) => {
    const label = certBlocks.length > 1 ? `${what} (certificate #${i + 1})` : what;
    try {
      return forge.pki.certificateFromAsn1(forge.asn1.fromDer(block.body));
    } catch (err) {
      const msg = errorMessage(err);
      if (msg.includes('OID is not RSA')) {
        throw new CertificateError(`${label}: only certificates with RSA keys are supported (node-forge)`, {
          cause: err,
        });
      }
      throw new CertificateError(`${label}: not a valid X.509 certificate (${msg})`, { cause: err });
    }
  });
}

export function parseCertificate(pem: unknown, what: string): forge.pki.Certificate {
  // parseCertificates never returns an empty array; the fallback only satisfies the type checker.
  const [first] = parseCertificates(pem, what);
  if (!first) throw new CertificateError(`${what}: no certificate found`);
  return first;
}

export function parseRsaPrivateKey(pem: unknown, what: string): forge.pki.rsa.PrivateKey {
  const blocks = decodePem(pem, what);
  const block = blocks.find((b) => KEY_PEM_TYPES.has(b.type));
  if (!block) {
    const hint = blocks.some((b) => b.type === 'ENCRYPTED PRIVATE KEY')
      ? 'encrypted keys are not supported'
      : blocks.some((b) => b.type === 'EC PRIVATE KEY')
        ? 'only RSA keys are supported'
        : 'expected "PRIVATE KEY" or "RSA PRIVATE KEY"';
    throw new CertificateError(`${what}: no usable private key PEM block (got ${pemTypes(blocks)}; ${hint})`);
  }
  if ((block.procType as { type?: string } | undefined)?.type === 'ENCRYPTED') {
    throw new CertificateError(`${what}: encrypted private keys are not supported`);
  }
  let key: forge.pki.rsa.PrivateKey;
  try {
    key = forge.pki.privateKeyFromAsn1(forge.asn1.fromDer(block.body));
  } catch (err) {
    const type = keyTypeOf(block);
    if (type !== undefined && type !== 'rsa') {
      throw new CertificateError(`${what}: is an ${type.toUpperCase()} key; only RSA keys are supported`, {
        cause: err,
      });
    }
    throw new CertificateError(`${what}: not a valid RSA private key (${errorMessage(err)})`, { cause: err });
  }
  // A PKCS#8 block holding a non-RSA key can come back without a modulus instead of throwing.
  if (!key || typeof key.n?.bitLength !== 'function') {
    throw new CertificateError(`${what}: not an RSA private key (only RSA keys are supported)`);
  }
  return key;
}

/** Only for error messages: forge cannot tell what a non-RSA PKCS#8 key is, OpenSSL can. */
function keyTypeOf(block: forge.pem.ObjectPEM): string | undefined {
  try {
    if (block.type === 'RSA PRIVATE KEY') return 'rsa';
    const der = Buffer.from(block.body, 'binary');
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).asymmetricKeyType;
  } catch {
    return undefined;
  }
}

export function rsaPublicKeyOf(cert: forge.pki.Certificate, what: string): forge.pki.rsa.PublicKey {
  const key = cert.publicKey as Partial<forge.pki.rsa.PublicKey>;
  if (!key.n || !key.e) throw new CertificateError(`${what}: certificate does not hold an RSA public key`);
  return key as forge.pki.rsa.PublicKey;
}

type RsaNumbers = Pick<forge.pki.rsa.PublicKey, 'n' | 'e'>;

export function samePublicKey(a: RsaNumbers, b: RsaNumbers): boolean {
  return a.n.equals(b.n) && a.e.equals(b.e);
}

export function isCaCertificate(cert: forge.pki.Certificate): boolean {
  // By OID: forge also names the deprecated 2.5.29.10 "basicConstraints", which RFC 5280 does not honour.
  const bc = cert.getExtension({ id: '2.5.29.19' } as unknown as { name: string }) as
    { cA?: boolean } | undefined;
  return bc?.cA === true;
}

/**
 * The form used for SAN comparison and output, or undefined when `ip` is not an IP literal.
 * IPv6 goes through the WHATWG URL serializer because forge's IPv6 parser only understands plain hex
 * groups: an IPv4-embedded address such as ::ffff:10.0.0.1 would otherwise be mis-encoded or rejected.
 */
export function canonicalIp(ip: string): string | undefined {
  const family = isIP(ip);
  if (family === 4) return ip;
  // Zone ids (fe80::1%eth0) pass isIP but have no meaning in a certificate.
  if (family !== 6 || ip.includes('%')) return undefined;
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

/** forge emits CRLF line endings; LF keeps Secrets, diffs and `kubectl get -o yaml` readable. */
export function toLf(pem: string): string {
  return pem.replace(/\r\n/g, '\n');
}
