// CA and webhook serving-certificate generation with node-forge.
//
// Keys are RSA 2048. node-forge can only put RSA keys in X.509 certificates (no ECDSA; its Ed25519 support
// does not extend to certificates), so ECDSA P-256 is not an option; RSA 2048 is also what cert-controller,
// Pepr and cert-manager issue by default, so every client the apiserver might use accepts it.
//
// forge builds, encodes and parses the certificates. Two RSA private-key operations go to node:crypto
// (OpenSSL) because forge's pure-JS bignum code is too slow for them: key generation takes seconds in
// pure JS (forge itself only delegates to node:crypto unless forge.options.usePureJavaScript is set, a
// global any module can flip), and signing is orders of magnitude slower than native, worst under Jest's
// vm sandbox, where the bignum inner loop's global lookups are slow.
import {
  X509Certificate,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes as cryptoRandomBytes,
  sign as nativeSign,
} from 'node:crypto';
import { errorMessage } from '../kube/errors.ts';
import type { KeyObject } from 'node:crypto';
import forge from 'node-forge';
import {
  CertificateError,
  MIN_RSA_BITS,
  canonicalIp,
  isCaCertificate,
  parseCertificate,
  parseRsaPrivateKey,
  rsaPublicKeyOf,
  samePublicKey,
  toLf,
} from './parse.ts';

export interface CertKeyPair {
  certPem: string;
  /** PKCS#8 ("BEGIN PRIVATE KEY"), unencrypted. */
  keyPem: string;
}

/** Hooks for the only impure inputs, so tests can pin them. */
export interface GenerationSources {
  /** Defaults to the current time. */
  now?: Date;
  /** An existing RSA private key (PEM) to certify instead of generating a new one. */
  keyPem?: string;
  /** Source of serial-number bytes; defaults to node:crypto randomBytes. */
  randomBytes?: (size: number) => Uint8Array;
}

export interface CreateCaOptions extends GenerationSources {
  commonName: string;
  /** Defaults to 3650 (cert-controller's 10 years). */
  validityDays?: number;
}

export interface CreateServingCertOptions extends GenerationSources {
  /** Issuer. If certPem holds a bundle, the first certificate is the issuer. */
  ca: CertKeyPair;
  dnsNames: readonly string[];
  ipAddresses?: readonly string[];
  /** Defaults to 365. Capped at the CA's notAfter, since a leaf cannot outlive its issuer usefully. */
  validityDays?: number;
}

export const DEFAULT_CA_VALIDITY_DAYS = 3650;
export const DEFAULT_SERVING_VALIDITY_DAYS = 365;
/** notBefore is back-dated by this much so nodes whose clocks lag a little still accept a fresh cert. */
export const CLOCK_SKEW_MS = 5 * 60 * 1000;
/** 127 random bits: well above the 64 the CA/Browser Forum asks for, and within RFC 5280's 20 octets. */
export const SERIAL_BYTES = 16;
const RSA_BITS = 2048;
// @types/node-forge declares valueTagClass as asn1.Class, but forge stores the universal tag number.
const UTF8_TAG = forge.asn1.Type.UTF8 as unknown as forge.asn1.Class;
const DAY_MS = 24 * 60 * 60 * 1000;
// GeneralizedTime cannot represent later instants.
const MAX_DATE_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

/** Generates a fresh RSA 2048 private key with OpenSSL (tens of ms, versus forge's seconds). */
export function generateKeyPem(): string {
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: RSA_BITS,
    publicExponent: 0x10001,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return privateKey;
}

