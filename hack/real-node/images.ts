// The images the real node's containerd holds: the pause image, the platform image and the
// buildkitd stand-in, imported from OCI layout tars (nothing is ever pulled).
import { writeImage } from '../../scripts/image/oci-layout.ts';
import type { NodeImage } from './start.ts';

export const PAUSE_IMAGE = 'docker.io/buildkit-fleet/pause:local';

export async function buildNodeImages(
  outDir: string,
  pauseBinary: string,
): Promise<{ images: NodeImage[]; sandbox: string }> {
  const pause = await writeImage(
    {
      reference: PAUSE_IMAGE,
      config: { entrypoint: ['/pause'], env: [], user: '65535:65535', workingDir: '/' },
      layers: [
        {
          description: 'pause',
          entries: [{ type: 'file', path: '/pause', mode: 0o755, uid: 0, gid: 0, source: pauseBinary }],
        },
      ],
    },
    `${outDir}/pause.oci.tar`,
  );
  return { images: [{ reference: pause.reference, tarPath: pause.tarPath }], sandbox: pause.reference };
}
