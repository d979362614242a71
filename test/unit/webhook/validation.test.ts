import { buildPod } from '../../../controller/pod-builder.ts';
import { serverFeatures } from '../../../kube/server-features.ts';
import type { BuildkitTemplate } from '../../../api/types.generated.ts';
import { BadReviewError, parseAdmissionReview } from '../../../webhook/admission.ts';
import { changedSpecFields } from '../../../webhook/buildkit-validation.ts';
import type { TemplateReader } from '../../../webhook/handlers.ts';
import {
  mutateTemplate,
  templateValidationHandler,
  validateBuildkitHandler,
  validateTemplateHandler,
} from '../../../webhook/handlers.ts';
import { templateLimitsFromOptions } from '../../../webhook/main.ts';
import { buildkitRequest, templateRequest } from '../../support/admission-requests.ts';

const validate = async (spec: Record<string, unknown>, name?: string) =>
  (await validateTemplateHandler(templateRequest(spec, name ? { name } : {}))).response;

const messageOf = (r: { status?: { message: string } }) => r.status?.message ?? '';

describe('BuildkitTemplate validation', () => {
  const valid = { port: 1234, image: 'moby/buildkit:v0.13.1', resources: { maximum: { memory: '16Gi' } } };

  test('a valid template is allowed without warnings', async () => {
    expect(await validate(valid)).toEqual({ uid: expect.any(String), allowed: true });
  });

  test.each([
    [{ port: 0 }, 'spec.port: Invalid value: 0: must be between 1 and 65535'],
    [{ port: 65536 }, 'spec.port: Invalid value: 65536: must be between 1 and 65535'],
    [
      { buildkitdToml: '[log]\n  format = "json\n' },
      'spec.buildkitdToml: Invalid value: not valid TOML: line 2, column',
    ],
    [
      {
        rootless: true,
        image: 'moby/buildkit:v0.13.1-rootless',
        buildkitdToml: '[worker.containerd]\nenabled = true\n',
      },
      'cannot work rootless',
    ],
    [{ podLabels: { 'bad key!': 'x' } }, 'spec.podLabels: Invalid value: "bad key!": invalid key'],
    [{ podLabels: { team: 'not valid value' } }, 'spec.podLabels[team]: Invalid value: "not valid value"'],
    [{ podAnnotations: { 'Example.com/x': 'y' } }, 'the prefix must be a lowercase DNS subdomain'],
    [
      { scheduling: { nodeSelector: { '/arch': 'arm64' } } },
      'spec.scheduling.nodeSelector: Invalid value: "/arch"',
    ],
    [
      { resources: { maximum: { cpu: 'lots' } } },
      'spec.resources.maximum.cpu: Invalid value: "lots": must be a Kubernetes quantity',
    ],
    [
      { resources: { default: { requests: { memory: '8Gi' }, limits: { memory: '4Gi' } } } },
      'spec.resources.default.requests.memory: Invalid value: "8Gi": must be less than or equal to memory limit of 4Gi',
    ],
    [
      { resources: { default: { limits: { memory: '32Gi' } }, maximum: { memory: '16Gi' } } },
      'spec.resources.default.limits.memory: Invalid value: "32Gi": must not exceed spec.resources.maximum.memory (16Gi)',
    ],
    [{ resources: { default: { requests: { cpu: '-1' } } } }, 'must not be negative'],
    [
      { autoscaling: { idleTimeout: 'soon' } },
      'spec.autoscaling.idleTimeout: Invalid value: "soon": must be a duration',
    ],
    [{ autoscaling: { idleTimeout: '5s' } }, 'must be between 30s and 24h'],
    [{ autoscaling: { idleTimeout: '48h' } }, 'must be between 30s and 24h'],
    [
      { observability: { otlp: { serviceName: 'bk', resourceAttributes: { 'a=b': 'x' } } } },
      'spec.observability.otlp.resourceAttributes: Invalid value: "a=b"',
    ],
  ])('refuses %j', async (spec, expected) => {
    const response = await validate({ ...valid, ...spec });
    expect(response.allowed).toBe(false);
    expect(response.status?.code).toBe(422);
    expect(messageOf(response)).toContain(expected);
    expect(messageOf(response)).toMatch(/^BuildkitTemplate\.buildkit\.seatgeek\.io "builders" is invalid: /);
  });

  test('a name longer than 57 characters is refused', async () => {
    const response = await validate(valid, 'a'.repeat(58));
    expect(messageOf(response)).toContain('metadata.name: Too long');
    expect(messageOf(response)).toContain('must be no more than 57 characters');
    expect((await validate(valid, 'a'.repeat(57))).allowed).toBe(true);
  });

  test('every problem is reported at once, with structured causes', async () => {
    const response = await validate({
      port: 70000,
      buildkitdToml: '= nope',
      autoscaling: { idleTimeout: 'x' },
    });
    expect(response.status?.details?.causes?.map((c) => c.field)).toEqual([
      'spec.port',
      'spec.buildkitdToml',
      'spec.autoscaling.idleTimeout',
    ]);
    expect(messageOf(response)).toMatch(
      /is invalid: \[spec\.port: .*, spec\.buildkitdToml: .*, spec\.autoscaling\.idleTimeout: .*\]$/,
    );
  });

  test.each([
    ['moby/buildkit:latest', 'uses the floating tag :latest'],
    ['moby/buildkit', 'has no tag'],
    ['moby/buildkit:rootless', 'uses the floating tag :rootless'],
  ])('warns about the floating image %s', async (image, warning) => {
    const response = await validate({ ...valid, image });
    expect(response.allowed).toBe(true);
    expect(response.warnings?.join('\n')).toContain(warning);
  });

  test('pinned tags and digests do not warn; a registry port is not a tag', async () => {
    for (const image of ['registry:5000/buildkit:v0.13.1', `moby/buildkit@sha256:${'a'.repeat(64)}`]) {
      expect((await validate({ ...valid, image })).warnings).toBeUndefined();
    }
    expect((await validate({ ...valid, image: 'registry:5000/buildkit' })).warnings?.[0]).toContain(
      'has no tag',
    );
  });

  test('warns when rootless runs an image that does not look rootless', async () => {
    const response = await validate({ ...valid, rootless: true, image: 'moby/buildkit:v0.13.1' });
    expect(response.warnings?.join('\n')).toContain('does not look like a rootless image');
  });

  test('warns when nothing limits memory', async () => {
    const response = await validate({ port: 1234, image: 'moby/buildkit:v0.13.1' });
    expect(response.warnings).toEqual([expect.stringContaining('no memory limit')]);
  });

  test('the seed template, once defaulted, is valid (with floating-tag warning)', async () => {
    const seed = {
      rootless: true,
      port: 1234,
      buildkitdToml:
        '[log]\n  format = "json"\n\n[worker.oci]\n  enabled = true\n  max-parallelism = 3\n  cniPoolSize = 16\n\n[worker.containerd]\n  enabled = false\n',
      resources: {
        default: { requests: { cpu: '500m', memory: '8Gi' }, limits: { memory: '8Gi' } },
        maximum: { cpu: 8, memory: '16Gi' },
      },
    };
    const mutated = await mutateTemplate(templateRequest(seed));
    expect(mutated.response.allowed).toBe(true);
    const response = await validate({ ...seed, image: 'moby/buildkit:rootless' });
    expect(response.allowed).toBe(true);
    expect(response.warnings).toEqual([expect.stringContaining('floating tag :rootless')]);
  });

  test('DELETE is not validated (templates may be deleted; instances report TemplateNotFound)', async () => {
    const r = await validateTemplateHandler(templateRequest({}, { operation: 'DELETE', object: null }));
    expect(r.response.allowed).toBe(true);
  });

  test('a request for another kind is refused clearly', async () => {
    const r = await validateTemplateHandler(buildkitRequest({ template: 'x' }));
    expect(r.response).toMatchObject({ allowed: false, status: { code: 400 } });
    expect(messageOf(r.response)).toContain('serves BuildkitTemplate.buildkit.seatgeek.io, not Buildkit');
  });
});

