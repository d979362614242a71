// secret-inspection.ts on its own: how the Secret is taken apart (PEM blocks, which CA is active,
// next or previous, what is noise) and why a serving certificate would be refused, without asking
// the rotation policy what to do about it.
import { createCa, createServingCert, generateKeyPem } from '../../../certs/generate.ts';
import type { CertKeyPair } from '../../../certs/generate.ts';
import { SECRET_KEYS, inspectSecret, pemBlocks, servingProblem } from '../../../certs/secret-inspection.ts';
import type { CertSecretData } from '../../../certs/secret-inspection.ts';

const NOW = new Date('2030-06-15T12:00:00Z');
const NAMES = { dnsNames: ['bkf-webhook.bkf-system.svc'], ipAddresses: ['127.0.0.1'] };

let caA: CertKeyPair;
let caB: CertKeyPair;
let leafA: CertKeyPair;

beforeAll(() => {
  const [a, b, leaf] = Array.from({ length: 3 }, () => generateKeyPem());
  caA = createCa({ commonName: 'CA A', keyPem: a!, now: NOW });
  caB = createCa({ commonName: 'CA B', keyPem: b!, now: NOW });
  leafA = createServingCert({ ca: caA, ...NAMES, keyPem: leaf!, now: NOW });
});

const secret = (more: Record<string, string> = {}): CertSecretData => ({
  [SECRET_KEYS.cert]: leafA.certPem,
  [SECRET_KEYS.key]: leafA.keyPem,
  [SECRET_KEYS.caBundle]: caA.certPem,
  [SECRET_KEYS.caKey]: caA.keyPem,
  ...more,
});
const subjects = (certs: { x509: { subject: string } }[]) => certs.map((c) => c.x509.subject);

describe('pemBlocks', () => {
  test('every complete block, verbatim with a final newline, whatever lies between', () => {
    const text = `junk\n${caA.certPem.trim()}\nmore junk\n-----BEGIN FOO-----\nx\n-----END FOO-----`;
    expect(pemBlocks(text)).toEqual([
      { type: 'CERTIFICATE', pem: `${caA.certPem.trim()}\n` },
      { type: 'FOO', pem: '-----BEGIN FOO-----\nx\n-----END FOO-----\n' },
    ]);
  });

  test('a block without its END line, or with a mismatched one, is not a block', () => {
    expect(pemBlocks('-----BEGIN CERTIFICATE-----\nAAAA\n')).toEqual([]);
    expect(pemBlocks('-----BEGIN CERTIFICATE-----\nAAAA\n-----END FOO-----\n')).toEqual([]);
  });
});

