// Certificates from certs/generate.ts are checked three ways: with node-forge (our own verifyChain), with
// OpenSSL through node:crypto's X509Certificate, and with a real TLS handshake, because the apiserver is
// a different X.509 implementation from the one that produced the certificate.
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

import forge from 'node-forge';

import {
  CertificateError,
  createCa,
  createServingCert,
  describeCert,
  generateKeyPem,
  keyMatchesCert,
  serviceDnsNames,
  verifyChain,
} from '../../../certs/index.ts';
import type { CertKeyPair } from '../../../certs/index.ts';

const DAY = 24 * 60 * 60 * 1000;
const SKEW = 5 * 60 * 1000;
// Whole seconds, since X.509 times carry no milliseconds.
const NOW = new Date('2030-06-15T12:00:00Z');
const SVC = 'buildkit-webhook';
const NS = 'buildkit-system';
const NAMES = serviceDnsNames(SVC, NS);
const IPS = ['127.0.0.1', '::1'];

// Key generation dominates the cost of a certificate, so keys are made once and reused.
let caKey: string;
let otherCaKey: string;
let leafKey: string;
let ca: CertKeyPair;
let otherCa: CertKeyPair;
let serving: CertKeyPair;

beforeAll(() => {
  [caKey, otherCaKey, leafKey] = [generateKeyPem(), generateKeyPem(), generateKeyPem()];
  ca = createCa({ commonName: 'buildkit-fleet webhook CA', keyPem: caKey });
  otherCa = createCa({ commonName: 'buildkit-fleet webhook CA', keyPem: otherCaKey });
  serving = createServingCert({ ca, dnsNames: NAMES, ipAddresses: IPS, keyPem: leafKey });
});

function extension<T>(pem: string, name: string): (T & { critical?: boolean }) | undefined {
  return forge.pki.certificateFromPem(pem).getExtension(name) as (T & { critical?: boolean }) | undefined;
}

describe('serviceDnsNames', () => {
  it('lists every name a pod can reach the Service by', () => {
    expect(serviceDnsNames('wh', 'ns')).toEqual(['wh', 'wh.ns', 'wh.ns.svc', 'wh.ns.svc.cluster.local']);
    expect(serviceDnsNames('wh', 'ns', 'corp.internal')).toEqual([
      'wh',
      'wh.ns',
      'wh.ns.svc',
      'wh.ns.svc.corp.internal',
    ]);
  });

  it.each([
    ['', 'ns'],
    ['wh', ''],
    ['wh.x', 'ns'],
    ['wh', 'n_s'],
    ['-wh', 'ns'],
    ['a'.repeat(64), 'ns'],
  ])('rejects service %j in namespace %j', (service, namespace) => {
    expect(() => serviceDnsNames(service, namespace)).toThrow(CertificateError);
    expect(() => serviceDnsNames(service, namespace)).toThrow(/is not a DNS label/);
  });
});

