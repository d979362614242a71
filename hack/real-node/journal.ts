// The record of every host change the real node makes, written into the cluster's state.json
// before the change happens, so that whoever tears the cluster down (stop(), the watchdog, the
// next start's sweep) can undo exactly those changes, even after a crash.
import type { NodeLayout } from './plan.ts';

export interface RealNodeJournal {
  clusterId: string;
  layout: NodeLayout;
  /** sysctl values before the start (SAVED_SYSCTLS); undefined where the key does not exist */
  sysctls: Record<string, string | undefined>;
  /** `iptables-save` / `ip6tables-save` before the start */
  iptablesBefore: { v4: string; v6: string };
  /** FIXED_HOST_DIRS that did not exist before the start */
  createdDirs: string[];
  /** the egress guard's cgroup-v2 dir, once made; relative path for iptables' --path */
  guard?: { dir: string; path: string };
  guardRulesInstalled?: boolean;
  hostsLine?: string;
  nodeAddressAdded?: boolean;
}
