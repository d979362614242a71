// The Helm chart installed as a user installs it, on the real node with the locally built platform
// image: the webhook and the controller run as pods, the API server calls the webhook through its
// Service, an autoscaled Buildkit scales to zero and wakes, the CI client (`acquire`/`release`)
// hands out an endpoint a client reaches and wakes it at zero, `helm test` passes, an upgrade keeps
// the CRDs and running Buildkits, and an uninstall leaves nothing that blocks the cluster.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { INSTANCE_LABEL } from '../../api/labels.ts';
import { runCli } from '../../cli/commands.ts';
import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { listWorkers } from '../support/buildkit-client.ts';
import { runHelm } from '../support/helm.ts';
import { describeRealNode } from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';

const CHART = fileURLToPath(new URL('../../charts/buildkit-fleet', import.meta.url));
const RELEASE = 'fleet';
const PLATFORM_NS = 'bkf-system';
const NAMESPACE = 'helm-ci';

describeRealNode('the Helm chart on the real node', () => {
  let cluster: LocalCluster;

  const helm = (args: string[]) => runHelm(cluster.helmPath, cluster.kubeconfigPath, args);
  const mustHelm = async (args: string[]) => {
    const r = await helm(args);
    if (r.code !== 0) {
      // say why: the platform's pods and the last lines of their logs
      const pods = await cluster.kubectl(['get', 'pods', '-A', '-o', 'wide'], { allowFail: true });
      const logs = await cluster.kubectl(
        ['logs', '-n', PLATFORM_NS, '-l', `app.kubernetes.io/instance=${RELEASE}`, '--tail=20', '--prefix'],
        { allowFail: true },
      );
      throw new Error(
        `helm ${args.join(' ')} failed (${r.code}):\n${r.stderr}${r.stdout}\n${pods.stdout}\n${logs.stdout}${logs.stderr}`,
      );
    }
    return r;
  };
  const json = async <T>(args: string[]): Promise<T> =>
    JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
  type BuildkitView = {
    metadata: { uid: string };
    status?: { phase?: string; endpoint?: string };
  };
  const buildkit = () => json<BuildkitView>(['get', 'buildkit', '-n', NAMESPACE, 'ci']);
  const platformPods = async () =>
    (
      await json<{ items: { metadata: { name: string }; status: { phase: string } }[] }>([
        'get',
        'pods',
        '-n',
        PLATFORM_NS,
        '-l',
        `app.kubernetes.io/instance=${RELEASE}`,
      ])
    ).items;
  const install = (extra: string[] = []) =>
    mustHelm([
      'upgrade',
      '--install',
      RELEASE,
      CHART,
      '-n',
      PLATFORM_NS,
      '--create-namespace',
      '--set',
      'image.pullPolicy=Never',
      '--set',
      'minIdleTimeout=5s',
      '--wait',
      '--timeout',
      '4m',
      ...extra,
    ]);

  type WebhookConfigView = {
    metadata: { annotations?: Record<string, string> };
    webhooks: { name: string; failurePolicy: string; clientConfig: { caBundle?: string } }[];
  };
  const webhookConfigs = () =>
    Promise.all(
      ['mutatingwebhookconfiguration', 'validatingwebhookconfiguration'].map((kind) =>
        json<WebhookConfigView>(['get', kind, `${RELEASE}-buildkit-fleet`]),
      ),
    );
  const policiesSettled = async () =>
    (await webhookConfigs()).every((c) => c.webhooks.every((w) => w.failurePolicy === 'Fail'));

  // What the API server answered a valid BuildkitTemplate (server dry run, which calls the
  // webhooks) while the first install ran: refusals that name a webhook (no CA yet, no endpoint).
  const duringFirstInstall = { probes: 0, admitted: 0, refusals: [] as string[] };

  beforeAll(async () => {
    cluster = await startCluster({ nodes: 0, realNode: true });
    await cluster.kubectl(['create', 'namespace', NAMESPACE]);
    let installing = true;
    const probing = (async () => {
      while (installing) {
        const r = await cluster.kubectl(['apply', '--dry-run=server', '-f', '-'], {
          allowFail: true,
          input: `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata: { name: probe, namespace: ${NAMESPACE} }\nspec: { port: 1234 }\n`,
        });
        duringFirstInstall.probes++;
        if (r.code === 0) duringFirstInstall.admitted++;
        else if (/webhook/i.test(r.stderr)) duringFirstInstall.refusals.push(r.stderr.trim());
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    try {
      await install();
      // the webhook sets Fail a moment after its Service has a ready endpoint, possibly after
      // --wait returned: the probes go on through that switch
      await waitFor('failurePolicy Fail on every webhook entry', policiesSettled, {
        timeoutMs: 60_000,
        intervalMs: 250,
      });
    } finally {
      installing = false;
      await probing;
    }
  }, 600_000);

  afterAll(async () => {
    const keep = path.join(os.tmpdir(), 'bkf-helm-install-logs');
    fs.mkdirSync(keep, { recursive: true });
    const logs = await cluster
      ?.kubectl(['logs', '-n', PLATFORM_NS, '-l', `app.kubernetes.io/instance=${RELEASE}`, '--tail=200'], {
        allowFail: true,
      })
      .catch(() => undefined);
    if (logs) fs.writeFileSync(path.join(keep, 'platform.log'), logs.stdout + logs.stderr);
    await cluster?.stop();
  }, 120_000);

  test('a first self-managed install refuses nothing for lack of a CA, then holds the configured policy', async () => {
    // the CRDs arrive during the install, so some probes were admitted, none refused by a webhook
    expect(duringFirstInstall.admitted).toBeGreaterThan(0);
    expect(duringFirstInstall.refusals).toEqual([]);
    for (const config of await webhookConfigs()) {
      expect(config.webhooks.map((w) => [w.name, w.failurePolicy, Boolean(w.clientConfig.caBundle)])).toEqual(
        config.webhooks.map((w) => [w.name, 'Fail', true]),
      );
      // the first-install marker is gone once the policy is in place
      expect(config.metadata.annotations?.['buildkit-fleet.io/failure-policy']).toBeUndefined();
    }
  });

  test('the webhook and controller pods run, and the installed webhook refuses a bad template', async () => {
    const pods = await platformPods();
    expect(
      pods.filter((p) => p.metadata.name.includes('-webhook-') && p.status.phase === 'Running'),
    ).toHaveLength(2);
    expect(
      pods.filter((p) => p.metadata.name.includes('-controller-') && p.status.phase === 'Running'),
    ).toHaveLength(2);

    const refused = await cluster.kubectl(['apply', '-f', '-'], {
      allowFail: true,
      input: `
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: BuildkitTemplate
metadata: { name: broken, namespace: ${NAMESPACE} }
spec:
  port: 1234
  buildkitdToml: "[worker.oci"
`,
    });
    expect(refused.code).not.toBe(0);
    // the TOML check is the webhook's alone (the CRD schema cannot parse TOML), as are the warnings
    expect(refused.stderr).toMatch(
      /The BuildkitTemplate "broken" is invalid: spec\.buildkitdToml: Invalid value: not valid TOML/,
    );
    expect(refused.stderr).toMatch(/Warning: .*floating tag :latest/);
  }, 120_000);

  test('an autoscaled Buildkit runs, scales to zero and wakes on a client', async () => {
    await cluster.kubectl(['apply', '-f', '-'], {
      input: `
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: BuildkitTemplate
metadata: { name: autoscaled, namespace: ${NAMESPACE} }
spec:
  port: 1234
  autoscaling: { enabled: true, idleTimeout: 5s }
---
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: Buildkit
metadata: { name: ci, namespace: ${NAMESPACE} }
spec: { template: autoscaled }
`,
    });
    // defaulted by the installed webhook: the rootless image
    const template = await json<{ spec: { image?: string } }>([
      'get',
      'buildkittemplate',
      '-n',
      NAMESPACE,
      'autoscaled',
    ]);
    expect(template.spec.image).toMatch(/moby\/buildkit/);

    await waitFor('the Buildkit Running', async () => (await buildkit()).status?.phase === 'Running', {
      timeoutMs: 180_000,
      intervalMs: 500,
    });
    const { endpoint } = (await buildkit()).status!;
    await waitFor('the Buildkit at zero', async () => (await buildkit()).status?.phase === 'ScaledToZero', {
      timeoutMs: 120_000,
      intervalMs: 500,
    });
    expect((await buildkit()).status?.endpoint).toBe(endpoint);
    const reply = await listWorkers(endpoint!, 120_000);
    expect(reply.record[0]?.ID).toBe('standin');
    await waitFor('the Buildkit Running again', async () => (await buildkit()).status?.phase === 'Running', {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
  }, 420_000);

  test('acquire prints an endpoint a client reaches, wakes it at zero for the next job, and release removes it', async () => {
    const io = () => {
      const result = { out: '', err: '' };
      return {
        result,
        io: { out: (s: string) => void (result.out += s), err: (s: string) => void (result.err += s) },
      };
    };
    const cli = async (...argv: string[]) => {
      const { result, io: streams } = io();
      const code = await runCli(
        [...argv, '--kubeconfig', cluster.kubeconfigPath, '--namespace', NAMESPACE],
        streams,
      );
      return { code, ...result };
    };
    const host = (out: string) => /^BUILDKIT_HOST=(tcp:\/\/\S+)\nBUILDKIT_NAME=job-1\n$/.exec(out)?.[1];
    const job = () => json<BuildkitView>(['get', 'buildkit', '-n', NAMESPACE, 'job-1']);

    const first = await cli('acquire', '--template', 'autoscaled', '--name', 'job-1', '--wait', '3m');
    expect({ code: first.code, err: first.err }).toMatchObject({ code: 0 });
    const endpoint = host(first.out);
    expect(endpoint).toBe((await job()).status?.endpoint);
    expect((await listWorkers(endpoint!, 60_000)).record[0]?.ID).toBe('standin');

    // idle between jobs: it goes to zero
    await waitFor('job-1 at zero', async () => (await job()).status?.phase === 'ScaledToZero', {
      timeoutMs: 120_000,
      intervalMs: 500,
    });
    // the next job: acquire asks for the wake itself and returns once it runs, before any client dials
    const second = await cli('acquire', '--template', 'autoscaled', '--name', 'job-1', '--wait', '3m');
    expect({ code: second.code, err: second.err }).toMatchObject({ code: 0 });
    expect(second.err).toContain('"job-1" is scaled to zero: asked for a wake');
    expect(host(second.out)).toBe(endpoint);
    expect((await job()).status?.phase).toBe('Running');
    expect((await listWorkers(endpoint!, 60_000)).record[0]?.ID).toBe('standin');

    const released = await cli('release', 'job-1');
    expect(released).toMatchObject({ code: 0, out: '' });
    await waitFor(
      'job-1 and its pod gone',
      async () => {
        const left = await cluster.kubectl(
          ['get', 'buildkit,pods', '-n', NAMESPACE, '-l', `${INSTANCE_LABEL}=job-1`, '-o', 'name'],
          { allowFail: true },
        );
        const named = await cluster.kubectl(['get', 'buildkit', '-n', NAMESPACE, 'job-1'], {
          allowFail: true,
        });
        return left.code === 0 && left.stdout.trim() === '' && /NotFound/.test(named.stderr);
      },
      { timeoutMs: 90_000, intervalMs: 500 },
    );
    // a missing template: a clear message, exit 1, nothing created
    const missing = await cli('acquire', '--template', 'nope', '--wait', '10s');
    expect(missing).toMatchObject({ code: 1, out: '' });
    expect(missing.err).toContain(`template "nope" not found in namespace "${NAMESPACE}"`);
  }, 480_000);

  test('helm test passes: the webhook answers through its Service', async () => {
    const result = await mustHelm(['test', RELEASE, '-n', PLATFORM_NS, '--timeout', '3m']);
    expect(result.stdout).toMatch(/Phase:\s+Succeeded/);
  }, 240_000);

  test('helm upgrade keeps the CRDs and the running Buildkit', async () => {
    const before = await buildkit();
    const crdBefore = await json<{ metadata: { uid: string } }>([
      'get',
      'crd',
      'buildkits.buildkit.seatgeek.io',
    ]);
    await install(['--set', 'logLevel=debug']);
    const crdAfter = await json<{ metadata: { uid: string } }>([
      'get',
      'crd',
      'buildkits.buildkit.seatgeek.io',
    ]);
    expect(crdAfter.metadata.uid).toBe(crdBefore.metadata.uid);
    expect((await buildkit()).metadata.uid).toBe(before.metadata.uid);
    // the chart read the CA from the Secret: an upgrade renders caBundle and Fail, no marker
    for (const config of await webhookConfigs()) {
      expect(config.webhooks.map((w) => [w.failurePolicy, Boolean(w.clientConfig.caBundle)])).toEqual(
        config.webhooks.map(() => ['Fail', true]),
      );
      expect(config.metadata.annotations?.['buildkit-fleet.io/failure-policy']).toBeUndefined();
    }
    // still served by the upgraded platform
    const reply = await listWorkers((await buildkit()).status!.endpoint!, 120_000);
    expect(reply.record[0]?.ID).toBe('standin');
  }, 420_000);

  test('helm uninstall leaves no webhook configuration, cluster role or binding; labelled pods still start', async () => {
    await mustHelm(['uninstall', RELEASE, '-n', PLATFORM_NS, '--wait', '--timeout', '3m']);
    for (const kind of [
      'mutatingwebhookconfigurations',
      'validatingwebhookconfigurations',
      'clusterroles',
      'clusterrolebindings',
    ]) {
      const left = await cluster.kubectl([
        'get',
        kind,
        '-l',
        `app.kubernetes.io/instance=${RELEASE}`,
        '-o',
        'name',
      ]);
      expect({ kind, left: left.stdout.trim() }).toEqual({ kind, left: '' });
    }
    const configs = await cluster.kubectl(['get', 'mutatingwebhookconfigurations', '-o', 'name']);
    expect(configs.stdout).not.toContain(`${RELEASE}-buildkit-fleet`);
    // the CRDs stay (kept), and a pod that asks for injection is admitted as it is
    await cluster.kubectl(['get', 'crd', 'buildkits.buildkit.seatgeek.io']);
    const created = await cluster.kubectl(['apply', '-f', '-'], {
      input: `
apiVersion: v1
kind: Pod
metadata:
  name: labelled
  namespace: ${NAMESPACE}
  labels: { buildkit-fleet.io/autoscale: enabled }
spec:
  containers: [{ name: c, image: buildkit-fleet:local, imagePullPolicy: Never, command: [node, -e, "setTimeout(() => {}, 1e9)"] }]
`,
    });
    expect(created.stdout).toContain('pod/labelled created');
  }, 300_000);
});
