// The stand-in's gRPC services from its .proto subset (protos/), for the server (main.ts) and for
// clients in tests. Enums as their names, 64-bit integers as numbers, fields as buildkit spells them.
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export interface StandinServices {
  Health: grpc.ServiceClientConstructor;
  Control: grpc.ServiceClientConstructor;
}

export function standinServices(): StandinServices {
  const protos = ['health.proto', 'control.proto'].map((f) =>
    fileURLToPath(new URL(`./protos/${f}`, import.meta.url)),
  );
  const loaded = grpc.loadPackageDefinition(
    protoLoader.loadSync(protos, { keepCase: true, longs: Number, enums: String }),
  ) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    moby: { buildkit: { v1: { Control: grpc.ServiceClientConstructor } } };
  };
  return { Health: loaded.grpc.health.v1.Health, Control: loaded.moby.buildkit.v1.Control };
}
