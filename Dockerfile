# syntax=docker/dockerfile:1
# ringbridge image: Debian 12 (bookworm) with Node.js 20.
#  - build stage: npm ci, mediasoup-worker 3.12.16 built from Debian 12's libraries with the same
#    recipe as `npm run setup` (src/setup/mediasoup-worker.mjs), TypeScript compiled, dev
#    dependencies pruned;
#  - runtime stage: the worker's shared libraries only, a non-root user.
# Build from the repository root:  docker build -t ringbridge .

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ meson ninja-build pkg-config \
      libssl-dev libuv1-dev libsrtp2-dev libusrsctp-dev libabsl-dev nlohmann-json3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# mediasoup's postinstall (a GitHub download) is denied in package.json; the variable makes it
# skip as well with any npm.
RUN MEDIASOUP_WORKER_BIN=built-below npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY config ./config
ENV RINGBRIDGE_CACHE_DIR=/tmp/ringbridge-cache RINGBRIDGE_NO_APT=1
RUN node src/setup/mediasoup-worker.mjs \
 && install -m 0755 node_modules/mediasoup/worker/out/Release/mediasoup-worker /opt/mediasoup-worker
RUN node node_modules/typescript/bin/tsc -p tsconfig.json \
 && node src/web/build.mjs \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/mediasoup/worker/deps node_modules/mediasoup/worker/src \
      node_modules/mediasoup/worker/include node_modules/mediasoup/worker/test \
      node_modules/mediasoup/worker/fuzzer node_modules/mediasoup/worker/out

FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 libuv1 libsrtp2-1 libusrsctp2 libabsl20220623 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system ringbridge \
 && useradd --system --gid ringbridge --home-dir /app --shell /usr/sbin/nologin ringbridge
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/config ./config
COPY --from=build /opt/mediasoup-worker /usr/local/bin/mediasoup-worker
# call recordings (recording.dir, default ./data/recordings): writable by the service user; mount a volume here
RUN mkdir -p /app/data/recordings && chown -R ringbridge:ringbridge /app/data && chmod 0750 /app/data /app/data/recordings
VOLUME ["/app/data/recordings"]
ENV NODE_ENV=production \
    MEDIASOUP_WORKER_BIN=/usr/local/bin/mediasoup-worker \
    RINGBRIDGE_REDIS__AUTO_START=false \
    RINGBRIDGE_LOG__PRETTY=false
USER ringbridge
# SIP (UDP/TCP, TLS), HTTP + WebSocket, RTP/ICE range of the default configuration.
EXPOSE 5060/udp 5060/tcp 5061/tcp 8080/tcp 40000-49999/udp
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/src/main.js"]
