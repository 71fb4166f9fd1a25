#!/usr/bin/env bash
# Make sure a docker engine answers (CI and fresh machines): install docker.io and start dockerd if needed.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
# A local dockerd would not help a client pointed elsewhere: say so at once.
if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix:///var/run/docker.sock" ]; then
  echo "ensure_dockerd: DOCKER_HOST=$DOCKER_HOST does not answer (dockerd listens on unix:///var/run/docker.sock);" \
       "unset DOCKER_HOST or start the engine it names" >&2; exit 1
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; else
  echo "ensure_dockerd: docker engine not reachable and no root to start it (see: hackathon doctor)" >&2; exit 1; fi
command -v dockerd >/dev/null || { $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io >/dev/null; }
if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
  $SUDO systemctl start docker
else
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
fi
for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "ensure_dockerd: dockerd did not come up; see /var/log/dockerd.log" >&2; exit 1
