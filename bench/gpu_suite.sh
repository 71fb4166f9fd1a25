#!/bin/bash
# The GPU check, run as is by a session with the GPU machine (one H200: <= 8 minutes):
#   bench/gpu_suite.sh            # GPU sizes when a GPU is visible, else the CPU dry run
#   bench/gpu_suite.sh --dry-run  # CPU sizes (what CI runs, < 2 minutes)
# Writes bench/gpu_results.json (sections: asr, tts, ssd300, torchrun; see bench/gpu_suite.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Keep the suite's runs, registry and demo data out of the user's runs/.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu-suite.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export HACKATHON_RUNS="$SCRATCH/runs" HACKATHON_REGISTRY="$SCRATCH/registry.sqlite" HACKATHON_LOCK_DIR="$SCRATCH/locks"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU: CPU dry run"
status=0
"$PY" bench/gpu_suite.py "$@" || status=$?

# >>> HOOK whisper: Whisper int8 + LoRA training steps/s joins here (the Whisper helper gives the lead the
# >>> command; it must add its numbers to bench/gpu_results.json under sections.whisper_lora).
# >>> HOOK tts44k: TTS 44.1 kHz FastPitch/HiFiGAN step times join here (the TTS 44.1 kHz helper gives the
# >>> lead the command; it must add its numbers under sections.tts_44k).

exit "$status"
