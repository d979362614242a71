// rotation-policy.ts and material.ts: every state of the certificate Secret gets the right decision with a
// reason, and whatever planning produces is something the API server and OpenSSL accept.
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import forge from 'node-forge';

import {
  SECRET_KEYS,
  createCa,
  createServingCert,
  decide,
  generateKeyPem,
  planCertificates,
  serviceDnsNames,
  servingProblem,
  unservableReason,
  validatePolicy,
  verifyChain,
} from '../../../certs/index.ts';
import type { CertKeyPair, CertPolicy, CertSecretData, Decision } from '../../../certs/index.ts';
import { applyDecision } from '../../../certs/material.ts';
import { inspectSecret } from '../../../certs/secret-inspection.ts';

const DAY = 24 * 60 * 60 * 1000;
const NOW = new Date('2030-06-15T12:00:00Z');
const at = (days: number) => new Date(NOW.getTime() + days * DAY);
const NAMES = serviceDnsNames('bkf-webhook', 'bkf-system');
const POLICY: CertPolicy = {
  caValidityDays: 3650,
  servingValidityDays: 365,
  renewBeforeDays: 90,
  caOverlapDays: 30,
  dnsNames: NAMES,
  ipAddresses: ['127.0.0.1'],
};

// Keys dominate the cost of a certificate; a small pool keeps the suite fast.
let keys: string[];
let caA: CertKeyPair;
let caB: CertKeyPair;
let leafA: CertKeyPair;

beforeAll(() => {
  keys = Array.from({ length: 5 }, () => generateKeyPem());
  caA = ca(0, NOW);
  caB = ca(1, NOW);
  leafA = leaf(caA, NOW);
});

function ca(key: number, now: Date, validityDays = 3650, commonName = `CA ${key}`): CertKeyPair {
  return createCa({ commonName, keyPem: keys[key]!, now, validityDays });
}

function leaf(
  issuer: CertKeyPair,
  now: Date,
  extra: Partial<{ dnsNames: string[]; validityDays: number }> = {},
) {
  return createServingCert({
    ca: issuer,
    dnsNames: extra.dnsNames ?? NAMES,
    ipAddresses: ['127.0.0.1'],
    keyPem: keys[4]!,
    now,
    validityDays: extra.validityDays ?? 365,
  });
}

function secret(
  issuer: CertKeyPair,
  serving: CertKeyPair,
  more: Record<string, string> = {},
): CertSecretData {
  return {
    [SECRET_KEYS.cert]: serving.certPem,
    [SECRET_KEYS.key]: serving.keyPem,
    [SECRET_KEYS.caBundle]: issuer.certPem,
    [SECRET_KEYS.caKey]: issuer.keyPem,
    ...more,
  };
}

/** A serving certificate made outside createServingCert's guard rails (weak key, SHA-1, CA flag). */
function oddLeaf(issuer: CertKeyPair, options: { bits?: number; md?: 'sha1' | 'sha256'; isCa?: boolean }) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: options.bits ?? 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const issuerCert = forge.pki.certificateFromPem(issuer.certPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(
    (forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey).n,
    (forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey).e,
  );
  cert.serialNumber = '4a01';
  cert.validity.notBefore = at(-1);
  cert.validity.notAfter = at(300);
  cert.setSubject([{ name: 'commonName', value: NAMES[0]! }]);
  cert.setIssuer(issuerCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: options.isCa === true },
    {
      name: 'subjectAltName',
      altNames: [...NAMES.map((value) => ({ type: 2, value })), { type: 7, ip: '127.0.0.1' }],
    },
  ]);
  const md = options.md ?? 'sha256';
  const signer = createPrivateKey(issuer.keyPem);
  cert.sign(
    {
      sign: () =>
        sign(md, Buffer.from(forge.asn1.toDer(cert.tbsCertificate).getBytes(), 'binary'), signer).toString(
          'binary',
        ),
    } as unknown as forge.pki.rsa.PrivateKey,
    md === 'sha1' ? forge.md.sha1.create() : forge.md.sha256.create(),
  );
  return { certPem: forge.pki.certificateToPem(cert), keyPem };
}