/** The in-cluster names a Service is reachable by; the apiserver dials `<svc>.<ns>.svc`. */
export function serviceDnsNames(
  service: string,
  namespace: string,
  clusterDomain = 'cluster.local',
): string[] {
  if (!isDnsLabel(service)) {
    throw new CertificateError(`serviceDnsNames: service name ${JSON.stringify(service)} is not a DNS label`);
  }
  if (!isDnsLabel(namespace)) {
    throw new CertificateError(`serviceDnsNames: namespace ${JSON.stringify(namespace)} is not a DNS label`);
  }
  if (!isDnsName(clusterDomain)) {
    throw new CertificateError(
      `serviceDnsNames: cluster domain ${JSON.stringify(clusterDomain)} is not a DNS name`,
    );
  }
  return [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.${clusterDomain}`,
  ];
}

/** A self-signed CA that may sign end-entity certificates only (pathLen 0). */
export function createCa(options: CreateCaOptions): CertKeyPair {
  const { commonName } = options;
  if (typeof commonName !== 'string' || commonName.trim() === '') {
    throw new CertificateError('createCa: commonName must be a non-empty string');
  }
  const validityDays = options.validityDays ?? DEFAULT_CA_VALIDITY_DAYS;
  const window = validityWindow('createCa', options.now, validityDays);
  const key = loadOrGenerateKey('createCa', options.keyPem);

  const cert = forge.pki.createCertificate();
  cert.publicKey = key.publicKey;
  cert.serialNumber = randomSerialHex('createCa', options.randomBytes);
  cert.validity.notBefore = window.notBefore;
  cert.validity.notAfter = window.notAfter;
  const subject = [utf8Attribute('commonName', commonName)];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  return { certPem: signCertificate(cert, key.signer), keyPem: key.pem };
}

/** A TLS server certificate for the webhook, signed by `ca`. */
export function createServingCert(options: CreateServingCertOptions): CertKeyPair {
  const fn = 'createServingCert';
  if (typeof options.ca !== 'object' || options.ca === null) {
    throw new CertificateError(`${fn}: ca must be { certPem, keyPem }`);
  }
  const dnsNames = normalizeDnsNames(fn, options.dnsNames);
  const ipAddresses = normalizeIps(fn, options.ipAddresses ?? []);
  const cn = dnsNames[0] ?? ipAddresses[0];
  if (cn === undefined) {
    throw new CertificateError(`${fn}: at least one DNS name or IP address is required`);
  }

  const caCert = parseCertificate(options.ca.certPem, `${fn}: ca.certPem`);
  const caKey = loadKey(`${fn}: ca.keyPem`, options.ca.keyPem);
  if (!isCaCertificate(caCert)) {
    throw new CertificateError(`${fn}: ca.certPem is not a CA certificate (basicConstraints cA is not true)`);
  }
  if (!samePublicKey(rsaPublicKeyOf(caCert, `${fn}: ca.certPem`), caKey.publicKey)) {
    throw new CertificateError(`${fn}: ca.keyPem does not match the public key in ca.certPem`);
  }

  const validityDays = options.validityDays ?? DEFAULT_SERVING_VALIDITY_DAYS;
  const window = validityWindow(fn, options.now, validityDays);
  const caNotAfter = caCert.validity.notAfter;
  if (window.now < caCert.validity.notBefore || window.now > caNotAfter) {
    throw new CertificateError(
      `${fn}: the CA certificate is not valid at ${window.now.toISOString()} ` +
        `(valid ${caCert.validity.notBefore.toISOString()} to ${caNotAfter.toISOString()})`,
    );
  }
  const notAfter = window.notAfter > caNotAfter ? new Date(caNotAfter.getTime()) : window.notAfter;

  const key = loadOrGenerateKey(fn, options.keyPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = key.publicKey;
  cert.serialNumber = randomSerialHex(fn, options.randomBytes);
  cert.validity.notBefore = window.notBefore;
  cert.validity.notAfter = notAfter;
  cert.setSubject([utf8Attribute('commonName', cn)]);
  cert.setIssuer(issuerAttributes(fn, caCert));
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [
        ...dnsNames.map((value) => ({ type: 2, value })),
        ...ipAddresses.map((ip) => ({ type: 7, ip })),
      ],
    },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: authorityKeyId(caCert) },
  ]);
  return { certPem: signCertificate(cert, caKey.signer), keyPem: key.pem };
}

// RFC 1123 label, as Kubernetes uses for namespaces and (more strictly, RFC 1035) Service names.
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

function isDnsLabel(value: unknown): value is string {
  return typeof value === 'string' && LABEL.test(value);
}

function isDnsName(name: string): boolean {
  return name.length <= 253 && name.split('.').every((label) => LABEL.test(label));
}

function normalizeDnsNames(fn: string, names: unknown): string[] {
  if (!Array.isArray(names)) throw new CertificateError(`${fn}: dnsNames must be an array of strings`);
  const out: string[] = [];
  for (const name of names as unknown[]) {
    if (typeof name !== 'string') {
      throw new CertificateError(`${fn}: dnsNames entries must be strings, got ${JSON.stringify(name)}`);
    }
    // A client dialling an IP matches it against iPAddress SANs only, so an IP here would be dead weight.
    if (canonicalIp(name) !== undefined) {
      throw new CertificateError(`${fn}: ${JSON.stringify(name)} is an IP address; pass it in ipAddresses`);
    }
    const base = name.startsWith('*.') ? name.slice(2) : name;
    if (!isDnsName(base)) {
      throw new CertificateError(`${fn}: ${JSON.stringify(name)} is not a valid DNS name`);
    }
    // DNS names compare case-insensitively, so "Svc" and "svc" would be one SAN written twice.
    if (!out.some((seen) => seen.toLowerCase() === name.toLowerCase())) out.push(name);
  }
  return out;
}

function normalizeIps(fn: string, ips: unknown): string[] {
  if (!Array.isArray(ips)) throw new CertificateError(`${fn}: ipAddresses must be an array of strings`);
  const out: string[] = [];
  for (const ip of ips as unknown[]) {
    const canonical = typeof ip === 'string' ? canonicalIp(ip) : undefined;
    if (canonical === undefined) {
      throw new CertificateError(`${fn}: ${JSON.stringify(ip)} is not a valid IPv4 or IPv6 address`);
    }
    if (!out.includes(canonical)) out.push(canonical);
  }
  return out;
}

function validityWindow(
  fn: string,
  now: Date | undefined,
  validityDays: number,
): { now: Date; notBefore: Date; notAfter: Date } {
  if (now !== undefined && !(now instanceof Date && Number.isFinite(now.getTime()))) {
    throw new CertificateError(`${fn}: now must be a valid Date`);
  }
  if (typeof validityDays !== 'number' || !Number.isFinite(validityDays) || validityDays <= 0) {
    throw new CertificateError(
      `${fn}: validityDays must be a positive number, got ${JSON.stringify(validityDays)}`,
    );
  }
  // X.509 times have whole-second precision; truncating here makes notAfter exactly now + validity.
  const nowMs = Math.floor((now ?? new Date()).getTime() / 1000) * 1000;
  const notAfterMs = nowMs + Math.round(validityDays * DAY_MS);
  if (notAfterMs > MAX_DATE_MS) {
    throw new CertificateError(`${fn}: validityDays ${validityDays} ends after the year 9999`);
  }
  return { now: new Date(nowMs), notBefore: new Date(nowMs - CLOCK_SKEW_MS), notAfter: new Date(notAfterMs) };
}

function randomSerialHex(fn: string, source: ((size: number) => Uint8Array) | undefined): string {
  const bytes = Uint8Array.from((source ?? cryptoRandomBytes)(SERIAL_BYTES));
  if (bytes.length !== SERIAL_BYTES) {
    throw new CertificateError(`${fn}: randomBytes returned ${bytes.length} bytes, expected ${SERIAL_BYTES}`);
  }
  // Clearing the top bit keeps the DER INTEGER positive; setting the next one keeps the first octet
  // non-zero, so the encoding is minimal (OpenSSL rejects padded INTEGERs) and never a zero serial.
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return Buffer.from(bytes).toString('hex');
}

interface LoadedKey {
  publicKey: forge.pki.rsa.PublicKey;
  signer: KeyObject;
  /** PKCS#8, whatever form the caller supplied, so Secrets always look the same. */
  pem: string;
}

function loadOrGenerateKey(fn: string, keyPem: string | undefined): LoadedKey {
  return loadKey(`${fn}: keyPem`, keyPem ?? generateKeyPem());
}

function loadKey(what: string, keyPem: unknown): LoadedKey {
  // forge parses first: it gives the clear errors for non-RSA, encrypted or garbage input.
  const key = parseRsaPrivateKey(keyPem, what);
  const bits = key.n.bitLength();
  if (bits < MIN_RSA_BITS) {
    throw new CertificateError(`${what} is a ${bits}-bit RSA key; at least ${MIN_RSA_BITS} is required`);
  }
  let signer: KeyObject;
  try {
    signer = createPrivateKey(keyPem as string);
  } catch (err) {
    throw new CertificateError(`${what}: OpenSSL cannot load this RSA key (${errorMessage(err)})`, {
      cause: err,
    });
  }
  return {
    publicKey: forge.pki.setRsaPublicKey(key.n, key.e),
    signer,
    pem: signer.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

/** Signs `cert` (SHA-256 with RSA) and returns its PEM. */
function signCertificate(cert: forge.pki.Certificate, signer: KeyObject): string {
  // cert.sign() sets the signature algorithm, encodes the TBSCertificate into cert.tbsCertificate and
  // then calls key.sign(md); this stand-in key signs those exact bytes with OpenSSL instead of forge.
  const nativeKey = {
    sign: (): string => {
      const tbs = Buffer.from(forge.asn1.toDer(cert.tbsCertificate).getBytes(), 'binary');
      return nativeSign('sha256', tbs, signer).toString('binary');
    },
  };
  cert.sign(nativeKey as unknown as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  const pem = toLf(forge.pki.certificateToPem(cert));
  // Guards the stand-in against a forge change in what cert.sign() prepares before calling it.
  if (!new X509Certificate(pem).verify(createPublicKey(signer))) {
    throw new Error('internal error: the signed certificate does not verify with its issuer key');
  }
  return pem;
}

function utf8Attribute(name: string, value: string): forge.pki.CertificateField {
  // RFC 5280 wants UTF8String; forge's default PrintableString cannot hold '*', '_' or non-ASCII.
  return { name, value, valueTagClass: UTF8_TAG };
}

/**
 * The CA's subject as attributes that forge re-encodes to the identical bytes. Go (the apiserver) chains
 * by comparing the leaf's issuer and the CA's subject byte-for-byte, so "equivalent" is not enough.
 */
function issuerAttributes(fn: string, caCert: forge.pki.Certificate): forge.pki.CertificateField[] {
  let attrs: forge.pki.CertificateField[];
  try {
    // forge parses UTF8String values to raw bytes but UTF-8-encodes them again on output.
    attrs = caCert.subject.attributes.map((attr) =>
      attr.valueTagClass === UTF8_TAG && typeof attr.value === 'string'
        ? { ...attr, value: forge.util.decodeUtf8(attr.value) }
        : attr,
    );
  } catch (err) {
    throw new CertificateError(`${fn}: the CA subject holds invalid UTF-8`, { cause: err });
  }
  const reencoded = forge.asn1.toDer(forge.pki.distinguishedNameToAsn1({ attributes: attrs })).getBytes();
  const original = subjectDer(caCert);
  if (original !== undefined && original !== reencoded) {
    // E.g. multi-valued RDNs or string types forge cannot round-trip; a CA from createCa never hits this.
    throw new CertificateError(
      `${fn}: the CA subject uses an encoding node-forge cannot reproduce as issuer`,
    );
  }
  return attrs;
}

function subjectDer(cert: forge.pki.Certificate): string | undefined {
  const fields = cert.tbsCertificate?.value;
  if (!Array.isArray(fields)) return undefined;
  // TBSCertificate: [0] version (explicit tag, present for v3), serial, signature, issuer, validity, subject.
  const hasVersion = fields[0]?.tagClass === forge.asn1.Class.CONTEXT_SPECIFIC;
  const subject = fields[hasVersion ? 5 : 4];
  return subject ? forge.asn1.toDer(subject).getBytes() : undefined;
}

function authorityKeyId(caCert: forge.pki.Certificate): string {
  // Reuse the CA's own SKI so a CA generated elsewhere (other hashing method) still links up.
  const ski = caCert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | undefined;
  if (ski?.subjectKeyIdentifier) return forge.util.hexToBytes(ski.subjectKeyIdentifier);
  return caCert.generateSubjectKeyIdentifier().getBytes();
}
