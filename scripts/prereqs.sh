#!/usr/bin/env bash
# Installs the system packages the demo (--demo) or the test suite needs, only the
# missing ones, on Debian/Ubuntu as root; elsewhere prints the exact command.
#   demo:  redis-server, Java 17 + Maven (a real Neo4j 5.26 runs embedded)
#   tests: the same, plus redis-tools (cluster tests), prometheus (observability
#          tests), chromium (browser tests of the web UI) and, unless a docker
#          client with the compose plugin exists, docker-compose (the compose
#          file check; it needs no Docker engine)
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have redis-server || need+=(redis-server)
have java || need+=(openjdk-17-jdk-headless)
have mvn || need+=(maven)
if [ "${1:-}" != "--demo" ]; then
  have redis-cli || need+=(redis-tools)
  have prometheus || need+=(prometheus)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # The compose file is validated with `docker compose config`, or without the
  # plugin by Debian's docker-compose, which parses it without an engine.
  if ! have docker-compose && ! { have docker && docker compose version >/dev/null 2>&1; }; then need+=(docker-compose); fi
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
  echo "  fix: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
