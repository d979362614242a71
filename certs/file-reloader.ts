// Serving certificate from files (cert-manager mode, or any mounted Secret), reloaded on change.
//
// The kubelet updates a mounted Secret by writing a new timestamped directory and atomically
// renaming the `..data` symlink to it; tls.crt is a symlink through `..data`. A watch on the file
// itself would keep watching the old inode forever, so the DIRECTORY is watched, and any event in it
// triggers a re-read. inotify can miss events (or fs.watch can fail, e.g. on some network volumes),
// so a periodic re-read backs it up. Invalid content (half-written files, a key that belongs to the
// previous cert, an expired cert) is logged and counted, and the previous certificate stays in use.
import { watch as fsWatch, readFileSync } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createHash, X509Certificate } from 'node:crypto';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

import { keyMatchesCert } from './inspect.ts';
import { certMetrics } from './metrics.ts';
import { errorMessage } from '../kube/errors.ts';
import { CertificateError, parseCertificate } from './parse.ts';
import type { CertSource, ServingMaterial } from './rotator.ts';

export interface FileReloaderOptions {
  certFile: string;
  keyFile: string;
  /** Optional CA bundle file (ca.crt of a cert-manager Secret); reported as caBundlePem. */
  caFile?: string;
  /** Fallback re-read; default 60 s (the kubelet's own sync period). */
  pollIntervalMs?: number;
  /** Events arrive in bursts during a swap; wait this long for the burst to end. Default 200 ms. */
  debounceMs?: number;
  /** Watch the directories (default true); false leaves only the periodic re-read. */
  watch?: boolean;
  logger: Logger;
  registry?: Registry;
  now?: () => Date;
}

export interface CertFileReloader extends CertSource {
  /** Re-reads the files now; true when a new certificate was taken into use. */
  reloadNow(): Promise<boolean>;
}

interface Loaded extends ServingMaterial {
  notAfter: Date;
  serial: string;
}

