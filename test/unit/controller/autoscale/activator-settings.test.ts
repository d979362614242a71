import { activatorSettings } from '../../../../controller/autoscale/activator-settings.ts';
import { UsageError } from '../../../../flags/errors.ts';

test('addresses come from the flag, else POD_IP; the range is parsed', () => {
  expect(activatorSettings('10.0.0.1, 10.0.0.2', '20000-20010', {})).toEqual({
    addresses: ['10.0.0.1', '10.0.0.2'],
    ports: { first: 20000, last: 20010 },
  });
  expect(activatorSettings(undefined, '20000-20999', { POD_IP: 'fd00::5' }).addresses).toEqual(['fd00::5']);
  expect(activatorSettings(undefined, '20000-20999', {}).addresses).toEqual([]);
});

test.each([
  ['not-an-ip', '--activator-address: "not-an-ip" is not an IP address'],
  [
    '127.0.0.1',
    '--activator-address: "127.0.0.1" is a loopback, link-local or unspecified address, which an EndpointSlice cannot route to',
  ],
  ['169.254.1.1', 'is a loopback, link-local'],
  ['::1', 'is a loopback, link-local'],
  ['10.0.0.1,10.0.0.1', 'an address is listed twice'],
])('address %s is refused', (flag, message) => {
  expect(() => activatorSettings(flag, '20000-20999', {})).toThrow(UsageError);
  expect(() => activatorSettings(flag, '20000-20999', {})).toThrow(message);
});

test.each(['20000', '0-10', '20-10', '1-70000', 'a-b'])('port range %s is refused', (range) => {
  expect(() => activatorSettings('10.0.0.1', range, {})).toThrow(
    /--activator-ports ".*": must be a range first-last within 1-65535/,
  );
});
