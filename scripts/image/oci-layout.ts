// Writes a container image as a single-manifest OCI image layout in one tar file, the format
// `ctr -n k8s.io images import` reads, without Docker or a registry. Layers are pure data (a
// list of entries), so a recipe can be tested without writing anything; the writer makes the
// bytes depend on that data alone (sorted entries, mtime 0, numeric owners, no user names), so
// building the same recipe twice gives the same digests.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';

import { pack } from 'tar-stream';
import type { Header } from 'tar-stream';

export const MEDIA_TYPE = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar',
} as const;

/** containerd names an imported image after this annotation (ctr's default import name). */
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';
export const OCI_REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

interface EntryBase {
  /** absolute, normalized: `/usr/local/bin/node` */
  path: string;
  uid: number;
  gid: number;
}

export type LayerEntry =
  | (EntryBase & { type: 'dir'; mode: number })
  | (EntryBase & { type: 'file'; mode: number; content: string | Uint8Array })
  | (EntryBase & { type: 'file'; mode: number; source: string })
  | (EntryBase & { type: 'symlink'; target: string });

export interface Layer {
  /** what the layer is, for the config's history */
  description: string;
  entries: LayerEntry[];
}

export interface ImageConfig {
  entrypoint: string[];
  cmd?: string[];
  env: string[];
  user: string;
  workingDir: string;
  labels?: Record<string, string>;
}

