// What the buildkitd stand-in (main.ts) reads from its flags and from a Status call's Ref.

export interface Build {
  steps: number;
  quietMs: number;
}

/** The build a Status call stands for, from its Ref; undefined when the Ref asks for nonsense. */
export function buildShape(ref: string): Build | undefined {
  const shape: Build = { steps: 3, quietMs: 1000 };
  for (const part of ref.split(',').filter((p) => p.includes('='))) {
    const [key, value] = part.split('=') as [string, string];
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0 || n > 86_400_000) return undefined;
    if (key === 'steps') shape.steps = n;
    else if (key === 'quiet') shape.quietMs = n;
    else return undefined;
  }
  return shape;
}

/** grpc-js's bind address for a buildkitd `--addr`; undefined for other schemes. */
export function bindAddress(addr: string): string | undefined {
  const tcp = /^tcp:\/\/(.+:[0-9]+)$/.exec(addr);
  if (tcp) return tcp[1]!;
  const unix = /^unix:\/\/(\/.+)$/.exec(addr);
  if (unix) return `unix:${unix[1]}`;
  return undefined;
}
