// The fenced scale-down against a real sidecar process on loopback (its stats port and fence are
// the real ones; an echo server stands in for buildkitd).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';

import { SIDECAR_CONTAINER_NAME, STATS_PORT_NAME } from '../../../../api/sidecar-contract.ts';
import type { ScaleDownSteps } from '../../../../controller/autoscale/scale-down.ts';
import { runScaleDown } from '../../../../controller/autoscale/scale-down.ts';
import { readFence, readStats } from '../../../../controller/autoscale/sidecar-client.ts';
import { connect, roundTrip, runCleanups, startSidecarToEcho } from '../../../support/sidecar.ts';

afterEach(runCleanups);

const TOKEN = 'fence-token-for-tests';

function podAt(stats: number): V1Pod {
  return {
    metadata: { name: 'bk-0', uid: 'uid-0' },
    spec: {
      containers: [
        { name: SIDECAR_CONTAINER_NAME, ports: [{ name: STATS_PORT_NAME, containerPort: stats }] },
      ],
    },
    status: { podIP: '127.0.0.1' },
  };
}

async function sidecar() {
  const dir = mkdtempSync(join(tmpdir(), 'bkf-fence-'));
  writeFileSync(join(dir, 'token'), TOKEN);
  const s = await startSidecarToEcho(['--token-file', join(dir, 'token')]);
  const address = { host: '127.0.0.1', port: s.stats };
  return { ...s, address, pod: podAt(s.stats) };
}

function steps(pod: V1Pod, evidence: ScaleDownSteps['evidence'], extra: Partial<ScaleDownSteps> = {}) {
  const calls: string[] = [];
  const s: ScaleDownSteps = {
    pods: [pod],
    evidence,
    token: TOKEN,
    handoff: undefined,
    requestTimeoutMs: 2000,
    settleMs: 50,
    routeToActivator: async () => void calls.push('route'),
    recordZero: async () => void calls.push('record'),
    deletePod: async (p) => void calls.push(`delete ${p.metadata?.name}`),
    ...extra,
  };
  return { s, calls };
}

const evidenceOf = async (address: { host: string; port: number }) => {
  const st = await readStats(address, 2000);
  return [{ pod: 'bk-0', bootId: st.bootId, opened: st.opened }];
};

test('an idle sidecar that stays idle under the fence is scaled down: route, record, then delete', async () => {
  const sc = await sidecar();
  const { s, calls } = steps(sc.pod, await evidenceOf(sc.address));
  await expect(runScaleDown(s)).resolves.toEqual({ scaled: true, pods: ['bk-0'] });
  expect(calls).toEqual(['route', 'record', 'delete bk-0']);
});

test('a client that connects while the route settles aborts the scale-down, is served, and the fence is lifted', async () => {
  const sc = await sidecar();
  let client: Awaited<ReturnType<typeof connect>> | undefined;
  const { s, calls } = steps(sc.pod, await evidenceOf(sc.address), {
    routeToActivator: async () => {
      client = await connect(sc.listen);
    },
  });
  const outcome = await runScaleDown(s);
  expect(outcome).toEqual({ scaled: false, reason: 'fence: pod bk-0: a client connected under the fence' });
  expect(calls).toEqual([]);
  expect(await roundTrip(client!, 'still served')).toBe('still served');
  expect((await readFence(sc.address, 2000)).fenced).toBe(false);
});

test('a connection between the idle reading and the fence aborts before the route changes', async () => {
  const sc = await sidecar();
  const evidence = await evidenceOf(sc.address);
  const c = await connect(sc.listen);
  await roundTrip(c, 'x');
  c.destroy();
  const { s, calls } = steps(sc.pod, evidence);
  const outcome = await runScaleDown(s);
  expect(outcome.scaled).toBe(false);
  expect(calls).toEqual([]);
});

test('a sidecar without the fence token refuses the fence: nothing is routed or deleted', async () => {
  const sc = await sidecar();
  const { s, calls } = steps(sc.pod, await evidenceOf(sc.address), { token: 'wrong' });
  const outcome = await runScaleDown(s);
  expect(outcome).toEqual({
    scaled: false,
    reason: 'fence: pod bk-0: POST /fence answered 401: unauthorized',
  });
  expect(calls).toEqual([]);
});

test('an unreachable sidecar aborts', async () => {
  const pod = podAt(1); // nothing listens on port 1
  const { s, calls } = steps(pod, [{ pod: 'bk-0', bootId: 'b', opened: 0 }], { requestTimeoutMs: 500 });
  const outcome = await runScaleDown(s);
  expect(outcome.scaled).toBe(false);
  expect(outcome.scaled === false && outcome.reason).toMatch(
    /^fence: pod bk-0: POST \/fence: connect ECONNREFUSED/,
  );
  expect(calls).toEqual([]);
});
