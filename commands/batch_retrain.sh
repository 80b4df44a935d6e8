#!/usr/bin/env bash
# Retrain one class-per-folder tree for every architecture x learning rate x step count,
# reusing one bottleneck cache, and collect results.csv and results.md in OUT_DIR.
#
#   commands/batch_retrain.sh IMAGE_DIR OUT_DIR
#
# Override the grid like the original codelab, with environment variables:
#   ARCHITECTURES="efficientnet_lite0"  LEARNING_RATES="0.01 0.05"  TRAINING_STEPS="500 4000"
#   VALIDATION_DIR=tree   also evaluate each model on this class-per-folder tree
#   RETRAIN_FLAGS="--class_weights balanced"   extra flags for every retrain
#   BOTTLENECK_DIR=dir    the shared cache (default OUT_DIR/bottlenecks)
#   PYTHON=python3        the interpreter that has retrain installed
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 IMAGE_DIR OUT_DIR" >&2
  exit 2
fi
IMAGE_DIR=$1
OUT_DIR=$2
ARCHITECTURES=${ARCHITECTURES:-efficientnet_lite0}
LEARNING_RATES=${LEARNING_RATES:-0.01}
TRAINING_STEPS=${TRAINING_STEPS:-4000}
BOTTLENECK_DIR=${BOTTLENECK_DIR:-$OUT_DIR/bottlenecks}
VALIDATION_DIR=${VALIDATION_DIR:-}
read -r -a EXTRA <<< "${RETRAIN_FLAGS:-}"
PYTHON=${PYTHON:-python3}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ -d $IMAGE_DIR ]] || die "IMAGE_DIR $IMAGE_DIR: no such directory"
mkdir -p "$OUT_DIR/models" "$OUT_DIR/logs"
TABLE=$OUT_DIR/results.csv
rm -f "$TABLE"
TASK=$(basename "$IMAGE_DIR")

for architecture in $ARCHITECTURES; do
  for learning_rate in $LEARNING_RATES; do
    for steps in $TRAINING_STEPS; do
      name="${TASK}_${architecture}_lr${learning_rate}_${steps}"
      retrain_and_record "$IMAGE_DIR" "$name" "$TASK" "$architecture" \
        --learning_rate "$learning_rate" --steps "$steps" --evaluate_on "$VALIDATION_DIR"
    done
  done
done
write_markdown
