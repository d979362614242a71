// What the harness does for a newly registered node in place of the controllers it leaves off:
// remove the not-ready taint (node lifecycle) and give it a pod CIDR (node IPAM). Shared by the
// hollow nodes (cluster.ts) and the real node (real-node/start.ts).

export interface RegisteredNode {
  spec?: { taints?: { key: string; effect: string }[]; podCIDR?: string };
  status?: { conditions?: { type: string; status: string }[] };
}

/**
 * The JSON patch that finishes a node's registration; empty when nothing is left to do. `test`
 * makes the taint change a compare-and-swap against a concurrent kubelet update. `assignCidr`
 * false holds the CIDR back (a hollow node waits for its CSINode first).
 */
export function registrationPatch(node: RegisteredNode, podCidr: string, assignCidr = true): object[] {
  const taints = node.spec?.taints ?? [];
  const kept = taints.filter((t) => t.key !== 'node.kubernetes.io/not-ready');
  const ops: object[] = [];
  if (kept.length !== taints.length) {
    ops.push({ op: 'test', path: '/spec/taints', value: taints });
    ops.push({ op: 'replace', path: '/spec/taints', value: kept });
  }
  if (!node.spec?.podCIDR && assignCidr) {
    ops.push({ op: 'add', path: '/spec/podCIDR', value: podCidr });
    ops.push({ op: 'add', path: '/spec/podCIDRs', value: [podCidr] });
  }
  return ops;
}

export function isReady(node: RegisteredNode): boolean {
  return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}
