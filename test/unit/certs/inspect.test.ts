// certs/inspect.ts answers questions about certificates read back from a Secret; bad input must come back
// as a CertificateError that names the argument, and a failed check as `false`.
import { X509Certificate, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';

import forge from 'node-forge';

import {
  CertificateError,
  createCa,
  createServingCert,
  describeCert,
  expiresWithin,
  generateKeyPem,
  keyMatchesCert,
  verifyChain,
} from '../../../certs/index.ts';
import type { CertKeyPair } from '../../../certs/index.ts';

const DAY = 24 * 60 * 60 * 1000;
const NOW = new Date('2030-06-15T12:00:00Z');

let caKey: string;
let leafKey: string;
let ca: CertKeyPair;
let otherCa: CertKeyPair;
let leaf: CertKeyPair;

beforeAll(() => {
  [caKey, leafKey] = [generateKeyPem(), generateKeyPem()];
  ca = createCa({ commonName: 'inspect CA', keyPem: caKey, now: NOW });
  otherCa = createCa({ commonName: 'inspect CA', keyPem: generateKeyPem(), now: NOW });
  leaf = createServingCert({
    ca,
    dnsNames: ['wh.ns.svc'],
    ipAddresses: ['10.1.2.3'],
    keyPem: leafKey,
    now: NOW,
  });
});

describe('describeCert', () => {
  it('reports the fields a rotator needs, consistent with OpenSSL', () => {
    const d = describeCert(leaf.certPem);
    const x = new X509Certificate(leaf.certPem);
    expect(d).toEqual({
      commonName: 'wh.ns.svc',
      dnsNames: ['wh.ns.svc'],
      ipAddresses: ['10.1.2.3'],
      notBefore: x.validFromDate,
      notAfter: x.validToDate,
      serialHex: x.serialNumber.toLowerCase(),
      isCa: false,
    });
    expect(describeCert(ca.certPem)).toMatchObject({ commonName: 'inspect CA', dnsNames: [], isCa: true });
  });

  it('describes the first certificate of a chain', () => {
    expect(describeCert(leaf.certPem + ca.certPem).commonName).toBe('wh.ns.svc');
  });

  it('accepts CRLF line endings', () => {
    expect(describeCert(leaf.certPem.replace(/\n/g, '\r\n')).commonName).toBe('wh.ns.svc');
  });
});

describe('verifyChain', () => {
  it('accepts a leaf issued by the CA while both are valid', () => {
    expect(verifyChain(leaf.certPem, ca.certPem, NOW)).toBe(true);
  });

  it('rejects a leaf from another CA with the same name', () => {
    expect(verifyChain(leaf.certPem, otherCa.certPem, NOW)).toBe(false);
  });

  it('accepts a CA bundle that contains the issuer, in either order', () => {
    expect(verifyChain(leaf.certPem, otherCa.certPem + ca.certPem, NOW)).toBe(true);
    expect(verifyChain(leaf.certPem, ca.certPem + otherCa.certPem, NOW)).toBe(true);
  });

  it('checks validity at the given time', () => {
    expect(verifyChain(leaf.certPem, ca.certPem, new Date(NOW.getTime() - DAY))).toBe(false);
    expect(verifyChain(leaf.certPem, ca.certPem, new Date(NOW.getTime() + 366 * DAY))).toBe(false);
  });

  it('rejects a certificate whose signature was tampered with', () => {
    const der = new X509Certificate(leaf.certPem).raw;
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    const tampered = `-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----\n`;
    expect(verifyChain(tampered, ca.certPem, NOW)).toBe(false);
  });

  it('does not trust an "issuer" that is not a CA', () => {
    // A certificate signed by the serving key, as if the serving certificate were an intermediate.
    const cert = forge.pki.createCertificate();
    const issuer = forge.pki.certificateFromPem(leaf.certPem);
    const leafForgeKey = forge.pki.privateKeyFromPem(leaf.keyPem);
    cert.publicKey = forge.pki.setRsaPublicKey(leafForgeKey.n, leafForgeKey.e);
    cert.serialNumber = '01';
    cert.validity.notBefore = new Date(NOW.getTime() - DAY);
    cert.validity.notAfter = new Date(NOW.getTime() + DAY);
    cert.setSubject([{ name: 'commonName', value: 'evil' }]);
    cert.setIssuer(issuer.subject.attributes);
    // forge's own RSA signing is ~3 s under Jest, so sign the TBSCertificate with OpenSSL.
    const signer = createPrivateKey(leaf.keyPem);
    const nativeKey = {
      sign: () =>
        sign(
          'sha256',
          Buffer.from(forge.asn1.toDer(cert.tbsCertificate).getBytes(), 'binary'),
          signer,
        ).toString('binary'),
    };
    cert.sign(nativeKey as unknown as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
    const evil = forge.pki.certificateToPem(cert);
    expect(new X509Certificate(evil).verify(new X509Certificate(leaf.certPem).publicKey)).toBe(true);
    expect(verifyChain(evil, leaf.certPem, NOW)).toBe(false);
  });

  it('throws a CertificateError for unusable input', () => {
    expect(() => verifyChain('garbage', ca.certPem)).toThrow(CertificateError);
    expect(() => verifyChain('garbage', ca.certPem)).toThrow(/verifyChain: leafPem: malformed PEM/);
    expect(() => verifyChain(leaf.certPem, '')).toThrow(/verifyChain: caPem: PEM string is empty/);
    expect(() => verifyChain(leaf.certPem, ca.keyPem)).toThrow(/caPem: no CERTIFICATE PEM block found/);
    expect(() => verifyChain(leaf.certPem, ca.certPem, new Date(Number.NaN))).toThrow(
      /now must be a valid Date/,
    );
  });
});

describe('keyMatchesCert', () => {
  it('pairs a key with its certificate only', () => {
    expect(keyMatchesCert(leaf.keyPem, leaf.certPem)).toBe(true);
    expect(keyMatchesCert(ca.keyPem, ca.certPem)).toBe(true);
    expect(keyMatchesCert(ca.keyPem, leaf.certPem)).toBe(false);
    expect(keyMatchesCert(leaf.keyPem, ca.certPem)).toBe(false);
  });

  it('accepts PKCS#1 ("RSA PRIVATE KEY") as well as PKCS#8', () => {
    const pkcs1 = createPrivateKey(leaf.keyPem).export({ type: 'pkcs1', format: 'pem' }).toString();
    expect(pkcs1).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
    expect(keyMatchesCert(pkcs1, leaf.certPem)).toBe(true);
  });

  it('explains keys it cannot use', () => {
    const ec = generateKeyPairSync('ec', {
      namedCurve: 'P-256',
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    }).privateKey;
    expect(() => keyMatchesCert(ec, leaf.certPem)).toThrow(CertificateError);
    expect(() => keyMatchesCert(ec, leaf.certPem)).toThrow(
      /keyMatchesCert: keyPem: is an EC key; only RSA keys are supported/,
    );

    const encrypted = createPrivateKey(leaf.keyPem)
      .export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' })
      .toString();
    expect(() => keyMatchesCert(encrypted, leaf.certPem)).toThrow(/encrypted keys are not supported/);
    expect(() => keyMatchesCert(leaf.certPem, leaf.certPem)).toThrow(/no usable private key PEM block/);
    expect(() => keyMatchesCert(leaf.keyPem, leaf.keyPem)).toThrow(/certPem: no CERTIFICATE PEM block/);
  });
});

describe('expiresWithin', () => {
  const notAfter = () => describeCert(leaf.certPem).notAfter.getTime();

  it('compares the time left with the window', () => {
    const tenDaysLeft = new Date(notAfter() - 10 * DAY);
    expect(expiresWithin(leaf.certPem, 30 * DAY, tenDaysLeft)).toBe(true);
    expect(expiresWithin(leaf.certPem, 10 * DAY, tenDaysLeft)).toBe(true);
    expect(expiresWithin(leaf.certPem, 5 * DAY, tenDaysLeft)).toBe(false);
  });

  it('counts an expired certificate as expiring', () => {
    expect(expiresWithin(leaf.certPem, 0, new Date(notAfter() + 1000))).toBe(true);
  });

  it('rejects a bad window', () => {
    expect(() => expiresWithin(leaf.certPem, -1, NOW)).toThrow(/ms must be a non-negative number, got -1/);
    expect(() => expiresWithin(leaf.certPem, Number.NaN, NOW)).toThrow(/ms must be a non-negative number/);
  });
});

describe('garbage input', () => {
  const fns: [string, (pem: string) => unknown][] = [
    ['describeCert', (pem) => describeCert(pem)],
    ['expiresWithin', (pem) => expiresWithin(pem, DAY)],
    ['keyMatchesCert: certPem', (pem) => keyMatchesCert(leafKey, pem)],
    ['verifyChain: leafPem', (pem) => verifyChain(pem, ca.certPem)],
  ];
  const inputs: [string, unknown, RegExp][] = [
    ['empty', '', /PEM string is empty/],
    ['plain text', 'hello world', /malformed PEM/],
    ['bad base64 body', '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n', /malformed PEM/],
    ['random DER', `-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n`, /not a valid X.509/],
    ['undefined', undefined, /expected a PEM string, got undefined/],
    ['a Buffer', Buffer.from('x'), /expected a PEM string, got Buffer/],
    ['a number', 42, /expected a PEM string, got number/],
  ];

  for (const [name, fn] of fns) {
    it.each(inputs)(`${name} rejects %s`, (_label, input, message) => {
      const call = () => fn(input as string);
      expect(call).toThrow(CertificateError);
      expect(call).toThrow(new RegExp(`^${name}: `));
      expect(call).toThrow(message);
    });
  }
});
