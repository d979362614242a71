import type { BuildkitTemplate } from '../../../api/types.generated.ts';
import { templateConfigMaps } from '../../../controller/configmaps.ts';
import { BuildError } from '../../../controller/meta.ts';
import { prestopScript } from '../../../controller/prestop.ts';

const template = (spec: BuildkitTemplate['spec'], uid = 'tpl-uid-1'): BuildkitTemplate => ({
  apiVersion: 'buildkit.seatgeek.io/v1alpha1',
  kind: 'BuildkitTemplate',
  metadata: { name: 'arm64', namespace: 'ci', uid },
  spec,
});

const owner = {
  apiVersion: 'buildkit.seatgeek.io/v1alpha1',
  kind: 'BuildkitTemplate',
  name: 'arm64',
  uid: 'tpl-uid-1',
  controller: true,
  blockOwnerDeletion: true,
};
const labels = {
  'app.kubernetes.io/name': 'buildkit',
  'app.kubernetes.io/managed-by': 'buildkit-fleet',
  'buildkit.seatgeek.io/template': 'arm64',
};

describe('templateConfigMaps', () => {
  test('a template without TOML or preStop script wants neither ConfigMap (both deleted)', () => {
    expect(templateConfigMaps(template({ port: 1234 }))).toEqual({
      'buildkit-arm64-toml': null,
      'buildkit-arm64-scripts': null,
    });
  });

  test('TOML: buildkit-<name>-toml with key buildkitd.toml, owned by the template', () => {
    const toml = '[worker.oci]\n  enabled = true\n';
    expect(templateConfigMaps(template({ buildkitdToml: toml }))['buildkit-arm64-toml']).toEqual({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'buildkit-arm64-toml', namespace: 'ci', labels, ownerReferences: [owner] },
      data: { 'buildkitd.toml': toml },
    });
  });

  test("preStop: buildkit-<name>-scripts with the drain script for the template's port", () => {
    const maps = templateConfigMaps(template({ port: 8372, lifecycle: { preStopScript: true } }));
    expect(maps['buildkit-arm64-toml']).toBeNull();
    expect(maps['buildkit-arm64-scripts']).toEqual({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'buildkit-arm64-scripts', namespace: 'ci', labels, ownerReferences: [owner] },
      data: { 'buildkit-prestop.sh': prestopScript(8372) },
    });
  });

  test('built from the defaulted spec: port 0 or none means 1234, as if the webhook had run', () => {
    for (const port of [0, undefined]) {
      const maps = templateConfigMaps(template({ port, lifecycle: { preStopScript: true } }));
      expect(maps['buildkit-arm64-scripts']!.data).toEqual({ 'buildkit-prestop.sh': prestopScript(1234) });
    }
    expect(templateConfigMaps(template(undefined))['buildkit-arm64-toml']).toBeNull();
  });

  test('an empty TOML string wants no ConfigMap (seatgeek)', () => {
    expect(templateConfigMaps(template({ buildkitdToml: '' }))['buildkit-arm64-toml']).toBeNull();
  });

  test('a template without uid cannot own anything', () => {
    expect(() => templateConfigMaps(template({ buildkitdToml: 'x = 1' }, ''))).toThrow(BuildError);
  });

  test('the same template gives equal ConfigMaps, and the input is not changed', () => {
    const input = template({ buildkitdToml: 'a = 1', lifecycle: { preStopScript: true } });
    const copy = structuredClone(input);
    expect(templateConfigMaps(input)).toEqual(templateConfigMaps(copy));
    expect(input).toEqual(copy);
  });
});