describe('inspectSecret', () => {
  test('a fresh Secret: the one CA is active, nothing next, previous or noisy', () => {
    const view = inspectSecret(secret(), NOW);
    expect(subjects([view.active!.cert])).toEqual(['CN=CA A']);
    expect(view.active!.keyPem).toBe(caA.keyPem);
    expect(view).toMatchObject({ bundleNoise: [], previous: [] });
    expect(view.next).toBeUndefined();
    expect(view.caProblem).toBeUndefined();
  });

  test('the active CA is found by its key, not by its place in ca.crt', () => {
    const view = inspectSecret(secret({ [SECRET_KEYS.caBundle]: caB.certPem + caA.certPem }), NOW);
    expect(subjects([view.active!.cert])).toEqual(['CN=CA A']);
    expect(subjects(view.previous)).toEqual(['CN=CA B']);
  });

  test('ca-next.key picks the next CA out of the bundle', () => {
    const view = inspectSecret(
      secret({ [SECRET_KEYS.caBundle]: caA.certPem + caB.certPem, [SECRET_KEYS.nextCaKey]: caB.keyPem }),
      NOW,
    );
    expect(subjects([view.next!.cert])).toEqual(['CN=CA B']);
    expect(view.previous).toEqual([]);
    expect(view.nextProblem).toBeUndefined();
  });

  test('ca-next.key that matches only the active CA is a next-CA problem, not a CA problem', () => {
    const view = inspectSecret(secret({ [SECRET_KEYS.nextCaKey]: caA.keyPem }), NOW);
    expect(view.active).toBeDefined();
    expect(view.next).toBeUndefined();
    expect(view.nextProblem).toBe('ca-next.key matches no certificate in ca.crt other than the active CA');
  });

  test('duplicates and foreign blocks are noise next to a usable bundle', () => {
    const key = '-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n';
    const view = inspectSecret(secret({ [SECRET_KEYS.caBundle]: caA.certPem + caA.certPem + key }), NOW);
    expect(view.bundle).toHaveLength(1);
    expect(view.active).toBeDefined();
    expect(view.bundleNoise).toEqual([
      'ca.crt block #2 is a duplicate',
      'ca.crt block #3 is a PRIVATE KEY, not a CERTIFICATE',
    ]);
  });

  // changes are functions: the certificates exist only once beforeAll has run
  test.each<[string, () => Record<string, string>, string, RegExp]>([
    ['no ca.crt', () => ({ [SECRET_KEYS.caBundle]: ' ' }), 'missing', /^ca\.crt is missing or empty$/],
    [
      'only foreign blocks',
      () => ({ [SECRET_KEYS.caBundle]: '-----BEGIN FOO-----\nx\n-----END FOO-----\n' }),
      'garbage',
      /^ca\.crt holds no usable certificate: ca\.crt block #1 is a FOO, not a CERTIFICATE$/,
    ],
    ['no ca.key', () => ({ [SECRET_KEYS.caKey]: '' }), 'missing', /^ca\.key is missing/],
    ['garbage ca.key', () => ({ [SECRET_KEYS.caKey]: 'not a key' }), 'garbage', /ca\.key: malformed PEM/],
    [
      'a stranger ca.key',
      () => ({ [SECRET_KEYS.caKey]: caB.keyPem }),
      'key-mismatch',
      /^ca\.key matches none of the 1 certificate\(s\) in ca\.crt$/,
    ],
  ])('%s: no active CA, and the reason (never a throw)', (_name, change, problem, reason) => {
    const view = inspectSecret(secret(change()), NOW);
    expect(view.active).toBeUndefined();
    expect(view.caProblem?.problem).toBe(problem);
    expect(view.caProblem?.reason).toMatch(reason);
  });

  test('a CA not valid at `now` is no active CA', () => {
    const before = new Date(NOW.getTime() - 24 * 60 * 60 * 1000);
    expect(inspectSecret(secret(), before).caProblem).toMatchObject({ problem: 'ca-not-yet-valid' });
  });
});

describe('servingProblem', () => {
  const active = () => inspectSecret(secret(), NOW).active!.cert;

  test('a serving certificate from the active CA covering every name: no problem', () => {
    expect(servingProblem(secret(), active(), NOW, NAMES)).toBeUndefined();
  });

  test.each<[string, () => Record<string, string>, string, RegExp]>([
    ['no tls.crt', () => ({ [SECRET_KEYS.cert]: '' }), 'missing', /^tls\.crt is missing or empty$/],
    ['no tls.key', () => ({ [SECRET_KEYS.key]: '\n' }), 'missing', /^tls\.key is missing or empty$/],
    ['garbage tls.crt', () => ({ [SECRET_KEYS.cert]: 'garbage' }), 'garbage', /tls\.crt: malformed PEM/],
    [
      'the CA as tls.crt',
      () => ({ [SECRET_KEYS.cert]: caA.certPem, [SECRET_KEYS.key]: caA.keyPem }),
      'not-a-serving-cert',
      /^tls\.crt is a CA certificate$/,
    ],
  ])('%s', (_name, change, problem, reason) => {
    expect(servingProblem(secret(change()), active(), NOW, NAMES)).toEqual({
      problem,
      reason: expect.stringMatching(reason),
    });
  });

  test('a name the policy requires and the certificate lacks is named', () => {
    const wanted = { ...NAMES, dnsNames: [...NAMES.dnsNames, 'extra.example'], ipAddresses: ['::1'] };
    expect(servingProblem(secret(), active(), NOW, wanted)).toEqual({
      problem: 'wrong-sans',
      reason: 'tls.crt does not cover extra.example, ::1',
    });
  });

  test('judged against the CA it is given, not the bundle', () => {
    const other = inspectSecret(
      secret({ [SECRET_KEYS.caBundle]: caB.certPem, [SECRET_KEYS.caKey]: caB.keyPem }),
      NOW,
    ).active!.cert;
    expect(servingProblem(secret(), other, NOW, NAMES)?.problem).toBe('not-from-ca');
  });
});
