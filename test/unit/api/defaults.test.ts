import fastJsonPatch from 'fast-json-patch';

import type { BuildkitTemplate } from '../../../api/types.generated.ts';
import { mutateTemplate } from '../../../webhook/handlers.ts';
import { defaultTemplateSpec, templateDefaultsPatch } from '../../../api/defaults.ts';
import { templateRequest } from '../../support/admission-requests.ts';

const template = (spec: Record<string, unknown> | undefined): BuildkitTemplate => ({
  apiVersion: 'buildkit.seatgeek.io/v1alpha1',
  kind: 'BuildkitTemplate',
  metadata: { name: 't', namespace: 'ci' },
  ...(spec === undefined ? {} : { spec }),
});

const applyPatch = (t: BuildkitTemplate): BuildkitTemplate =>
  fastJsonPatch.applyPatch(structuredClone(t), templateDefaultsPatch(t), true, false).newDocument;

describe('BuildkitTemplate defaults', () => {
  test('an empty spec gets every default', () => {
    expect(defaultTemplateSpec({})).toEqual({
      port: 1234,
      image: 'moby/buildkit:latest',
      imagePullPolicy: 'IfNotPresent',
      hostUsers: true,
      lifecycle: { requireOwner: false, terminationGracePeriodSeconds: 900 },
      autoscaling: { enabled: false, idleTimeout: '5m' },
      persistence: {
        enabled: false,
        size: '20Gi',
        accessModes: ['ReadWriteOnce'],
        mountPath: '/var/lib/buildkit',
        whenDeleted: 'Delete',
      },
    });
  });

  test("persistence.mountPath follows rootless: buildkitd's state directory of each layout", () => {
    expect(defaultTemplateSpec({}).persistence?.mountPath).toBe('/var/lib/buildkit');
    expect(defaultTemplateSpec({ rootless: false }).persistence?.mountPath).toBe('/var/lib/buildkit');
    expect(defaultTemplateSpec({ rootless: true }).persistence?.mountPath).toBe(
      '/home/user/.local/share/buildkit',
    );
    // as the API server sends it: schema defaults applied, mountPath (no schema default) missing
    const stored = template({
      rootless: true,
      persistence: { enabled: true, size: '20Gi', accessModes: ['ReadWriteOnce'], whenDeleted: 'Delete' },
    });
    const persistenceOps = templateDefaultsPatch(stored).filter((op) =>
      op.path.startsWith('/spec/persistence'),
    );
    expect(persistenceOps).toEqual([
      { op: 'add', path: '/spec/persistence/mountPath', value: '/home/user/.local/share/buildkit' },
    ]);
  });

  test('a mountPath the user set is kept, whatever rootless says', () => {
    const spec = { rootless: true, persistence: { enabled: true, mountPath: '/cache' } };
    expect(defaultTemplateSpec(spec).persistence).toMatchObject({ enabled: true, mountPath: '/cache' });
  });

  test('a rootless template without an image gets the rootless image (seatgeek bug fixed)', () => {
    expect(defaultTemplateSpec({ rootless: true }).image).toBe('moby/buildkit:rootless');
  });

  test('port 0 (how seatgeek Go clients send an unset port) becomes 1234', () => {
    expect(defaultTemplateSpec({ port: 0 }).port).toBe(1234);
  });

  test('nothing the user set is overwritten', () => {
    const spec = {
      port: 8372,
      image: 'example.com/buildkit:v0.13.1',
      rootless: true,
      imagePullPolicy: 'Always' as const,
      hostUsers: false,
      lifecycle: { requireOwner: true, terminationGracePeriodSeconds: 60 },
      autoscaling: { enabled: true, idleTimeout: '90s' },
      persistence: {
        enabled: true,
        size: '100Gi',
        storageClassName: 'fast-ssd',
        accessModes: ['ReadWriteOncePod' as const] as ['ReadWriteOncePod'],
        mountPath: '/var/lib/buildkit',
        whenDeleted: 'Retain' as const,
      },
    };
    expect(defaultTemplateSpec(spec)).toEqual(spec);
    expect(templateDefaultsPatch(template(spec))).toEqual([]);
  });

  test('a missing spec is created', () => {
    expect(templateDefaultsPatch(template(undefined))[0]).toMatchObject({ op: 'add', path: '/spec' });
  });

  test('does not mutate its input', () => {
    const spec = { rootless: true };
    defaultTemplateSpec(spec);
    expect(spec).toEqual({ rootless: true });
  });

  test.each([
    ['empty', {}],
    ['no spec', undefined],
    ['rootless', { rootless: true }],
    ['partial lifecycle', { lifecycle: { preStopScript: true } }],
    ['partial autoscaling', { autoscaling: { enabled: true } }],
    ['persistence on', { persistence: { enabled: true } }],
    ['persistence on, rootless', { rootless: true, persistence: { enabled: true, size: '5Gi' } }],
    ['persistence with a mountPath', { persistence: { enabled: true, mountPath: '/cache' } }],
    ['port 0', { port: 0 }],
    ['full', { port: 1, image: 'x:v1', imagePullPolicy: 'Never', hostUsers: true }],
  ])('is idempotent: the second patch is empty (%s)', (_name, spec) => {
    const once = applyPatch(template(spec));
    expect(templateDefaultsPatch(once)).toEqual([]);
    expect(applyPatch(once)).toEqual(once);
  });

  test('the handler answers with a base64 JSONPatch, and nothing on a defaulted object', async () => {
    const first = await mutateTemplate(templateRequest({ rootless: true }));
    expect(first.response).toMatchObject({ allowed: true, patchType: 'JSONPatch' });
    const ops = JSON.parse(Buffer.from(first.response.patch!, 'base64').toString());
    expect(ops).toContainEqual({ op: 'add', path: '/spec/image', value: 'moby/buildkit:rootless' });

    const defaulted = defaultTemplateSpec({ rootless: true }) as Record<string, unknown>;
    const second = await mutateTemplate(templateRequest(defaulted));
    expect(second.response).toEqual({ uid: second.response.uid, allowed: true });
  });

  test('a dry-run request gets the same patch (no side effects to skip)', async () => {
    const real = await mutateTemplate(templateRequest({}));
    const dry = await mutateTemplate(templateRequest({}, { dryRun: true }));
    expect(dry.response.patch).toBe(real.response.patch);
  });
});
