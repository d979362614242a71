// What the real node's teardown removes from iptables: the difference between `iptables-save`
// before the node started and now, limited to what the node tier owns (chains named KUBE-*,
// CNI-*, BKF-*, and rules that jump to them or name its pod network). Anything else that changed
// meanwhile belongs to someone else and stays. The result is an `iptables-restore --noflush`
// script, so each table changes in one commit.
import { OWNED_CHAIN_PREFIXES, POD_CIDR, BRIDGE } from './plan.ts';

interface Table {
  chains: Set<string>;
  rules: string[];
}

export function parseSave(text: string): Map<string, Table> {
  const tables = new Map<string, Table>();
  let current: Table | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      current = { chains: new Set(), rules: [] };
      tables.set(line.slice(1), current);
    } else if (!current || line === 'COMMIT' || line.startsWith('#') || line === '') {
      continue;
    } else if (line.startsWith(':')) {
      current.chains.add(line.slice(1).split(/\s+/)[0]!);
    } else if (line.startsWith('-A ')) {
      current.rules.push(line);
    }
  }
  return tables;
}

const owned = (chain: string): boolean => OWNED_CHAIN_PREFIXES.some((p) => chain.startsWith(p));

function mentionsOwned(rule: string): boolean {
  return (
    OWNED_CHAIN_PREFIXES.some((p) => rule.includes(` ${p}`)) ||
    rule.includes(POD_CIDR) ||
    rule.includes(` ${BRIDGE} `) ||
    rule.endsWith(` ${BRIDGE}`)
  );
}

/** The restore script that undoes the node tier's iptables changes; '' when there are none. */
export function cleanupScript(before: string, after: string): string {
  const old = parseSave(before);
  const out: string[] = [];
  for (const [name, now] of parseSave(after)) {
    const was = old.get(name) ?? { chains: new Set<string>(), rules: [] };
    const newChains = [...now.chains].filter((c) => owned(c) && !was.chains.has(c));
    const remaining = new Map<string, number>();
    for (const r of was.rules) remaining.set(r, (remaining.get(r) ?? 0) + 1);
    const deletes: string[] = [];
    for (const rule of now.rules) {
      const left = remaining.get(rule) ?? 0;
      if (left > 0) {
        remaining.set(rule, left - 1);
        continue;
      }
      const chain = rule.split(/\s+/)[1]!;
      // Rules inside a new chain go with the chain's flush.
      if (newChains.includes(chain)) continue;
      if (owned(chain) || mentionsOwned(rule)) deletes.push(`-D${rule.slice(2)}`);
    }
    if (deletes.length === 0 && newChains.length === 0) continue;
    out.push(
      `*${name}`,
      ...deletes,
      ...newChains.map((c) => `-F ${c}`),
      ...newChains.map((c) => `-X ${c}`),
      'COMMIT',
    );
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

/** Owned chains and rules still present after a cleanup (for the leftover check). */
export function ownedLeftovers(before: string, after: string): string[] {
  const script = cleanupScript(before, after);
  return script.split('\n').filter((l) => l.startsWith('-D') || l.startsWith('-X'));
}
