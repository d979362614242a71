# syntax=docker/dockerfile:1
# The platform image (webhook, certs, controller, sidecar: `buildkit-fleet <command>`) built by
# Docker. `npm run image` builds the same image without Docker; the two agree by construction
# where they can and by test/unit/image/dockerfile.test.ts where they cannot:
#   - the runtime (node, its libraries, /usr/bin/env, users, the bin link) comes from the image
#     builder itself (`--runtime-dir`), run here in the build stage;
#   - /app gets exactly APP_CONTENTS of scripts/image/platform.ts;
#   - ENTRYPOINT, USER, ENV, WORKDIR and LABEL are PLATFORM_CONFIG.
# Build: docker build -t buildkit-fleet:local .

FROM node:24-bookworm AS build
WORKDIR /src
COPY . .
# npm ci installs the pinned node (the `node` package) and builds dist/ (prepare); npm run build
# makes sure of the native addon (g++ is in this base image). Then the runtime files are taken,
# before the prune removes the node package with the other devDependencies. .bin links and npm's
# hidden lockfile are not part of /app; tsc writes the bin 0644, the bin link needs it executable.
RUN npm ci --no-audit --no-fund \
 && npm run build \
 && node scripts/image.ts --no-build --runtime-dir /runtime \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -f node_modules/.package-lock.json \
 && find node_modules -name .bin -prune -exec rm -rf {} + \
 && chmod 0755 dist/cli/main.js

# No shell, no package manager: glibc and the C++ runtime come with node in /runtime.
FROM scratch
COPY --from=build /runtime/ /
COPY --from=build /src/package.json /app/package.json
COPY --from=build /src/dist /app/dist
COPY --from=build /src/build/native/proxy-engine.node /app/build/native/proxy-engine.node
COPY --from=build /src/node_modules /app/node_modules
LABEL org.opencontainers.image.title="buildkit-fleet" org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/usr/local/bin:/usr/bin:/bin NODE_ENV=production HOME=/home/nonroot
WORKDIR /app
USER 65532:65532
ENTRYPOINT ["buildkit-fleet"]
