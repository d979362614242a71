import { V1MicroTime } from '@kubernetes/client-node';
import type { V1Lease } from '@kubernetes/client-node';

import {
  activatorLeaseName,
  liveActivatorAddresses,
} from '../../../../controller/autoscale/activator-registry.ts';

const NOW = Date.parse('2026-12-02T10:00:00Z');
const lease = (addresses: string, renewedAgoMs: number, durationS = 15): V1Lease => ({
  metadata: { annotations: { 'buildkit-fleet.io/activator-addresses': addresses } },
  spec: {
    renewTime: new V1MicroTime(NOW - renewedAgoMs),
    leaseDurationSeconds: durationS,
  },
});

test('fresh Leases count, expired ones do not; our own addresses always do; sorted, each once', () => {
  const leases = [
    lease('10.0.0.2', 1000),
    lease('10.0.0.3,10.0.0.4', 16_000),
    lease('10.0.0.1, 10.0.0.5', 14_000),
  ];
  expect(liveActivatorAddresses(leases, ['10.0.0.1'], NOW)).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.5']);
});

test('a Lease without a renew time, a duration or addresses adds nothing', () => {
  const odd: V1Lease[] = [{ metadata: {}, spec: {} }, lease('', 0), lease('10.0.0.9', 0, 0)];
  expect(liveActivatorAddresses(odd, [], NOW)).toEqual([]);
});

test('one Lease name per identity, valid as an object name', () => {
  expect(activatorLeaseName('host_ab12')).toMatch(/^bkf-activator-[0-9a-f]{12}$/);
  expect(activatorLeaseName('host_ab12')).toBe(activatorLeaseName('host_ab12'));
  expect(activatorLeaseName('host_cd34')).not.toBe(activatorLeaseName('host_ab12'));
});