/** Checks a certificate/key pair as the HTTPS server would use it; throws CertificateError. */
export function validateServingPair(
  certPem: string,
  keyPem: string,
  now: Date,
): { notAfter: Date; serial: string } {
  parseCertificate(certPem, 'certificate file');
  if (!keyMatchesCert(keyPem, certPem)) {
    throw new CertificateError('the key file does not belong to the certificate file (first certificate)');
  }
  const x509 = new X509Certificate(certPem);
  if (x509.validToDate <= now) {
    throw new CertificateError(`the certificate expired at ${x509.validToDate.toISOString()}`);
  }
  if (x509.validFromDate > now) {
    throw new CertificateError(`the certificate is not valid before ${x509.validFromDate.toISOString()}`);
  }
  try {
    createSecureContext({ cert: certPem, key: keyPem, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new CertificateError(`OpenSSL refuses the pair: ${errorMessage(err)}`, { cause: err });
  }
  return { notAfter: x509.validToDate, serial: x509.serialNumber.toLowerCase() };
}

const digest = (...parts: string[]) => createHash('sha256').update(parts.join('\0')).digest('hex');

/** Loads the files (throwing when they are unusable, since there is nothing to serve yet) and watches them. */
export function startFileReloader(options: FileReloaderOptions): CertFileReloader {
  const { logger, certFile, keyFile, caFile } = options;
  const clock = options.now ?? (() => new Date());
  const metrics = certMetrics(options.registry);
  const pollIntervalMs = options.pollIntervalMs ?? 60_000;
  const debounceMs = options.debounceMs ?? 200;
  const files = { certFile, keyFile, ...(caFile ? { caFile } : {}) };

  const build = (certPem: string, keyPem: string, caPem: string | undefined): Loaded => {
    const { notAfter, serial } = validateServingPair(certPem, keyPem, clock());
    return { certPem, keyPem, caBundlePem: caPem ?? '', notAfter, serial };
  };

  let current: Loaded;
  try {
    current = build(
      readFileSync(certFile, 'utf8'),
      readFileSync(keyFile, 'utf8'),
      caFile ? readFileSync(caFile, 'utf8') : undefined,
    );
  } catch (error) {
    metrics.errors.inc({ reason: 'invalid_files' });
    throw new CertificateError(`cannot serve ${certFile} with ${keyFile}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  metrics.expiry.set({ cert: 'serving' }, current.notAfter.getTime() / 1000);
  logger.info(
    { ...files, serial: current.serial, notAfter: current.notAfter.toISOString() },
    'serving certificate loaded from files',
  );

  const listeners = new Set<(m: ServingMaterial) => void>();
  let currentDigest = digest(current.certPem, current.keyPem, current.caBundlePem);
  let rejectedDigest = '';
  let stopped = false;
  let chain: Promise<unknown> = Promise.resolve();
  let debounce: NodeJS.Timeout | undefined;
  let retry: NodeJS.Timeout | undefined;
  let poll: NodeJS.Timeout | undefined;
  const watchers = new Map<string, FSWatcher>();

  const reload = async (why: string): Promise<boolean> => {
    let certPem: string;
    let keyPem: string;
    let caPem: string | undefined;
    try {
      [certPem, keyPem, caPem] = await Promise.all([
        readFile(certFile, 'utf8'),
        readFile(keyFile, 'utf8'),
        caFile ? readFile(caFile, 'utf8') : Promise.resolve(undefined),
      ]);
    } catch (error) {
      // During a swap a path can vanish for a moment; the retry reads it again.
      metrics.errors.inc({ reason: 'read_files' });
      logger.warn(
        { ...files, err: errorMessage(error), trigger: why },
        'cannot read the certificate files; keeping the current certificate',
      );
      scheduleRetry();
      return false;
    }
    const seen = digest(certPem, keyPem, caPem ?? '');
    if (seen === currentDigest) return false;
    let next: Loaded;
    try {
      next = build(certPem, keyPem, caPem);
    } catch (error) {
      if (seen !== rejectedDigest) {
        // Once per distinct content: the poll would otherwise repeat the same complaint every minute.
        rejectedDigest = seen;
        metrics.errors.inc({ reason: 'invalid_files' });
        logger.error(
          { ...files, reason: errorMessage(error), trigger: why, serial: current.serial },
          'new certificate files are invalid; keeping the current certificate',
        );
      }
      scheduleRetry();
      return false;
    }
    current = next;
    currentDigest = seen;
    rejectedDigest = '';
    metrics.expiry.set({ cert: 'serving' }, next.notAfter.getTime() / 1000);
    metrics.reloads.inc({ source: 'files' });
    logger.info(
      { ...files, serial: next.serial, notAfter: next.notAfter.toISOString(), trigger: why },
      'serving certificate replaced',
    );
    const material = { certPem: next.certPem, keyPem: next.keyPem, caBundlePem: next.caBundlePem };
    for (const listener of listeners) {
      try {
        listener(material);
      } catch (error) {
        logger.error({ err: errorMessage(error) }, 'certificate change listener failed');
      }
    }
    return true;
  };

  const reloadSerial = (why: string): Promise<boolean> => {
    const run = chain.then(() => (stopped ? false : reload(why)));
    chain = run.catch(() => undefined);
    return run;
  };

  // A half-finished update (cert written, key not yet) is retried shortly instead of at the next poll.
  function scheduleRetry(): void {
    if (stopped || retry) return;
    retry = setTimeout(
      () => {
        retry = undefined;
        void reloadSerial('retry');
      },
      Math.max(1000, debounceMs * 5),
    );
    retry.unref();
  }

  const onEvent = (dir: string) => () => {
    if (debounce) clearTimeout(debounce);
    debounce = setTimeout(() => {
      debounce = undefined;
      void reloadSerial(`change in ${dir}`);
    }, debounceMs);
    debounce.unref();
  };

  const ensureWatchers = () => {
    if (options.watch === false) return;
    for (const dir of new Set(
      [certFile, keyFile, ...(caFile ? [caFile] : [])].map((f) => path.dirname(path.resolve(f))),
    )) {
      if (watchers.has(dir)) continue;
      try {
        const watcher = fsWatch(dir, { persistent: false }, onEvent(dir));
        watcher.on('error', (error) => {
          // E.g. the directory was removed; the poll keeps going and watches again once it is back.
          logger.warn(
            { dir, err: errorMessage(error) },
            'directory watch failed; relying on the periodic re-read',
          );
          watcher.close();
          watchers.delete(dir);
        });
        watchers.set(dir, watcher);
      } catch (error) {
        logger.warn(
          { dir, err: errorMessage(error) },
          'cannot watch directory; relying on the periodic re-read',
        );
      }
    }
  };

  const schedulePoll = () => {
    if (stopped) return;
    poll = setTimeout(() => {
      ensureWatchers();
      void reloadSerial('periodic re-read').finally(schedulePoll);
    }, pollIntervalMs);
    poll.unref();
  };

  ensureWatchers();
  schedulePoll();

  return {
    current: () => ({ certPem: current.certPem, keyPem: current.keyPem, caBundlePem: current.caBundlePem }),
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    reloadNow: () => reloadSerial('reloadNow'),
    async stop() {
      stopped = true;
      for (const t of [debounce, retry, poll]) if (t) clearTimeout(t);
      for (const w of watchers.values()) w.close();
      watchers.clear();
      await chain;
    },
  };
}
