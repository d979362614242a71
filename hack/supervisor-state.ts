// The state file of the `cli.ts up` supervisor (<local dir>/supervisor.json), shared by the
// supervisor, which writes it, and the CLI, which reads it. Kept apart from supervisor.ts because
// that module runs the supervisor as soon as it is imported.
import fs from 'node:fs';
import path from 'node:path';

export interface SupervisorState {
  pid: number;
  start?: number;
  phase: 'starting' | 'ready' | 'failed' | 'stopping';
  nodes: number;
  realNode?: boolean;
  clusterDir: string;
  server?: string;
  kubeconfig?: string;
  kubectl?: string;
  helm?: string;
  error?: string;
  updatedAt: string;
}

export const SUPERVISOR_FILE = 'supervisor.json';
export const SUPERVISOR_LOG = 'supervisor.log';

export function supervisorFile(localDir: string): string {
  return path.join(localDir, SUPERVISOR_FILE);
}

export function readSupervisor(localDir: string): SupervisorState | undefined {
  try {
    return JSON.parse(fs.readFileSync(supervisorFile(localDir), 'utf8')) as SupervisorState;
  } catch {
    return undefined;
  }
}

export function writeSupervisor(localDir: string, s: SupervisorState): void {
  const file = supervisorFile(localDir);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify({ ...s, updatedAt: new Date().toISOString() }, null, 2));
  fs.renameSync(`${file}.tmp`, file);
}