describe('BuildkitTemplate spec.persistence validation', () => {
  const valid = { port: 1234, image: 'moby/buildkit:v0.13.1', resources: { maximum: { memory: '16Gi' } } };
  const withPersistence = (persistence: Record<string, unknown>, rootless = false) => ({
    ...valid,
    ...(rootless ? { rootless: true, image: 'moby/buildkit:v0.13.1-rootless' } : {}),
    persistence: { enabled: true, ...persistence },
  });

  test.each([
    [
      { size: 'lots' },
      'spec.persistence.size: Invalid value: "lots": must be a Kubernetes quantity, e.g. 20Gi',
    ],
    [{ size: '0' }, 'spec.persistence.size: Invalid value: "0": must be greater than zero'],
    [{ size: 0 }, 'spec.persistence.size: Invalid value: 0: must be greater than zero'],
    [{ size: '-1Gi' }, 'spec.persistence.size: Invalid value: "-1Gi": must be greater than zero'],
    [
      { storageClassName: 'Fast_SSD' },
      'spec.persistence.storageClassName: Invalid value: "Fast_SSD": must be a lowercase DNS subdomain',
    ],
    [{ storageClassName: 'fast-' }, 'spec.persistence.storageClassName: Invalid value: "fast-"'],
    [{ storageClassName: 'a'.repeat(254) }, 'must be no more than 253 characters'],
    [{ mountPath: 'cache' }, 'spec.persistence.mountPath: Invalid value: "cache": must be an absolute path'],
    [{ mountPath: '/' }, 'spec.persistence.mountPath: Invalid value: "/": must not be /'],
    [
      { mountPath: '/var/lib/../cache' },
      `spec.persistence.mountPath: Invalid value: "/var/lib/../cache": must not contain '..'`,
    ],
    [{ mountPath: '/..' }, "must not contain '..'"],
    [
      { mountPath: '/var//lib/buildkit' },
      'Invalid value: "/var//lib/buildkit": must be normalized (no "//", "." or trailing "/"; e.g. /var/lib/buildkit)',
    ],
    [{ mountPath: '/var/./cache' }, 'must be normalized'],
    [{ mountPath: '/cache/' }, 'must be normalized (no "//", "." or trailing "/"; e.g. /cache)'],
    [
      { mountPath: '/etc/buildkit' },
      'spec.persistence.mountPath: Invalid value: "/etc/buildkit": must not be, contain or lie inside /etc/buildkit (the buildkitd.toml mount)',
    ],
    [{ mountPath: '/etc' }, 'must not be, contain or lie inside /etc/buildkit (the buildkitd.toml mount)'],
    [{ mountPath: '/etc/buildkit/cache' }, 'lie inside /etc/buildkit'],
    [{ mountPath: '/usr/local/bin' }, '/usr/local/bin/buildkit-prestop.sh (the preStop script mount)'],
    [{ mountPath: '/usr' }, '(the preStop script mount)'],
    [{ mountPath: '/run/buildkit' }, "/run/buildkit (buildkitd's socket directory)"],
    [{ mountPath: '/run' }, "(buildkitd's socket directory)"],
    [{ mountPath: '/var/run/secrets' }, '(the service account token mount)'],
    [{ mountPath: '/etc/hosts' }, '/etc/hosts (a file the kubelet mounts)'],
    [{ mountPath: '/dev/shm' }, '/dev (a kernel filesystem)'],
    [{ mountPath: '/proc' }, '/proc (a kernel filesystem)'],
    [
      { accessModes: ['ReadWriteOnce', 'ReadWriteMany', 'ReadWriteOnce'] },
      'spec.persistence.accessModes[2]: Duplicate value: "ReadWriteOnce": listed twice',
    ],
    [
      { accessModes: ['ReadWriteOncePod', 'ReadWriteMany'] },
      'spec.persistence.accessModes: Invalid value: ["ReadWriteOncePod","ReadWriteMany"]: ReadWriteOncePod may not be combined with other access modes',
    ],
  ])('refuses %j', async (persistence, expected) => {
    const response = await validate(withPersistence(persistence));
    expect(response.allowed).toBe(false);
    expect(response.status?.code).toBe(422);
    expect(messageOf(response)).toContain(expected);
  });

  test.each([
    ['/home/user/.config/buildkit', '/home/user/.config/buildkit (the buildkitd.toml mount)'],
    ['/home/user', '/home/user/.config/buildkit (the buildkitd.toml mount)'],
    ['/run/user/1000', "/run/user/1000/buildkit (buildkitd's socket directory)"],
  ])('refuses the rootless mountPath %s', async (mountPath, expected) => {
    const response = await validate(withPersistence({ mountPath }, true));
    expect(messageOf(response)).toContain(
      `spec.persistence.mountPath: Invalid value: "${mountPath}": must not be, contain or lie inside ${expected}`,
    );
  });

  test.each([
    ['the rootful default', {}, false],
    ['the rootful state directory', { mountPath: '/var/lib/buildkit' }, false],
    ['the rootless state directory', { mountPath: '/home/user/.local/share/buildkit' }, true],
    ['a path of its own', { mountPath: '/cache' }, false],
    ['a name that only starts like a reserved path', { mountPath: '/etc/buildkitd-cache' }, false],
    ["the other layout's config directory", { mountPath: '/home/user/.config/buildkit' }, false],
    ['every field', { size: '100Gi', storageClassName: 'fast.ssd-1', accessModes: ['ReadWriteMany'] }, false],
    ['a size in bytes', { size: 21474836480 }, false],
    ['an empty storageClassName (the default class)', { storageClassName: '' }, false],
    ['ReadWriteOncePod alone', { accessModes: ['ReadWriteOncePod'] }, false],
    ['Retain', { whenDeleted: 'Retain' }, false],
  ])('allows %s', async (_name, persistence, rootless) => {
    expect(await validate(withPersistence(persistence, rootless))).toEqual({
      uid: expect.any(String),
      allowed: true,
    });
  });

  test('the fields are checked with persistence disabled too (they are stored, and enabling comes later)', async () => {
    const response = await validate({ ...valid, persistence: { enabled: false, mountPath: '/' } });
    expect(messageOf(response)).toContain('spec.persistence.mountPath: Invalid value: "/"');
  });

  test('every persistence problem is reported at once, with structured causes', async () => {
    const response = await validate(
      withPersistence({
        size: 'x',
        storageClassName: 'UPPER',
        mountPath: 'rel',
        accessModes: ['ReadWriteMany', 'ReadWriteMany'],
      }),
    );
    expect(response.status?.details?.causes?.map((c) => [c.field, c.reason])).toEqual([
      ['spec.persistence.size', 'FieldInvalid'],
      ['spec.persistence.storageClassName', 'FieldInvalid'],
      ['spec.persistence.mountPath', 'FieldInvalid'],
      ['spec.persistence.accessModes[1]', 'FieldDuplicate'],
    ]);
  });

  test("the webhook's own default passes its validation, in both layouts (defaults then validate)", async () => {
    for (const rootless of [false, true]) {
      const spec = withPersistence({}, rootless);
      const mutated = await mutateTemplate(templateRequest(spec));
      const ops = JSON.parse(Buffer.from(mutated.response.patch!, 'base64').toString()) as {
        path: string;
        value: unknown;
      }[];
      const mountPath = ops.find((op) => op.path === '/spec/persistence/mountPath')!.value;
      expect(mountPath).toBe(rootless ? '/home/user/.local/share/buildkit' : '/var/lib/buildkit');
      const response = await validate({ ...spec, persistence: { ...spec.persistence, mountPath } });
      expect(response.allowed).toBe(true);
    }
  });

  test('warns when buildkitd.toml sets root, which --root overrides with persistence', async () => {
    const spec = {
      ...withPersistence({ mountPath: '/var/lib/buildkit' }),
      buildkitdToml: 'root = "/somewhere/else"\n',
    };
    expect((await validate(spec)).warnings).toEqual([
      'spec.buildkitdToml sets root = "/somewhere/else", but with spec.persistence.enabled buildkitd is started with --root /var/lib/buildkit (the claim), which wins',
    ]);
    const off = { ...spec, persistence: { enabled: false } };
    expect((await validate(off)).warnings).toBeUndefined();
  });
});

