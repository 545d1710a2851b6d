#!/usr/bin/env bash
# Installs the system packages the demo (--demo) or the test suite needs, only the
# missing ones, on Debian/Ubuntu as root; elsewhere prints the exact command.
#   demo:  redis-server, Java 17 + Maven (a real Neo4j 5.26 runs embedded)
#   tests: the same, plus redis-tools (cluster tests), prometheus (observability
#          tests), chromium (browser tests of the web UI) and, unless a docker
#          client with the compose plugin exists, docker-compose (the compose
#          file check; it needs no Docker engine)
set -euo pipefail
case "${1:-}" in
  '') mode=tests ;;
  --demo) mode=demo ;;
  -h|--help) echo "usage: scripts/prereqs.sh [--demo]   (installs what the tests, or with --demo the demo, need)"; exit 0 ;;
  *) echo "usage: scripts/prereqs.sh [--demo]   (unknown argument: $1)" >&2; exit 2 ;;
esac
need=()
have() { command -v "$1" >/dev/null 2>&1; }
# The major version a command prints first (e.g. "v=7.0.15" or "17.0.15"), or 0.
major() { { "$@" 2>&1 || true; } | grep -oE '[0-9]+\.[0-9]+' | head -n1 | cut -d. -f1 || true; }
have redis-server || need+=(redis-server)
# A JDK (javac), not only a JRE: the embedded Neo4j launcher is compiled here.
if ! have java || ! have javac || [ "$(major javac -version)" -lt 17 ] 2>/dev/null; then need+=(openjdk-17-jdk-headless); fi
have mvn || need+=(maven)
if [ "$mode" = tests ]; then
  have redis-cli || need+=(redis-tools)
  have prometheus || need+=(prometheus)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # The compose file is validated with `docker compose config`, or without the
  # plugin by Debian's docker-compose, which parses it without an engine.
  if ! have docker-compose && ! { have docker && docker compose version >/dev/null 2>&1; }; then need+=(docker-compose); fi
fi
# Troupe's Lua scripts need Redis 7 (their #! flags line); an older one fails every script.
if have redis-server && [ "$(major redis-server --version)" -lt 7 ] 2>/dev/null; then
  echo "prerequisites: $(redis-server --version | head -n1) is older than Redis 7, which Troupe needs" >&2
  echo "  fix: install Redis 7 (Debian 12 / Ubuntu 24.04: apt-get install -y redis-server; elsewhere packages.redis.io, or docker run -d -p 6379:6379 redis:7), or export REDIS_URL=redis://<a Redis 7>:6379" >&2
  [ -n "${REDIS_URL:-}" ] || exit 1
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "prerequisites: all present"
  exit 0
fi
if [ "$(id -u)" = 0 ] && have apt-get; then
  echo "prerequisites: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  echo "prerequisites: installed"
else
  echo "prerequisites missing: ${need[*]}" >&2
  echo "  fix: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  echo "  (or point REDIS_URL / NEO4J_URI at servers you already run; see README)" >&2
  exit 1
fi
