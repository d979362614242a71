// The controller's activator flags, checked: addresses Services may route to (the API server
// refuses loopback, link-local and unspecified endpoint addresses, so they are refused here
// with the flag's name rather than later on every EndpointSlice write) and the port range.
import net from 'node:net';

import { UsageError } from '../../flags/errors.ts';
import type { ActivatorSettings } from './reconcile-autoscale.ts';

function checkAddress(address: string, source: string): string {
  const family = net.isIP(address);
  if (family === 0) throw new UsageError(`${source}: "${address}" is not an IP address`);
  const blocked = new net.BlockList();
  blocked.addSubnet('127.0.0.0', 8, 'ipv4');
  blocked.addSubnet('169.254.0.0', 16, 'ipv4');
  blocked.addAddress('0.0.0.0', 'ipv4');
  blocked.addAddress('::1', 'ipv6');
  blocked.addAddress('::', 'ipv6');
  blocked.addSubnet('fe80::', 10, 'ipv6');
  if (blocked.check(address, family === 4 ? 'ipv4' : 'ipv6')) {
    throw new UsageError(
      `${source}: "${address}" is a loopback, link-local or unspecified address, which an EndpointSlice cannot route to`,
    );
  }
  return address;
}

export function activatorSettings(
  addressFlag: string | undefined,
  portsFlag: string,
  env: NodeJS.ProcessEnv = process.env,
): ActivatorSettings {
  const source = addressFlag !== undefined ? '--activator-address' : 'POD_IP';
  const raw = addressFlag ?? env['POD_IP'] ?? '';
  const addresses = raw
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean)
    .map((a) => checkAddress(a, source));
  if (new Set(addresses).size !== addresses.length)
    throw new UsageError(`${source}: an address is listed twice`);
  const match = /^([0-9]{1,5})-([0-9]{1,5})$/.exec(portsFlag.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  if (!match || first < 1 || last > 65535 || first > last) {
    throw new UsageError(
      `--activator-ports "${portsFlag}": must be a range first-last within 1-65535, e.g. 20000-20999`,
    );
  }
  return { addresses, ports: { first, last } };
}