describe('Buildkit validation', () => {
  const templates = new Map<string, BuildkitTemplate>([
    [
      'ci/builders',
      { metadata: { name: 'builders' }, spec: { resources: { maximum: { memory: '16Gi', cpu: 8 } } } },
    ],
    ['ci/owned', { metadata: { name: 'owned' }, spec: { lifecycle: { requireOwner: true } } }],
  ]);
  const reads: string[] = [];
  const reader: TemplateReader = async (ns, name) => {
    reads.push(`${ns}/${name}`);
    return templates.get(`${ns}/${name}`);
  };
  const handler = validateBuildkitHandler(reader);
  const check = async (...args: Parameters<typeof buildkitRequest>) =>
    (await handler(buildkitRequest(...args))).response;

  test('an instance of an existing template is allowed, reading the template live', async () => {
    reads.length = 0;
    expect((await check({ template: 'builders' })).allowed).toBe(true);
    expect(reads).toEqual(['ci/builders']);
  });

  test('a missing template is refused with where to look', async () => {
    const r = await check({ template: 'nope' });
    expect(messageOf(r)).toContain(
      'spec.template: Not found: "nope": no BuildkitTemplate "nope" in namespace "ci"',
    );
  });

  test('an empty template name is refused', async () => {
    expect(messageOf(await check({ template: '' }))).toContain('spec.template: Required value');
  });

  test('requireOwner refuses an instance without owner references, allows one with', async () => {
    expect(messageOf(await check({ template: 'owned' }))).toContain(
      'metadata.ownerReferences: Required value: BuildkitTemplate "owned" requires owner references',
    );
    const owner = { apiVersion: 'v1', kind: 'Pod', name: 'job', uid: '1' };
    expect((await check({ template: 'owned' }, { metadata: { ownerReferences: [owner] } })).allowed).toBe(
      true,
    );
  });

  test('resources above the template maximum are allowed with a warning that they are clamped', async () => {
    const r = await check({
      template: 'builders',
      resources: { limits: { memory: '32Gi' }, requests: { cpu: 2 } },
    });
    expect(r.allowed).toBe(true);
    expect(r.warnings).toEqual([
      'spec.resources.limits.memory 32Gi exceeds BuildkitTemplate "builders" maximum 16Gi; the pod gets 16Gi',
    ]);
  });

  test('each warning says what the pod really gets: the same clamp sizes the pod', async () => {
    // The template's default limit lowers the instance's request (a clamp the maximum alone does
    // not show); the maximum lowers the instance's limit.
    const template: BuildkitTemplate = {
      metadata: { name: 'sized', namespace: 'ci', uid: 'u-t' },
      spec: { resources: { default: { limits: { cpu: '2' } }, maximum: { memory: '4Gi' } } },
    };
    templates.set('ci/sized', template);
    const resources = { requests: { cpu: '3' }, limits: { memory: '6Gi' } };
    const r = await check({ template: 'sized', resources });
    expect(r.allowed).toBe(true);
    expect(r.warnings).toEqual([
      'spec.resources.limits.memory 6Gi exceeds BuildkitTemplate "sized" maximum 4Gi; the pod gets 4Gi',
      'spec.resources.requests.cpu 3 exceeds its cpu limit 2; the pod gets 2',
    ]);
    const pod = buildPod(
      template,
      { metadata: { name: 'bk', namespace: 'ci', uid: 'u-b' }, spec: { template: 'sized', resources } },
      serverFeatures({ major: 1, minor: 31 }),
    );
    const buildkitd = pod.spec!.containers[0]!.resources!;
    expect(buildkitd.limits).toMatchObject({ memory: '4Gi', cpu: '2' });
    expect(buildkitd.requests).toMatchObject({ cpu: '2' });
  });

  test('invalid quantities, requests above limits and bad label keys are refused', async () => {
    const r = await check({
      template: 'builders',
      resources: { requests: { memory: '2Gi' }, limits: { memory: '1Gi', cpu: 'x' } },
      labels: { 'a/b/c': 'v' },
    });
    expect(r.status?.details?.causes?.map((c) => c.field)).toEqual([
      'spec.labels',
      'spec.resources.limits.cpu',
      'spec.resources.requests.memory',
    ]);
  });

  test('a spec change on update is refused, naming the fields', async () => {
    const old = buildkitRequest({ template: 'builders' }).object;
    const r = await check({ template: 'other', labels: { a: 'b' } }, { operation: 'UPDATE', oldObject: old });
    expect(messageOf(r)).toContain(
      'spec: Forbidden: spec changes are not allowed for existing Buildkit objects (changed: spec.labels, spec.template)',
    );
  });

  test('a metadata-only update is allowed', async () => {
    const old = buildkitRequest({ template: 'builders' }).object;
    const r = await check(
      { template: 'builders' },
      { operation: 'UPDATE', oldObject: old, metadata: { labels: { x: 'y' } } },
    );
    expect(r.allowed).toBe(true);
  });

  test('a failing template read denies with the reason, not a crash', async () => {
    const failing = validateBuildkitHandler(async () => {
      throw new Error('connect ECONNREFUSED 127.0.0.1:6443');
    });
    const r = (await failing(buildkitRequest({ template: 'builders' }))).response;
    expect(r).toMatchObject({ allowed: false, status: { code: 500 } });
    expect(messageOf(r)).toContain(
      'could not read BuildkitTemplate "builders" in namespace "ci": connect ECONNREFUSED',
    );
  });

  test('changedSpecFields compares deeply', () => {
    expect(changedSpecFields({ a: { b: [1] } }, { a: { b: [1] } })).toEqual([]);
    expect(changedSpecFields({ a: 1 }, { b: 1 })).toEqual(['spec.a', 'spec.b']);
  });
});

