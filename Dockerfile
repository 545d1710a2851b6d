# One image for every Troupe process: runtimes, supervisor, persister, gateway.
# Agent modules are TypeScript loaded through tsx at start, so there is no build
# step; dev dependencies (tests, lint, benchmarks) stay out of the image.
# Node 22: Node 20 is past its end of life, and a locked dependency (cookie@2.0.2, via fastify) declares node >= 22.
FROM node:22-bookworm-slim

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first: this layer is rebuilt only when the lockfile changes.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY bin ./bin
COPY runtime ./runtime
COPY agents ./agents
COPY examples ./examples

# tsx writes its transpile cache under the tmp dir, which `node` can write.
USER node

# 9464 /metrics /healthz /readyz, 9465 Prometheus http_sd (supervisor), 8080 gateway.
EXPOSE 9464 9465 8080

ENTRYPOINT ["node", "bin/troupe.mjs"]
CMD ["start", "--agents", "examples/research-team/agents.ts"]
