#!/bin/sh
# Stand-in for the TAO 5 image's command line (ssd / yolo_v3 / gen_trt_engine), for the integration
# tests only: busybox sh + awk in a tiny local image. It checks its arguments and the paths it is
# given through the mounts like TAO does, writes outputs where TAO writes them (weights/*.hdf5,
# TFRecord shards, inference labels/, the ONNX file, status.json lines) and can fail the two ways
# TAO fails: a non-zero exit, or status FAILURE with exit code 0.
#
# Not a model: inference output is the ground truth of each image (read through the mounts from the
# sibling labels/ folder) with jittered boxes, random scores, ~15% of boxes missed and one low-score
# false positive per image.
#
# Environment (set by the tests):
#   TAO_STANDIN_FAIL="<task>:exit" | "<task>:status" | "<task>:noartifact"   make <task> fail
#   TAO_STANDIN_SLEEP=<seconds>    sleep per training epoch (cancellation tests)
set -u
NET=$(basename "$0"); TASK="${1:-}"; [ $# -gt 0 ] && shift
SPEC=""; RESULTS=""; MODEL=""; IMAGES=""; OUT=""; EPOCH0=1; THRESH=0.3; ENGINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -e|--experiment_spec|--experiment_spec_file|-d|--dataset_export_spec) SPEC="$2"; shift 2;;
    -r|--results_dir) RESULTS="$2"; shift 2;;
    -m|--model|--model_path|--resume_model_weights) MODEL="$2"; shift 2;;
    -i|--image_dir) IMAGES="$2"; shift 2;;
    -o|--output_file|--output_filename) OUT="$2"; shift 2;;
    -t|--threshold) THRESH="$2"; shift 2;;
    --initial_epoch) EPOCH0="$2"; shift 2;;
    --engine_file) ENGINE="$2"; shift 2;;
    --gpus|--gpu_index|-k|--key|--batch_size|--max_batch_size|--data_type|--target_opset) shift 2;;
    --gen_ds_config|--use_multiprocessing) shift;;
    *) echo "$NET $TASK: unrecognized argument $1" >&2; exit 2;;
  esac
done

STATUS_DIR="${RESULTS:-}"
status() {  # status LEVEL MESSAGE: one JSON line, as TAO's StatusLogger appends them
  [ -n "$STATUS_DIR" ] || return 0
  mkdir -p "$STATUS_DIR" && printf '{"date": "%s", "time": "%s", "status": "%s", "verbosity": "INFO", "message": "%s"}\n' \
    "$(date +%-m/%-d/%Y)" "$(date +%-H:%-M:%-S)" "$1" "$2" >> "$STATUS_DIR/status.json"
}
die() { echo "Error: $*" >&2; status FAILURE "$*"; exit 1; }
need() { [ -n "$2" ] || die "$NET $TASK: argument $1 is required"; }
field() { sed -n "s/^ *$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$SPEC" | head -n 1; }
check_spec_paths() {  # every quoted path in the spec must exist inside the container (globs: one match)
  sed -n 's/^ *[a-z_]*_path: *"\(.*\)" *$/\1/p' "$SPEC" | while read -r p; do
    set -- $p; [ -e "$1" ] || { echo "spec path $p does not exist in the container" >&2; exit 1; }
  done || die "a path in $SPEC does not exist in the container"
}
failmode() { case "${TAO_STANDIN_FAIL:-}" in "$TASK:$1") return 0;; esac; return 1; }

echo "TAO stand-in: $NET $TASK as uid $(id -u):$(id -g)"
case "$TASK" in dataset_convert|train|evaluate|inference|export|gen_trt_engine) ;; *) die "unknown task '$TASK'";; esac
need "-e/-d spec" "$SPEC"; [ -f "$SPEC" ] || die "spec file $SPEC not found"
[ "$TASK" = export ] && STATUS_DIR="${RESULTS:-}"
[ "$TASK" = evaluate ] && [ -z "$STATUS_DIR" ] && STATUS_DIR=$(dirname "$MODEL")
[ "$TASK" = dataset_convert ] && [ -z "$STATUS_DIR" ] && STATUS_DIR=$(dirname "$OUT")
if [ -n "$STATUS_DIR" ]; then mkdir -p "$STATUS_DIR" 2>/dev/null && touch "$STATUS_DIR/.w" 2>/dev/null \
  || { echo "Error: cannot write $STATUS_DIR as uid $(id -u)" >&2; exit 1; }; rm -f "$STATUS_DIR/.w"; fi
# status.json as each TAO 5 task writes it (sources named in tasks/detect/tao_runner.py STATUS_CONTRACTS):
# dataset_convert rewrites the file (append=False); export writes no STARTED, only RUNNING lines.
case "$TASK" in
  export) status RUNNING "Building exporter object.";;
  dataset_convert) [ -n "$STATUS_DIR" ] && : > "$STATUS_DIR/status.json"; status STARTED "Starting Object Detection Dataset Convert.";;
  *) status STARTED "Starting $NET $TASK.";;
