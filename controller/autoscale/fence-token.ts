// The fence token of a namespace: the Secret the injected sidecars mount (optional) and the
// controller presents on POST /fence. Created by the controller, with a random token, before
// the first autoscaled pod of the namespace, so the pod starts with it mounted; any later leader
// reads the same Secret.
import { randomBytes } from 'node:crypto';
import type { CoreV1Api } from '@kubernetes/client-node';

import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../../api/labels.ts';
import { DEFAULT_TOKEN_SECRET_NAME, TOKEN_KEY } from '../../api/sidecar-contract.ts';
import { isConflict, isNotFound } from '../../kube/errors.ts';

export interface FenceTokens {
  /** the namespace's token, creating its Secret when there is none */
  ensure(namespace: string): Promise<string>;
}

export function fenceTokens(core: CoreV1Api, secretName = DEFAULT_TOKEN_SECRET_NAME): FenceTokens {
  const cache = new Map<string, string>();
  const read = async (namespace: string): Promise<string | undefined> => {
    try {
      const secret = await core.readNamespacedSecret({ namespace, name: secretName });
      const value = secret.data?.[TOKEN_KEY];
      if (!value) throw new Error(`Secret ${namespace}/${secretName} has no key "${TOKEN_KEY}"`);
      return Buffer.from(value, 'base64').toString('utf8').trim();
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  };
  return {
    async ensure(namespace) {
      const cached = cache.get(namespace);
      if (cached) return cached;
      let token = await read(namespace);
      if (token === undefined) {
        try {
          await core.createNamespacedSecret({
            namespace,
            body: {
              metadata: { name: secretName, labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE } },
              type: 'Opaque',
              stringData: { [TOKEN_KEY]: randomBytes(32).toString('hex') },
            },
          });
        } catch (error) {
          if (!isConflict(error)) throw error; // another replica made it: read theirs
        }
        token = await read(namespace);
        if (token === undefined)
          throw new Error(`Secret ${namespace}/${secretName} vanished after its creation`);
      }
      cache.set(namespace, token);
      return token;
    },
  };
}
