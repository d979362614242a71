// `helm test`: the webhook answers over its Service with a certificate the CA in its Secret
// trusts, and refuses a bad BuildkitTemplate. Runs with the platform image's node; no DNS needed
// (the Service's address comes from the environment Kubernetes gives every pod).
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

const host = process.env.WEBHOOK_HOST;
const servername = process.env.WEBHOOK_SERVERNAME;
const ca = readFileSync('/tls/ca.crt');

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port: 443,
        method,
        path,
        servername,
        ca,
        headers: { 'content-type': 'application/json' },
        timeout: 10000,
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode, text }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${host} within 10s`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const ready = await call('GET', '/readyz');
if (ready.status !== 200) throw new Error(`/readyz answered ${ready.status}: ${ready.text}`);
process.stdout.write(`webhook ready at ${servername} (${host})\n`);

const review = await call('POST', '/validate/buildkittemplates', {
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: {
    uid: 'helm-test',
    kind: { group: 'buildkit.seatgeek.io', version: 'v1alpha1', kind: 'BuildkitTemplate' },
    resource: { group: 'buildkit.seatgeek.io', version: 'v1alpha1', resource: 'buildkittemplates' },
    operation: 'CREATE',
    namespace: 'helm-test',
    name: 'bad',
    object: {
      apiVersion: 'buildkit.seatgeek.io/v1alpha1',
      kind: 'BuildkitTemplate',
      metadata: { name: 'bad', namespace: 'helm-test' },
      spec: { port: 1234, buildkitdToml: '[worker.oci\nenabled = true' },
    },
  },
});
const answer = JSON.parse(review.text).response;
if (!answer || answer.allowed !== false) throw new Error(`a bad template was not refused: ${review.text}`);
process.stdout.write(`a bad template is refused: ${answer.status?.message}\n`);