export interface ImageSpec {
  /** as a user writes it; stored normalized (normalizeReference) */
  reference: string;
  config: ImageConfig;
  layers: Layer[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface WrittenImage {
  /** the normalized reference containerd lists the image under */
  reference: string;
  tarPath: string;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
}

// Docker's reference grammar (distribution/reference), the subset image names use here.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

/**
 * The fully qualified form of an image reference, as containerd stores it: containerd's CRI
 * looks images up only by that name, so an image imported as `buildkit-fleet:local` would not
 * be found by a pod that says `image: buildkit-fleet:local`. Rules as Docker's: a first
 * component is a registry only if it has a `.` or `:` or is `localhost`; Docker Hub names get
 * `docker.io/` and single names `library/`; no tag and no digest means `:latest`.
 */
export function normalizeReference(reference: string): string {
  const invalid = (why: string) => new Error(`invalid image reference ${JSON.stringify(reference)}: ${why}`);
  let rest = reference;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(`bad digest ${JSON.stringify(digest)}`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(`bad tag ${JSON.stringify(tag)}`);
  }
  if (rest === '') throw invalid('no name');
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  const hasDomain = first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost');
  let domain = hasDomain ? first : 'docker.io';
  let name = hasDomain ? rest.slice(slash + 1) : rest;
  if (!DOMAIN.test(domain)) throw invalid(`bad registry ${JSON.stringify(domain)}`);
  if (domain === 'index.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && !name.includes('/')) name = `library/${name}`;
  for (const component of name.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      throw invalid(`${JSON.stringify(component)} is not a lowercase name component`);
    }
  }
  if (tag === undefined && digest === undefined) tag = 'latest';
  return `${domain}/${name}${tag === undefined ? '' : `:${tag}`}${digest === undefined ? '' : `@${digest}`}`;
}

const byteOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The entries a layer tar holds, in the order it holds them: every parent directory present
 * (one the recipe did not name is root's, 0755, as a runtime would create it), sorted by path so
 * the order never depends on how a recipe was assembled. A path named twice, a relative or
 * unnormalized path, or a parent that is not a directory is a recipe bug and throws.
 */
export function planLayer(entries: readonly LayerEntry[]): LayerEntry[] {
  const byPath = new Map<string, LayerEntry>();
  for (const entry of entries) {
    if (
      !path.posix.isAbsolute(entry.path) ||
      path.posix.normalize(entry.path) !== entry.path ||
      entry.path === '/'
    ) {
      throw new Error(
        `layer entry path ${JSON.stringify(entry.path)} must be absolute, normalized and not /`,
      );
    }
    if (entry.path.endsWith('/')) throw new Error(`layer entry path ${entry.path} must not end with /`);
    if (byPath.has(entry.path)) throw new Error(`layer names ${entry.path} twice`);
    byPath.set(entry.path, entry);
  }
  for (const entry of entries) {
    for (let dir = path.posix.dirname(entry.path); dir !== '/'; dir = path.posix.dirname(dir)) {
      const parent = byPath.get(dir);
      if (parent === undefined) byPath.set(dir, { type: 'dir', path: dir, mode: 0o755, uid: 0, gid: 0 });
      else if (parent.type !== 'dir')
        throw new Error(`${entry.path} is below ${dir}, which is a ${parent.type}`);
    }
  }
  return [...byPath.values()].sort((a, b) => byteOrder(a.path, b.path));
}

/** One entry of a tar file: a header and where its bytes come from. */
interface TarItem {
  header: Header;
  content?: Uint8Array;
  source?: string;
}

function header(name: string, fields: Partial<Header>): Header {
  return {
    name,
    size: 0,
    mode: 0o644,
    mtime: new Date(0),
    type: 'file',
    linkname: '',
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    ...fields,
  };
}

function layerTarItem(entry: LayerEntry): TarItem {
  const name = entry.path.slice(1);
  const owner = { uid: entry.uid, gid: entry.gid };
  switch (entry.type) {
    case 'dir':
      return { header: header(`${name}/`, { ...owner, type: 'directory', mode: entry.mode }) };
    case 'symlink':
      return { header: header(name, { ...owner, type: 'symlink', mode: 0o777, linkname: entry.target }) };
    case 'file':
      if ('source' in entry) {
        // the copy's mode comes from the recipe, never from the host file
        return {
          header: header(name, { ...owner, mode: entry.mode, size: fs.statSync(entry.source).size }),
          source: entry.source,
        };
      }
      {
        const content = typeof entry.content === 'string' ? Buffer.from(entry.content) : entry.content;
        return { header: header(name, { ...owner, mode: entry.mode, size: content.byteLength }), content };
      }
  }
}

/** Writes `items` as a tar file and returns its sha256 digest and size. */
async function writeTar(items: readonly TarItem[], file: string): Promise<{ digest: string; size: number }> {
  const tar = pack();
  const hash = createHash('sha256');
  let size = 0;
  const out = fs.createWriteStream(file);
  const consume = (async () => {
    for await (const chunk of tar as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.byteLength;
      if (!out.write(chunk)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
  })();
  const produce = (async () => {
    for (const item of items) {
      let sink: ReturnType<typeof tar.entry> | undefined;
      const done = new Promise<void>((resolve, reject) => {
        const callback = (error?: Error | null) => (error ? reject(error) : resolve());
        sink = item.content
          ? tar.entry(item.header, item.content, callback)
          : tar.entry(item.header, callback);
      });
      // awaited below; without this a failure while streaming the source would be unhandled
      done.catch(() => undefined);
      if (item.source !== undefined) {
        for await (const chunk of fs.createReadStream(item.source)) {
          if (!sink!.write(chunk)) await once(sink!, 'drain');
        }
        sink!.end(undefined);
      }
      await done;
    }
    tar.finalize();
  })();
  try {
    await Promise.all([produce, consume]);
  } catch (error) {
    tar.destroy();
    out.destroy();
    throw error;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

/** Writes one layer's tar and returns its descriptor (uncompressed, so its digest is its diff_id). */
export async function writeLayer(entries: readonly LayerEntry[], file: string): Promise<Descriptor> {
  const { digest, size } = await writeTar(planLayer(entries).map(layerTarItem), file);
  return { mediaType: MEDIA_TYPE.layer, digest, size };
}

/** The image config document (OCI image spec "config"), keys in a fixed order. */
export function imageConfigDocument(
  config: ImageConfig,
  layers: readonly Layer[],
  diffIds: readonly string[],
) {
  const labels = Object.fromEntries(Object.entries(config.labels ?? {}).sort(([a], [b]) => byteOrder(a, b)));
  return {
    architecture: 'amd64',
    os: 'linux',
    config: {
      User: config.user,
      Env: [...config.env],
      Entrypoint: [...config.entrypoint],
      ...(config.cmd ? { Cmd: [...config.cmd] } : {}),
      WorkingDir: config.workingDir,
      ...(Object.keys(labels).length ? { Labels: labels } : {}),
    },
    rootfs: { type: 'layers', diff_ids: [...diffIds] },
    history: layers.map((layer) => ({ created_by: layer.description })),
  };
}

export function manifestDocument(config: Descriptor, layers: readonly Descriptor[]) {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE.manifest,
    config: { ...config },
    layers: layers.map((layer) => ({ ...layer })),
  };
}

/** index.json: the one manifest, named by its full reference for containerd and for OCI tools. */
export function indexDocument(manifest: Descriptor, reference: string) {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE.index,
    manifests: [
      {
        ...manifest,
        annotations: { [CONTAINERD_NAME_ANNOTATION]: reference, [OCI_REF_NAME_ANNOTATION]: reference },
        platform: { architecture: 'amd64', os: 'linux' },
      },
    ],
  };
}

function jsonBlob(document: unknown, mediaType: string): { bytes: Buffer; descriptor: Descriptor } {
  const bytes = Buffer.from(JSON.stringify(document));
  return {
    bytes,
    descriptor: {
      mediaType,
      digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
      size: bytes.length,
    },
  };
}

/**
 * Writes `image` to `tarPath` as an OCI image layout tar. The layers are written to a scratch
 * folder beside it and the tar to a temporary name renamed into place at the end, so a failed
 * or interrupted build leaves no partial image where an import would pick it up.
 */
export async function writeImage(image: ImageSpec, tarPath: string): Promise<WrittenImage> {
  const reference = normalizeReference(image.reference);
  const outDir = path.dirname(path.resolve(tarPath));
  fs.mkdirSync(outDir, { recursive: true });
  const scratch = fs.mkdtempSync(path.join(outDir, `.${path.basename(tarPath)}.`));
  const partial = path.join(scratch, 'image.tar');
  try {
    const layerFiles = new Map<string, string>();
    const layers: Descriptor[] = [];
    for (const [i, layer] of image.layers.entries()) {
      const file = path.join(scratch, `layer-${i}.tar`);
      const descriptor = await writeLayer(layer.entries, file);
      layers.push(descriptor);
      layerFiles.set(descriptor.digest, file);
    }
    const diffIds = layers.map((l) => l.digest);
    const config = jsonBlob(imageConfigDocument(image.config, image.layers, diffIds), MEDIA_TYPE.config);
    const manifest = jsonBlob(manifestDocument(config.descriptor, layers), MEDIA_TYPE.manifest);
    const index = Buffer.from(JSON.stringify(indexDocument(manifest.descriptor, reference)));

    const blob = (digest: string) => `blobs/sha256/${digest.slice('sha256:'.length)}`;
    const blobs: TarItem[] = [
      {
        header: header(blob(config.descriptor.digest), { size: config.bytes.length }),
        content: config.bytes,
      },
      {
        header: header(blob(manifest.descriptor.digest), { size: manifest.bytes.length }),
        content: manifest.bytes,
      },
      // two identical layers are one blob
      ...[...layerFiles].map(([digest, file]) => ({
        header: header(blob(digest), { size: fs.statSync(file).size }),
        source: file,
      })),
    ];
    const layout = Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const items: TarItem[] = [
      { header: header('blobs/', { type: 'directory', mode: 0o755 }) },
      { header: header('blobs/sha256/', { type: 'directory', mode: 0o755 }) },
      ...blobs.sort((a, b) => byteOrder(a.header.name, b.header.name)),
      { header: header('index.json', { size: index.length }), content: index },
      { header: header('oci-layout', { size: layout.length }), content: layout },
    ];
    await writeTar(items, partial);
    fs.renameSync(partial, tarPath);
    return { reference, tarPath, manifest: manifest.descriptor, config: config.descriptor, layers };
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}