describe('createCa', () => {
  it('is a self-signed CA with critical basicConstraints and keyUsage', () => {
    const x = new X509Certificate(ca.certPem);
    expect(x.ca).toBe(true);
    expect(x.checkIssued(x)).toBe(true);
    expect(x.verify(x.publicKey)).toBe(true);
    expect(x.subject).toBe('CN=buildkit-fleet webhook CA');

    expect(
      extension<{ cA: boolean; pathLenConstraint?: number }>(ca.certPem, 'basicConstraints'),
    ).toMatchObject({ cA: true, critical: true, pathLenConstraint: 0 });
    expect(extension(ca.certPem, 'keyUsage')).toMatchObject({
      keyCertSign: true,
      cRLSign: true,
      digitalSignature: false,
      critical: true,
    });
    expect(extension<{ subjectKeyIdentifier: string }>(ca.certPem, 'subjectKeyIdentifier')).toEqual(
      expect.objectContaining({ subjectKeyIdentifier: expect.stringMatching(/^[0-9a-f]{40}$/) }),
    );
  });

  it('signs with SHA-256 and RSA 2048', () => {
    const cert = forge.pki.certificateFromPem(ca.certPem);
    expect(forge.pki.oids[cert.siginfo.algorithmOid]).toBe('sha256WithRSAEncryption');
    expect(new X509Certificate(ca.certPem).publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  it('defaults to 10 years, back-dated for clock skew', () => {
    const d = describeCert(createCa({ commonName: 'ca', keyPem: caKey, now: NOW }).certPem);
    expect(d.notBefore).toEqual(new Date(NOW.getTime() - SKEW));
    expect(d.notAfter).toEqual(new Date(NOW.getTime() + 3650 * DAY));
  });

  it('keeps a non-ASCII common name intact (UTF8String)', () => {
    const pair = createCa({ commonName: 'Büildkit CA *', keyPem: caKey });
    expect(describeCert(pair.certPem).commonName).toBe('Büildkit CA *');
    expect(new X509Certificate(pair.certPem).subject).toBe('CN=Büildkit CA *');
    // The issuer must be byte-identical to this subject, or Go and OpenSSL will not chain it.
    const leaf = createServingCert({ ca: pair, dnsNames: ['a'], keyPem: leafKey });
    expect(new X509Certificate(leaf.certPem).checkIssued(new X509Certificate(pair.certPem))).toBe(true);
    expect(verifyChain(leaf.certPem, pair.certPem)).toBe(true);
  });

  it('generates a key when none is given and returns it as PKCS#8', () => {
    const pair = createCa({ commonName: 'fresh' });
    expect(pair.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(pair.certPem).not.toContain('\r');
    expect(keyMatchesCert(pair.keyPem, pair.certPem)).toBe(true);
    expect(new X509Certificate(pair.certPem).checkPrivateKey(createPrivateKey(pair.keyPem))).toBe(true);
  });

  it.each([
    [{ commonName: '' }, /commonName must be a non-empty string/],
    [{ commonName: '  ' }, /commonName must be a non-empty string/],
    [{ commonName: 'ca', validityDays: 0 }, /validityDays must be a positive number/],
    [{ commonName: 'ca', validityDays: -1 }, /validityDays must be a positive number/],
    [{ commonName: 'ca', validityDays: Number.NaN }, /validityDays must be a positive number/],
    [{ commonName: 'ca', validityDays: 1e9 }, /after the year 9999/],
    [{ commonName: 'ca', now: new Date('nope') }, /now must be a valid Date/],
    [{ commonName: 'ca', keyPem: 'not a key' }, /keyPem: malformed PEM/],
  ])('rejects %j', (options, message) => {
    expect(() => createCa(options)).toThrow(CertificateError);
    expect(() => createCa(options)).toThrow(message);
  });

  it('rejects keys smaller than 2048 bits', () => {
    const { privateKey } = generateKeyPairSync('rsa', {
      modulusLength: 1024,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    expect(() => createCa({ commonName: 'ca', keyPem: privateKey })).toThrow(
      /1024-bit RSA key; at least 2048/,
    );
  });

  it('rejects non-RSA keys with a clear message', () => {
    const { privateKey } = generateKeyPairSync('ec', {
      namedCurve: 'P-256',
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
    });
    expect(() => createCa({ commonName: 'ca', keyPem: privateKey })).toThrow(/only RSA keys are supported/);
  });
});

describe('createServingCert', () => {
  it('verifies against its CA with node-forge', () => {
    expect(verifyChain(serving.certPem, ca.certPem)).toBe(true);
  });

  it('verifies against its CA with OpenSSL (node:crypto)', () => {
    const leaf = new X509Certificate(serving.certPem);
    const root = new X509Certificate(ca.certPem);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkPrivateKey(createPrivateKey(serving.keyPem))).toBe(true);
  });

  it('matches every requested name and IP, and nothing else', () => {
    const leaf = new X509Certificate(serving.certPem);
    for (const name of NAMES) expect(leaf.checkHost(name)).toBe(name);
    expect(leaf.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(leaf.checkIP('::1')).toBe('::1');
    expect(leaf.checkHost(`other.${NS}.svc`)).toBeUndefined();
    expect(leaf.checkHost(`${SVC}.default.svc`)).toBeUndefined();
    expect(leaf.checkIP('127.0.0.2')).toBeUndefined();
  });

  it('has exactly the requested SANs, in order', () => {
    expect(NAMES).toEqual([SVC, `${SVC}.${NS}`, `${SVC}.${NS}.svc`, `${SVC}.${NS}.svc.cluster.local`]);
    expect(new X509Certificate(serving.certPem).subjectAltName).toBe(
      [...NAMES.map((n) => `DNS:${n}`), 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1'].join(', '),
    );
    const d = describeCert(serving.certPem);
    expect(d.dnsNames).toEqual(NAMES);
    expect(d.ipAddresses).toEqual(IPS);
    expect(d.commonName).toBe(SVC);
    expect(d.isCa).toBe(false);
  });

  it('has only DNS SANs when no IPs are given', () => {
    const pair = createServingCert({ ca, dnsNames: NAMES, keyPem: leafKey });
    expect(new X509Certificate(pair.certPem).subjectAltName).toBe(NAMES.map((n) => `DNS:${n}`).join(', '));
  });

  it('uses the first IP as CN when there are no DNS names, and handles IPv6 forms', () => {
    const ips = ['10.0.0.1', '2001:DB8::1', '::ffff:192.0.2.1', 'fe80:0:0:0:0:0:0:1'];
    const pair = createServingCert({ ca, dnsNames: [], ipAddresses: ips, keyPem: leafKey });
    const d = describeCert(pair.certPem);
    expect(d.commonName).toBe('10.0.0.1');
    expect(d.dnsNames).toEqual([]);
    expect(d.ipAddresses).toEqual(['10.0.0.1', '2001:db8::1', '::ffff:c000:201', 'fe80::1']);
    const leaf = new X509Certificate(pair.certPem);
    expect(leaf.checkIP('2001:db8::1')).toBe('2001:db8::1');
    expect(leaf.checkIP('::ffff:c000:201')).toBe('::ffff:c000:201');
    expect(leaf.checkIP('fe80::1')).toBe('fe80::1');
  });

  it('drops duplicate names and IPs', () => {
    const pair = createServingCert({
      ca,
      dnsNames: ['a.svc', 'A.svc', 'a.svc'],
      ipAddresses: ['::1', '0:0::1'],
      keyPem: leafKey,
    });
    expect(describeCert(pair.certPem)).toMatchObject({ dnsNames: ['a.svc'], ipAddresses: ['::1'] });
  });

  it('is a TLS server certificate', () => {
    expect(new X509Certificate(serving.certPem).keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(extension(serving.certPem, 'keyUsage')).toMatchObject({
      digitalSignature: true,
      keyEncipherment: true,
      keyCertSign: false,
      critical: true,
    });
    expect(extension(serving.certPem, 'basicConstraints')).toMatchObject({ cA: false, critical: true });
  });

  it("names the CA's key in authorityKeyIdentifier", () => {
    const ski = extension<{ subjectKeyIdentifier: string }>(ca.certPem, 'subjectKeyIdentifier');
    // forge does not decode AKI; its value is SEQUENCE { [0] keyIdentifier }.
    const aki = forge.pki.certificateFromPem(serving.certPem).getExtension('authorityKeyIdentifier') as {
      value: string;
    };
    const seq = forge.asn1.fromDer(aki.value);
    const keyId = (seq.value as forge.asn1.Asn1[])[0];
    expect(keyId?.type).toBe(0);
    expect(forge.util.bytesToHex(keyId?.value as string)).toBe(ski?.subjectKeyIdentifier);
  });

  it('uses random, positive, 16-byte serial numbers', () => {
    const serials = Array.from(
      { length: 25 },
      () => describeCert(createServingCert({ ca, dnsNames: ['a'], keyPem: leafKey }).certPem).serialHex,
    );
    expect(new Set(serials).size).toBe(serials.length);
    for (const serial of serials) {
      expect(serial).toMatch(/^[4-7][0-9a-f]{31}$/);
    }
    // OpenSSL would refuse a negative or non-minimally encoded INTEGER; it reads back the same value.
    const pair = createServingCert({ ca, dnsNames: ['a'], keyPem: leafKey });
    expect(new X509Certificate(pair.certPem).serialNumber.toLowerCase()).toBe(
      describeCert(pair.certPem).serialHex,
    );
  });

  it('keeps the serial positive and minimal whatever the random source returns', () => {
    const zeros = createServingCert({
      ca,
      dnsNames: ['a'],
      keyPem: leafKey,
      randomBytes: (n) => new Uint8Array(n),
    });
    const ones = createServingCert({
      ca,
      dnsNames: ['a'],
      keyPem: leafKey,
      randomBytes: (n) => new Uint8Array(n).fill(0xff),
    });
    expect(describeCert(zeros.certPem).serialHex).toBe(`40${'00'.repeat(15)}`);
    expect(describeCert(ones.certPem).serialHex).toBe(`7f${'ff'.repeat(15)}`);
    expect(new X509Certificate(zeros.certPem).serialNumber).toBe(`40${'00'.repeat(15)}`);
    expect(() =>
      createServingCert({ ca, dnsNames: ['a'], keyPem: leafKey, randomBytes: () => new Uint8Array(3) }),
    ).toThrow(/randomBytes returned 3 bytes, expected 16/);
  });

  it('is valid from 5 minutes before now for validityDays (default 365)', () => {
    const root = createCa({ commonName: 'ca', keyPem: caKey, now: NOW });
    const one = describeCert(
      createServingCert({ ca: root, dnsNames: ['a'], keyPem: leafKey, now: NOW }).certPem,
    );
    expect(one.notBefore).toEqual(new Date(NOW.getTime() - SKEW));
    expect(one.notAfter).toEqual(new Date(NOW.getTime() + 365 * DAY));

    const short = createServingCert({
      ca: root,
      dnsNames: ['a'],
      keyPem: leafKey,
      now: NOW,
      validityDays: 30,
    });
    expect(describeCert(short.certPem).notAfter).toEqual(new Date(NOW.getTime() + 30 * DAY));
    expect(new X509Certificate(short.certPem).validToDate).toEqual(new Date(NOW.getTime() + 30 * DAY));
  });

  it('uses the real clock by default', () => {
    const before = Date.now();
    const d = describeCert(serving.certPem);
    expect(Math.abs(d.notBefore.getTime() - (before - SKEW))).toBeLessThan(60_000);
    expect(Math.abs(d.notAfter.getTime() - (before + 365 * DAY))).toBeLessThan(60_000);
  });

  it("does not outlive the CA's notAfter", () => {
    const root = createCa({ commonName: 'ca', keyPem: caKey, now: NOW, validityDays: 100 });
    const leaf = createServingCert({ ca: root, dnsNames: ['a'], keyPem: leafKey, now: NOW });
    expect(describeCert(leaf.certPem).notAfter).toEqual(describeCert(root.certPem).notAfter);
  });

  it('does not verify against another CA', () => {
    expect(verifyChain(serving.certPem, otherCa.certPem)).toBe(false);
    const leaf = new X509Certificate(serving.certPem);
    const other = new X509Certificate(otherCa.certPem);
    expect(leaf.verify(other.publicKey)).toBe(false);
    // Same subject name, so only the signature tells them apart.
    expect(other.subject).toBe(new X509Certificate(ca.certPem).subject);
  });

  describe('rejects bad input', () => {
    const base = () => ({ ca, dnsNames: ['a.svc'], keyPem: leafKey });

    it.each([
      [{ dnsNames: [] }, /at least one DNS name or IP address is required/],
      [{ dnsNames: [], ipAddresses: [] }, /at least one DNS name or IP address is required/],
      [{ dnsNames: ['ok', ''] }, /"" is not a valid DNS name/],
      [{ dnsNames: ['-bad.svc'] }, /"-bad.svc" is not a valid DNS name/],
      [{ dnsNames: ['a..svc'] }, /"a..svc" is not a valid DNS name/],
      [{ dnsNames: ['under_score.svc'] }, /is not a valid DNS name/],
      [{ dnsNames: ['10.0.0.1'] }, /"10.0.0.1" is an IP address; pass it in ipAddresses/],
      [{ ipAddresses: ['999.1.1.1'] }, /"999.1.1.1" is not a valid IPv4 or IPv6 address/],
      [{ ipAddresses: ['1.2.3'] }, /is not a valid IPv4 or IPv6 address/],
      [{ ipAddresses: ['localhost'] }, /is not a valid IPv4 or IPv6 address/],
      [{ ipAddresses: ['fe80::1%eth0'] }, /is not a valid IPv4 or IPv6 address/],
      [{ ipAddresses: ['1::2::3'] }, /is not a valid IPv4 or IPv6 address/],
      [{ validityDays: 0 }, /validityDays must be a positive number, got 0/],
      [{ validityDays: -5 }, /validityDays must be a positive number/],
      [{ validityDays: Number.POSITIVE_INFINITY }, /validityDays must be a positive number/],
    ])('%j', (override, message) => {
      const options = { ...base(), ...override };
      expect(() => createServingCert(options)).toThrow(CertificateError);
      expect(() => createServingCert(options)).toThrow(message);
    });

    it('a CA key that does not match the CA certificate', () => {
      const mismatched = { certPem: ca.certPem, keyPem: otherCa.keyPem };
      expect(() => createServingCert({ ...base(), ca: mismatched })).toThrow(
        /ca.keyPem does not match the public key in ca.certPem/,
      );
    });

    it('a CA certificate that is not a CA', () => {
      expect(() => createServingCert({ ...base(), ca: serving })).toThrow(
        /ca.certPem is not a CA certificate/,
      );
    });

    it('a CA that has expired', () => {
      const root = createCa({ commonName: 'ca', keyPem: caKey, now: NOW, validityDays: 1 });
      const later = new Date(NOW.getTime() + 2 * DAY);
      expect(() => createServingCert({ ...base(), ca: root, now: later })).toThrow(
        /CA certificate is not valid at 2030-06-17T12:00:00.000Z/,
      );
    });

    it('garbage CA material', () => {
      expect(() => createServingCert({ ...base(), ca: { certPem: 'garbage', keyPem: caKey } })).toThrow(
        /ca.certPem: malformed PEM/,
      );
      expect(() => createServingCert({ ...base(), ca: { certPem: ca.keyPem, keyPem: caKey } })).toThrow(
        /ca.certPem: no CERTIFICATE PEM block found \(got "PRIVATE KEY"\)/,
      );
      expect(() => createServingCert({ ...base(), ca: { certPem: ca.certPem, keyPem: ca.certPem } })).toThrow(
        /ca.keyPem: no usable private key PEM block/,
      );
      const truncated = ca.certPem.replace(/\n[A-Za-z0-9+/=]+\n-----END/, '\n-----END');
      expect(() => createServingCert({ ...base(), ca: { certPem: truncated, keyPem: caKey } })).toThrow(
        /ca.certPem: not a valid X.509 certificate/,
      );
    });
  });
});

describe('TLS handshake with a generated certificate', () => {
  let server: https.Server;
  let port: number;

  beforeAll(async () => {
    server = https.createServer({ key: serving.keyPem, cert: serving.certPem }, (_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function get(options: https.RequestOptions): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, path: '/', agent: false, ...options }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve(body));
      });
      req.setTimeout(5000, () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end();
    });
  }

  it.each(NAMES)('succeeds for servername %s with the right CA', async (servername) => {
    await expect(get({ ca: ca.certPem, servername })).resolves.toBe('ok');
  });

  it('succeeds by IP SAN when no servername is sent', async () => {
    await expect(get({ ca: ca.certPem })).resolves.toBe('ok');
  });

  it('fails with a certificate error against another CA', async () => {
    await expect(get({ ca: otherCa.certPem, servername: `${SVC}.${NS}.svc` })).rejects.toMatchObject({
      code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    });
  });

  it('fails for a name that is not in the certificate', async () => {
    await expect(get({ ca: ca.certPem, servername: `other.${NS}.svc` })).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });
});