esac
if failmode exit; then echo "Error: simulated crash in $TASK" >&2; exit 3; fi
if failmode status; then echo "Error: simulated failure in $TASK (exit code 0)" >&2; status FAILURE "simulated failure"; exit 0; fi
check_spec_paths

case "$TASK" in
dataset_convert)
  need -o "$OUT"; ROOT=$(field root_directory_path); LBL="$ROOT/$(field label_dir_name)"
  [ -d "$LBL" ] || die "label dir $LBL not found"
  n=0; shard="$OUT-fold-000-of-001-shard-00000-of-00001"; mkdir -p "$(dirname "$OUT")"; : > "$shard"
  for f in "$LBL"/*.txt; do
    awk '{print $1}' "$f" | while read -r c; do grep -q "key: \"$c\"" "$SPEC" || { echo "class $c not in target_class_mapping" >&2; exit 1; }; done \
      || die "$f has a class missing from target_class_mapping"
    echo "$(basename "$f" .txt)" >> "$shard"; n=$((n+1))
  done
  echo "Wrote $n samples to $shard";;
train)
  need -r "$RESULTS"; EPOCHS=$(field num_epochs); ARCH=$(field arch)$(field nlayers)
  PRE=ssd_; [ "$NET" = yolo_v3 ] && PRE=yolov3_
  RES=$(field resume_model_path)
  if [ -n "$RES" ]; then EPOCH0=$(( $(echo "$RES" | sed 's/.*_epoch_0*\([0-9][0-9]*\)\.hdf5/\1/') + 1 )); fi
  if [ -n "$MODEL" ]; then [ -f "$MODEL" ] || die "model $MODEL not found"; echo "Resuming from $MODEL at epoch $EPOCH0"; fi
  [ -n "$RES" ] && echo "Resuming from $RES at epoch $EPOCH0"
  mkdir -p "$RESULTS/weights"; e=$EPOCH0
  while [ "$e" -le "$EPOCHS" ]; do
    echo "Epoch $e/$EPOCHS"; sleep "${TAO_STANDIN_SLEEP:-0}"
    failmode noartifact || printf 'stand-in weights epoch %s\n' "$e" > "$RESULTS/weights/$PRE${ARCH}_epoch_$(printf %03d "$e").hdf5"
    status RUNNING "epoch $e"; e=$((e+1))
  done;;
evaluate)
  need -m "$MODEL"; [ -f "$MODEL" ] || die "model $MODEL not found"
  echo "Stand-in evaluate: $MODEL is not a network, no AP is computed.";;
inference)
  need -m "$MODEL"; need -i "$IMAGES"; need -r "$RESULTS"; [ -f "$MODEL" ] || die "model $MODEL not found"
  [ -d "$IMAGES" ] || die "image dir $IMAGES not found"; GT="$(dirname "$IMAGES")/labels"
  mkdir -p "$RESULTS/labels" "$RESULTS/images_annotated"; i=0
  for img in "$IMAGES"/*; do
    stem=$(basename "$img"); stem="${stem%.*}"; i=$((i+1)); cp "$img" "$RESULTS/images_annotated/"
    failmode noartifact && continue
    [ -f "$GT/$stem.txt" ] || die "no ground truth $GT/$stem.txt for $img (stand-in reads it)"
    awk -v seed="$i" -v th="$THRESH" 'BEGIN { srand(seed) }
      function j(v, s) { return v + (rand() - 0.5) * 0.12 * s }
      { w = $7 - $5; h = $8 - $6; sc = 0.55 + 0.45 * rand(); miss = rand() < 0.15
        if (!miss && sc >= th) printf "%s 0.00 0 0.00 %.2f %.2f %.2f %.2f 0.00 0.00 0.00 0.00 0.00 0.00 0.00 %.4f\n", $1, j($5, w), j($6, h), j($7, w), j($8, h), sc
        if (NR == 1 && 0.02 >= th) printf "%s 0.00 0 0.00 %.2f %.2f %.2f %.2f 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.0200\n", $1, $5 / 3, $6 / 3, $5 / 3 + w, $6 / 3 + h }' \
      "$GT/$stem.txt" > "$RESULTS/labels/$stem.txt"
  done
  echo "Inference on $i images written to $RESULTS/labels";;
export)
  need -m "$MODEL"; need -o "$OUT"; [ -f "$MODEL" ] || die "model $MODEL not found"
  [ -e "$OUT" ] && die "$OUT already exists (TAO export refuses to overwrite)"
  failmode noartifact || printf 'stand-in onnx of %s\n' "$MODEL" > "$OUT"
  echo "Exported $OUT";;
gen_trt_engine)
  need -m "$MODEL"; need --engine_file "$ENGINE"; [ -f "$MODEL" ] || die "onnx $MODEL not found"
  failmode noartifact || printf 'stand-in engine\n' > "$ENGINE";;
esac
# ssd dataset_convert never writes SUCCESS (that line of TAO's script is unreachable)
[ "$NET $TASK" = "ssd dataset_convert" ] || status SUCCESS "$NET $TASK finished successfully."
