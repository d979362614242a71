// The patch that stands in for the node-lifecycle and node-IPAM controllers the harness leaves off.
import { isReady, registrationPatch } from '../../../hack/node-registration.ts';

const notReady = { key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' };
const other = { key: 'dedicated', effect: 'NoSchedule' };

test('a new node loses only the not-ready taint (as a compare-and-swap) and gets its pod CIDR', () => {
  expect(registrationPatch({ spec: { taints: [notReady, other] } }, '10.244.1.0/24')).toEqual([
    { op: 'test', path: '/spec/taints', value: [notReady, other] },
    { op: 'replace', path: '/spec/taints', value: [other] },
    { op: 'add', path: '/spec/podCIDR', value: '10.244.1.0/24' },
    { op: 'add', path: '/spec/podCIDRs', value: ['10.244.1.0/24'] },
  ]);
});

test('nothing left to do: an empty patch; the CIDR can be held back', () => {
  expect(registrationPatch({ spec: { taints: [other], podCIDR: '10.244.1.0/24' } }, '10.244.1.0/24')).toEqual(
    [],
  );
  expect(registrationPatch({ spec: {} }, '10.244.1.0/24', false)).toEqual([]);
  expect(isReady({ status: { conditions: [{ type: 'Ready', status: 'True' }] } })).toBe(true);
  expect(isReady({ status: { conditions: [{ type: 'Ready', status: 'False' }] } })).toBe(false);
});