function expectDecision(decision: Decision, expected: Record<string, unknown>, reason: RegExp) {
  expect(decision).toMatchObject(expected);
  expect(decision.reason).toMatch(reason);
}

describe('decide', () => {
  test('no Secret: create', () => {
    expectDecision(decide(undefined, NOW, POLICY), { action: 'create' }, /does not exist/);
  });

  test('a fresh, valid Secret: reuse, saying until when', () => {
    const d = decide(secret(caA, leafA), NOW, POLICY);
    expectDecision(d, { action: 'reuse' }, /tls\.crt valid until 2031-06-15.*CA until 2040-06-12/);
  });

  describe('repair everything when the CA is unusable', () => {
    test.each([
      [
        'garbage in ca.crt',
        { [SECRET_KEYS.caBundle]: 'hello' },
        'garbage',
        /ca\.crt holds no usable certificate/,
      ],
      [
        'a corrupt certificate in ca.crt',
        { [SECRET_KEYS.caBundle]: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' },
        'garbage',
        /ca\.crt holds no usable certificate.*not a valid X\.509 certificate/,
      ],
      ['empty ca.crt', { [SECRET_KEYS.caBundle]: '' }, 'missing', /ca\.crt is missing or empty/],
      ['no ca.key', { [SECRET_KEYS.caKey]: '' }, 'missing', /ca\.key is missing/],
      ['garbage in ca.key', { [SECRET_KEYS.caKey]: 'not a key' }, 'garbage', /ca\.key: malformed PEM/],
    ])('%s', (_name, change, problem, reason) => {
      const d = decide({ ...secret(caA, leafA), ...change }, NOW, POLICY);
      expectDecision(d, { action: 'repair', scope: 'all', problem }, reason);
    });

    test('ca.key belongs to another CA', () => {
      const d = decide(secret(caA, leafA, { [SECRET_KEYS.caKey]: caB.keyPem }), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'all', problem: 'key-mismatch' },
        /ca\.key matches none of the 1 certificate\(s\) in ca\.crt/,
      );
    });

    test('an expired CA', () => {
      const old = ca(2, at(-40), 30, 'old CA');
      const d = decide(secret(old, leaf(old, at(-40), { validityDays: 20 })), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'all', problem: 'ca-expired' },
        /CA "CN=old CA" expired at 2030-06-05/,
      );
    });

    test('a CA that is not valid yet', () => {
      const future = ca(2, at(2));
      const d = decide(secret(future, leafA), NOW, POLICY);
      expectDecision(d, { action: 'repair', scope: 'all', problem: 'ca-not-yet-valid' }, /not valid before/);
    });

    test('ca.crt holds a serving certificate instead of a CA', () => {
      const d = decide(secret({ certPem: leafA.certPem, keyPem: leafA.keyPem }, leafA), NOW, POLICY);
      expectDecision(d, { action: 'repair', scope: 'all', problem: 'not-a-ca' }, /is not a CA certificate/);
    });
  });

  describe('repair the serving certificate when only it is wrong', () => {
    test.each([
      ['garbage in tls.crt', { [SECRET_KEYS.cert]: 'garbage' }, 'garbage', /tls\.crt: malformed PEM/],
      ['no tls.key', { [SECRET_KEYS.key]: '' }, 'missing', /tls\.key is missing/],
      [
        'garbage in tls.key',
        { [SECRET_KEYS.key]: '-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n' },
        'garbage',
        /tls\.key: not a valid RSA private key/,
      ],
    ])('%s', (_name, change, problem, reason) => {
      const d = decide({ ...secret(caA, leafA), ...change }, NOW, POLICY);
      expectDecision(d, { action: 'repair', scope: 'serving', problem }, reason);
    });

    test('tls.key does not match tls.crt', () => {
      const d = decide(secret(caA, leafA, { [SECRET_KEYS.key]: keys[3]! }), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'serving', problem: 'key-mismatch' },
        /tls\.key is not the key of tls\.crt/,
      );
    });

    test('tls.crt issued by a different CA', () => {
      const d = decide(secret(caA, leaf(caB, NOW)), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'serving', problem: 'not-from-ca' },
        /not issued by the active CA/,
      );
    });

    test('tls.crt lacks a required name', () => {
      const narrow = leaf(caA, NOW, { dnsNames: ['bkf-webhook', 'bkf-webhook.bkf-system'] });
      const d = decide(secret(caA, narrow), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'serving', problem: 'wrong-sans' },
        /does not cover bkf-webhook\.bkf-system\.svc, bkf-webhook\.bkf-system\.svc\.cluster\.local/,
      );
    });

    test('more names than required are fine', () => {
      const wide = leaf(caA, NOW, { dnsNames: [...NAMES, 'extra.example'] });
      expect(decide(secret(caA, wide), NOW, POLICY).action).toBe('reuse');
    });

    test('an expired serving certificate', () => {
      const older = ca(2, at(-400));
      const d = decide(secret(older, leaf(older, at(-10), { validityDays: 5 })), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'serving', problem: 'serving-expired' },
        /tls\.crt expired at 2030-06-10/,
      );
    });

    test('a CA certificate as tls.crt', () => {
      const d = decide(secret(caA, oddLeaf(caA, { isCa: true })), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'serving', problem: 'not-a-serving-cert' },
        /is a CA certificate/,
      );
    });

    test('a SHA-1 signature (Go refuses it)', () => {
      const d = decide(secret(caA, oddLeaf(caA, { md: 'sha1' })), NOW, POLICY);
      expectDecision(
        d,
        { action: 'repair', scope: 'serving', problem: 'weak-serving-cert' },
        /sha1WithRSAEncryption, which Go refuses/,
      );
    });

    test('a 1024-bit key', () => {
      const d = decide(secret(caA, oddLeaf(caA, { bits: 1024 })), NOW, POLICY);
      expectDecision(d, { action: 'repair', scope: 'serving', problem: 'weak-serving-cert' }, /1024-bit key/);
    });
  });

  describe('routine renewal and CA rotation', () => {
    test('renew the serving certificate inside renew-before', () => {
      const d = decide(secret(caA, leafA), at(365 - 89), POLICY);
      expectDecision(d, { action: 'renew-serving' }, /expires at 2031-06-15.*renew-before window of 90d/);
      expect(decide(secret(caA, leafA), at(365 - 91), POLICY).action).toBe('reuse');
    });

    test('start a CA rotation renew-before + 2 x overlap before the CA expires', () => {
      const young = leaf(caA, at(3490));
      expect(decide(secret(caA, young), at(3499), POLICY).action).toBe('reuse');
      const d = decide(secret(caA, young), at(3501), POLICY);
      expectDecision(
        d,
        { action: 'rotate-ca', step: 'add-next' },
        /within renew-before \+ 2 x CA overlap \(150d\)/,
      );
    });

    test('add-next, then switch after the overlap, then drop the previous CA after another', () => {
      const t0 = at(3501);
      let data: CertSecretData | undefined = secret(caA, leaf(caA, at(3490)));
      const build = { policy: POLICY, caCommonName: 'test CA' };
      const step = (now: Date) => {
        const d = decide(data, now, POLICY);
        data = applyDecision(data, d, { ...build, now });
        return d;
      };
      expect(step(t0)).toMatchObject({ action: 'rotate-ca', step: 'add-next' });
      const afterAdd = inspectSecret(data, t0);
      expect(afterAdd.bundle).toHaveLength(2);
      expect(afterAdd.next).toBeDefined();
      const oldLeaf = data[SECRET_KEYS.cert]!;
      expect(verifyChain(oldLeaf, afterAdd.active!.cert.pem, t0)).toBe(true);

      expect(decide(data, new Date(t0.getTime() + 29 * DAY), POLICY)).toMatchObject({
        action: 'reuse',
        reason: expect.stringContaining('CA rotation pending'),
      });
      const t1 = new Date(t0.getTime() + 30 * DAY + 1000);
      expect(step(t1)).toMatchObject({ action: 'rotate-ca', step: 'switch' });
      const afterSwitch = inspectSecret(data, t1);
      expect(afterSwitch.active!.cert.fingerprint).toBe(afterAdd.next!.cert.fingerprint);
      expect(afterSwitch.previous.map((c) => c.fingerprint)).toEqual([afterAdd.active!.cert.fingerprint]);
      expect(data[SECRET_KEYS.nextCaKey]).toBeUndefined();
      // Both the old serving cert (replicas not switched yet) and the new one verify against ca.crt.
      expect(verifyChain(oldLeaf, data[SECRET_KEYS.caBundle]!, t1)).toBe(true);
      expect(verifyChain(data[SECRET_KEYS.cert]!, data[SECRET_KEYS.caBundle]!, t1)).toBe(true);

      expect(decide(data, new Date(t1.getTime() + 29 * DAY), POLICY).action).toBe('reuse');
      const t2 = new Date(t1.getTime() + 30 * DAY + 1000);
      expect(step(t2)).toMatchObject({ action: 'rotate-ca', step: 'drop-previous' });
      expect(inspectSecret(data, t2).bundle.map((c) => c.fingerprint)).toEqual([
        afterAdd.next!.cert.fingerprint,
      ]);
      expect(decide(data, t2, POLICY).action).toBe('reuse');
    });

    test('switch at once when the active CA would expire before the overlap ends', () => {
      // A replica that was down all along comes back 25 days before the CA expires.
      let data: CertSecretData | undefined = secret(caA, leaf(caA, at(3490)));
      const t0 = at(3625);
      const first = decide(data, t0, POLICY);
      expect(first).toMatchObject({ action: 'rotate-ca', step: 'add-next' });
      data = applyDecision(data, first, { policy: POLICY, caCommonName: 'x', now: t0 });
      const d = decide(data, at(3626), POLICY);
      expectDecision(
        d,
        { action: 'rotate-ca', step: 'switch' },
        /expires at .* before the CA overlap would end/,
      );
    });

    test('a serving certificate capped by its CA is not renewed again and again', () => {
      // CA ends in 80 days, inside renew-before; the serving cert already ends with it.
      const aging = ca(2, at(-3570), 3650);
      let data: CertSecretData | undefined = secret(aging, leaf(aging, at(-300)));
      const plan = planCertificates(data, { now: NOW, policy: POLICY, caCommonName: 'x' });
      expect(plan.steps.map((s) => s.action)).toEqual(['renew-serving', 'rotate-ca']);
      data = plan.data!;
      expect(decide(data, NOW, POLICY)).toMatchObject({ action: 'reuse' });
      expect(decide(data, at(1), POLICY)).toMatchObject({ action: 'reuse' });
    });

    test('previous CA certificates that expired are dropped', () => {
      const expired = ca(2, at(-40), 30, 'expired CA');
      const data = secret(caA, leafA, { [SECRET_KEYS.caBundle]: caA.certPem + expired.certPem });
      expectDecision(
        decide(data, NOW, POLICY),
        { action: 'rotate-ca', step: 'drop-previous' },
        /1 previous CA certificate\(s\) in ca\.crt expired/,
      );
    });
  });

  describe('repair the bundle', () => {
    test('garbage next to a good CA in ca.crt', () => {
      const data = secret(caA, leafA, {
        [SECRET_KEYS.caBundle]: `${caA.certPem}junk\n-----BEGIN FOO-----\nAA==\n-----END FOO-----\n`,
      });
      expectDecision(
        decide(data, NOW, POLICY),
        { action: 'repair', scope: 'bundle', problem: 'bundle-garbage' },
        /block #2 is a FOO/,
      );
    });

    test('ca-next.key without its certificate', () => {
      const data = secret(caA, leafA, { [SECRET_KEYS.nextCaKey]: caB.keyPem });
      expectDecision(
        decide(data, NOW, POLICY),
        { action: 'repair', scope: 'bundle', problem: 'next-ca-invalid' },
        /ca-next\.key matches no certificate in ca\.crt other than the active CA/,
      );
    });
  });
});