describe('AdmissionReview parsing', () => {
  const good = { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: templateRequest({}) };

  test('accepts a v1 review', () => {
    expect(parseAdmissionReview(good).uid).toBe(good.request.uid);
  });

  test.each([
    ['not an object', 'hello', 'body must be a JSON AdmissionReview object'],
    ['an array', [], 'body must be a JSON AdmissionReview object'],
    [
      'v1beta1',
      { ...good, apiVersion: 'admission.k8s.io/v1beta1' },
      'expected apiVersion admission.k8s.io/v1',
    ],
    [
      'another kind',
      { ...good, kind: 'Pod' },
      'expected apiVersion admission.k8s.io/v1, kind AdmissionReview',
    ],
    ['no request', { apiVersion: good.apiVersion, kind: good.kind }, 'AdmissionReview has no request'],
    ['no uid', { ...good, request: { ...good.request, uid: '' } }, 'request.uid is missing'],
    ['no kind', { ...good, request: { ...good.request, kind: undefined } }, 'request.kind is missing'],
    [
      'bad operation',
      { ...good, request: { ...good.request, operation: 'PATCH' } },
      'request.operation "PATCH"',
    ],
    [
      'object not an object',
      { ...good, request: { ...good.request, object: 'x' } },
      'request.object must be an object',
    ],
  ])('refuses %s', (_name, body, message) => {
    expect(() => parseAdmissionReview(body)).toThrow(BadReviewError);
    expect(() => parseAdmissionReview(body)).toThrow(message);
  });
});

describe('--min-idle-timeout', () => {
  test('a shorter minimum admits a shorter idle timeout, and the error names the configured bound', async () => {
    const handler = templateValidationHandler({ minIdleTimeoutMs: 5000 });
    const ok = (await handler(templateRequest({ autoscaling: { enabled: true, idleTimeout: '6s' } })))
      .response;
    expect(ok.allowed).toBe(true);
    const short = (await handler(templateRequest({ autoscaling: { enabled: true, idleTimeout: '4s' } })))
      .response;
    expect(short.allowed).toBe(false);
    expect(short.status?.message).toContain(
      'spec.autoscaling.idleTimeout: Invalid value: "4s": must be between 5s and 24h',
    );
    // the default still refuses 6s
    expect(
      (await validateTemplateHandler(templateRequest({ autoscaling: { idleTimeout: '6s' } }))).response
        .allowed,
    ).toBe(false);
  });

  test.each(['0s', '500ms', '25h', 'soon'])('the flag value %s is refused with the flag name', (value) => {
    expect(() => templateLimitsFromOptions(value)).toThrow(
      `--min-idle-timeout "${value}": must be a duration from 1s to 24h`,
    );
  });
});
