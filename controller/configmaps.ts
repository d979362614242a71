// The ConfigMaps of a BuildkitTemplate, as a desired set: name -> ConfigMap, or null when the
// template does not need it (the controller then deletes it if it exists). seatgeek's names and
// keys, so pods and tooling built for seatgeek find the same objects.
import type { V1ConfigMap } from '@kubernetes/client-node';

import type { BuildkitTemplate } from '../api/types.generated.ts';
import { defaultTemplateSpec } from '../api/defaults.ts';
import {
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  NAME_LABEL,
  NAME_LABEL_VALUE,
  TEMPLATE_LABEL,
} from '../api/labels.ts';
import {
  labelValueForName,
  scriptsConfigMapName,
  templateOwnerReference,
  tomlConfigMapName,
} from './meta.ts';
import { PRESTOP_SCRIPT_KEY, prestopScript } from './prestop.ts';

export const TOML_KEY = 'buildkitd.toml';

/** `{ buildkit-<name>-toml: ConfigMap | null, buildkit-<name>-scripts: ConfigMap | null }` */
export function templateConfigMaps(template: BuildkitTemplate): Record<string, V1ConfigMap | null> {
  const name = template.metadata?.name ?? '';
  // Built from the defaulted spec: the controller must not depend on whether the webhook ran.
  const spec = defaultTemplateSpec(template.spec);
  const configMap = (cmName: string, data: Record<string, string>): V1ConfigMap => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: cmName,
      namespace: template.metadata?.namespace,
      labels: {
        [NAME_LABEL]: NAME_LABEL_VALUE,
        [MANAGED_BY_LABEL]: MANAGED_BY_VALUE,
        [TEMPLATE_LABEL]: labelValueForName(name),
      },
      ownerReferences: [templateOwnerReference(template)],
    },
    data,
  });
  return {
    [tomlConfigMapName(name)]: spec.buildkitdToml
      ? configMap(tomlConfigMapName(name), { [TOML_KEY]: spec.buildkitdToml })
      : null,
    [scriptsConfigMapName(name)]: spec.lifecycle?.preStopScript
      ? configMap(scriptsConfigMapName(name), { [PRESTOP_SCRIPT_KEY]: prestopScript(spec.port!) })
      : null,
  };
}
