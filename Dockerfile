# pi-server in a container. Build: docker build -t pi-server .
# Run:   docker run -p 3141:3141 -e PI_SERVER_AUTH=jwt -e PI_SERVER_JWT_JWKS_URL=… -e PI_SERVER_JWT_ISSUER=… \
#          -e PI_SERVER_JWT_AUDIENCE=pi-server -v pi-data:/var/lib/pi-server pi-server
# (bubblewrap inside a container needs user namespaces: run with --security-opt seccomp=unconfined or a profile that
#  allows them, or pass PI_SERVER_SANDBOX=none and let the container be the sandbox.)

# --- build: compile TypeScript and bundle the console (`npm run build`), then keep only production dependencies ------
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm ci --no-audit --no-fund --ignore-scripts && npm run build && npm prune --omit=dev

# --- runtime -------------------------------------------------------------------------------------------------------
FROM node:24-bookworm-slim
# tini reaps zombies and forwards signals; bubblewrap is the sandbox for the agents' bash (slirp4netns its network
# with --sandbox-network outbound); git, ripgrep and fd-find for tools (pi's grep and find use rg and fd, and would
# try to download them otherwise). Debian names fd `fdfind`: pi looks for both, the `fd` link is for the commands
# agents run in bash.
RUN apt-get update && apt-get install -y --no-install-recommends tini bubblewrap slirp4netns git ripgrep fd-find ca-certificates \
  && rm -rf /var/lib/apt/lists/* \
  && ln -s /usr/bin/fdfind /usr/local/bin/fd
# Agent dir (auth, models, settings, sessions) and workspaces live in one volume, as in the systemd unit.
RUN useradd --create-home --uid 10001 pi \
  && mkdir -p /var/lib/pi-server/agent /var/lib/pi-server/workspaces && chown -R pi:pi /var/lib/pi-server
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json PROTOCOL.md README.md LICENSE ./
COPY bin ./bin
USER pi
ENV NODE_ENV=production PI_SERVER_HOST=0.0.0.0 PI_SERVER_PORT=3141 PI_CODING_AGENT_DIR=/var/lib/pi-server/agent PI_SERVER_WORKSPACE_ROOT=/var/lib/pi-server/workspaces
EXPOSE 3141
# The port the server listens on, whatever `docker run -e PI_SERVER_PORT=…` made it (the check runs in the container's
# environment). /healthz stays on the main port with --auth too.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PI_SERVER_PORT || 3141) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node itself, not npx: a supervisor's SIGTERM must reach the server (npx would leave it running; see README).
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "bin/pi-server.js"]
