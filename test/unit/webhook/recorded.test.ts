// Replays AdmissionReviews recorded from kube-apiserver 1.20 (scripts/record-admission-fixtures.ts)
// through the handlers, so the parsing and decisions are checked on what the API server really sends.
import fastJsonPatch from 'fast-json-patch';

import type { BuildkitTemplate } from '../../../api/types.generated.ts';
import { parseAdmissionReview } from '../../../webhook/admission.ts';
import {
  mutateTemplate,
  validateBuildkitHandler,
  validateTemplateHandler,
} from '../../../webhook/handlers.ts';
import { recorded } from '../../support/admission-requests.ts';

const patchOf = (b64: string | undefined) => (b64 ? JSON.parse(Buffer.from(b64, 'base64').toString()) : []);

test('seed template CREATE: the rootless image is defaulted; schema defaults already present are kept', async () => {
  const fixture = recorded('seed-template-create.mutate-buildkittemplates');
  const request = parseAdmissionReview(fixture);
  // the API server applied the schema defaults before calling us ...
  expect((request.object as unknown as BuildkitTemplate).spec).toMatchObject({
    imagePullPolicy: 'IfNotPresent',
    hostUsers: true,
    persistence: { enabled: false, size: '20Gi', accessModes: ['ReadWriteOnce'], whenDeleted: 'Delete' },
  });
  const { response } = await mutateTemplate(request);
  // ... so the only things left to default are those that depend on another field
  expect(patchOf(response.patch)).toEqual([
    { op: 'add', path: '/spec/persistence/mountPath', value: '/home/user/.local/share/buildkit' },
    { op: 'add', path: '/spec/image', value: 'moby/buildkit:rootless' },
  ]);
  expect(response.uid).toBe(request.uid);

  const patched = fastJsonPatch.applyPatch(
    structuredClone(request.object),
    patchOf(response.patch),
  ).newDocument;
  const again = await mutateTemplate({ ...request, object: patched });
  expect(again.response.patch).toBeUndefined();
});

test('seed template CREATE: the validating call sees the mutated object and allows it with a warning', async () => {
  const request = parseAdmissionReview(recorded('seed-template-create.validate-buildkittemplates'));
  expect((request.object as unknown as BuildkitTemplate).spec?.image).toBe('moby/buildkit:rootless');
  const { response } = await validateTemplateHandler(request);
  expect(response.allowed).toBe(true);
  expect(response.warnings).toEqual([expect.stringContaining('floating tag :rootless')]);
});

test('server-side dry-run: the request says so and gets the same treatment', async () => {
  const request = parseAdmissionReview(recorded('template-dry-run.mutate-buildkittemplates'));
  expect(request.dryRun).toBe(true);
  const { response } = await mutateTemplate(request);
  expect(patchOf(response.patch)).toEqual(
    expect.arrayContaining([
      { op: 'replace', path: '/spec/port', value: 1234 },
      { op: 'add', path: '/spec/image', value: 'moby/buildkit:latest' },
    ]),
  );
});

test('Buildkit CREATE reads the template named in the recorded object', async () => {
  const request = parseAdmissionReview(recorded('buildkit-create.validate-buildkits'));
  const reads: string[] = [];
  const handler = validateBuildkitHandler(async (ns, name) => {
    reads.push(`${ns}/${name}`);
    return { metadata: { name }, spec: {} };
  });
  expect((await handler(request)).response.allowed).toBe(true);
  expect(reads).toEqual(['fixtures/buildkit-arm64']);
});

test('Buildkit UPDATE of the spec is refused; oldObject comes from the API server', async () => {
  const request = parseAdmissionReview(recorded('buildkit-spec-update.validate-buildkits'));
  expect(request.operation).toBe('UPDATE');
  const { response } = await validateBuildkitHandler(async () => undefined)(request);
  expect(response.allowed).toBe(false);
  expect(response.status?.message).toContain('(changed: spec.labels)');
});