describe('planCertificates', () => {
  const plan = (data: CertSecretData | undefined, now = NOW) =>
    planCertificates(data, { now, policy: POLICY, caCommonName: 'buildkit-fleet webhook CA' });

  test('creates a Secret whose serving cert verifies against ca.crt and covers every name', () => {
    const p = plan(undefined);
    expect(p.steps.map((s) => s.action)).toEqual(['create']);
    const data = p.data!;
    expect(verifyChain(data[SECRET_KEYS.cert]!, data[SECRET_KEYS.caBundle]!, NOW)).toBe(true);
    expect(unservableReason(data, NOW, POLICY)).toBeUndefined();
    expect(Object.keys(data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    expect(forge.pki.certificateFromPem(data[SECRET_KEYS.caBundle]!).subject.getField('CN').value).toBe(
      'buildkit-fleet webhook CA 2030-06-15T12:00:00Z',
    );
  });

  test.each([
    ['garbage everywhere', { 'tls.crt': 'x', 'tls.key': 'y', 'ca.crt': 'z', 'ca.key': 'w' }, ['repair']],
    ['an empty Secret', {}, ['repair']],
  ])('%s becomes a servable Secret in one plan', (_name, data, actions) => {
    const p = plan(data);
    expect(p.steps.map((s) => s.action)).toEqual(actions);
    expect(unservableReason(p.data!, NOW, POLICY)).toBeUndefined();
    expect(decide(p.data, NOW, POLICY).action).toBe('reuse');
  });

  test('a garbage bundle block and a wrong key are both fixed in one plan, other keys are kept', () => {
    const data = secret(caA, leafA, {
      [SECRET_KEYS.caBundle]: `${caA.certPem}-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n`,
      [SECRET_KEYS.key]: keys[3]!,
      'custom.txt': 'kept',
    });
    const p = plan(data);
    expect(p.steps.map((s) => `${s.action}/${'scope' in s ? s.scope : ''}`)).toEqual([
      'repair/bundle',
      'repair/serving',
    ]);
    expect(p.data!['custom.txt']).toBe('kept');
    expect(p.data![SECRET_KEYS.caBundle]).toBe(caA.certPem);
    expect(p.data![SECRET_KEYS.caKey]).toBe(caA.keyPem);
    expect(unservableReason(p.data!, NOW, POLICY)).toBeUndefined();
  });

  test('repairing a lost CA key keeps the old, still valid CA trusted for an overlap', () => {
    const data = secret(caA, leafA, { [SECRET_KEYS.caKey]: caB.keyPem });
    const p = plan(data);
    const bundle = p.data![SECRET_KEYS.caBundle]!;
    // Replicas still serving the old certificate keep working until they reload.
    expect(verifyChain(leafA.certPem, bundle, NOW)).toBe(true);
    expect(verifyChain(p.data![SECRET_KEYS.cert]!, bundle, NOW)).toBe(true);
    expect(decide(p.data, at(31), POLICY)).toMatchObject({ action: 'rotate-ca', step: 'drop-previous' });
  });

  test('a held-back switch is reported, not applied', () => {
    let data: CertSecretData | undefined = secret(caA, leaf(caA, at(3490)));
    data = plan(data, at(3501)).data;
    const p = planCertificates(data, {
      now: at(3540),
      policy: POLICY,
      caCommonName: 'x',
      canSwitchTo: () => false,
    });
    expect(p.steps).toEqual([]);
    expect(p.postponed).toMatch(/the next CA has been in ca\.crt since/);
    expect(p.data).toBe(data);
  });

  test('servingProblem names the reason for a stranger certificate', () => {
    const view = inspectSecret(secret(caA, leafA), NOW);
    expect(servingProblem(secret(caA, leaf(caB, NOW)), view.active!.cert, NOW, POLICY)?.problem).toBe(
      'not-from-ca',
    );
  });
});

describe('validatePolicy', () => {
  test('the defaults pass', () => expect(() => validatePolicy(POLICY)).not.toThrow());
  test.each([
    [{ renewBeforeDays: 400 }, /renew-before \(400d\) must be shorter than the serving validity \(365d\)/],
    [{ caValidityDays: 100 }, /CA validity \(100d\) must exceed renew-before \+ 2 x CA overlap \(150d\)/],
    [{ caOverlapDays: 0 }, /overlap must be a positive duration/],
    [{ dnsNames: [], ipAddresses: [] }, /at least one DNS name or IP address/],
  ])('%j is refused', (change, message) => {
    expect(() => validatePolicy({ ...POLICY, ...change })).toThrow(message);
  });
});
