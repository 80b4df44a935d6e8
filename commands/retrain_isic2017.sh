#!/usr/bin/env bash
# ISIC 2017 Part 3 end to end: prepare both binary tasks and the three-class tree from
# the challenge's layout, retrain each, evaluate each on the validation set when
# DATA_DIR has it, and write OUT_DIR/results.csv and OUT_DIR/results.md.
#
#   commands/retrain_isic2017.sh DATA_DIR OUT_DIR
#
# DATA_DIR holds ISIC-2017_Training_Data/ and ISIC-2017_Training_Part3_GroundTruth.csv
# (and optionally the _Validation_ pair and the _metadata.csv files).
# Environment: ARCHITECTURE (efficientnet_lite0), LEARNING_RATE (0.01),
# TRAINING_STEPS (4000), RETRAIN_FLAGS (e.g. "--class_weights balanced"),
# BOTTLENECK_DIR (OUT_DIR/bottlenecks), PYTHON (python3).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 DATA_DIR OUT_DIR" >&2
  exit 2
fi
DATA_DIR=$1
OUT_DIR=$2
ARCHITECTURE=${ARCHITECTURE:-efficientnet_lite0}
LEARNING_RATE=${LEARNING_RATE:-0.01}
TRAINING_STEPS=${TRAINING_STEPS:-4000}
BOTTLENECK_DIR=${BOTTLENECK_DIR:-$OUT_DIR/bottlenecks}
read -r -a EXTRA <<< "${RETRAIN_FLAGS:-}"
PYTHON=${PYTHON:-python3}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

prepare() {  # prepare SET (Training or Validation) into OUT_DIR/<set>
  local set=$1 target=$2
  local images="$DATA_DIR/ISIC-2017_${set}_Data"
  local truth="$DATA_DIR/ISIC-2017_${set}_Part3_GroundTruth.csv"
  local metadata="$DATA_DIR/ISIC-2017_${set}_Data_metadata.csv"
  local args=(--images "$images" --ground_truth "$truth" --output "$target")
  [[ -f $metadata ]] && args+=(--metadata "$metadata")
  run prepare_isic "${args[@]}"
}

[[ -f "$DATA_DIR/ISIC-2017_Training_Part3_GroundTruth.csv" ]] \
  || die "DATA_DIR $DATA_DIR: no ISIC-2017_Training_Part3_GroundTruth.csv"
mkdir -p "$OUT_DIR/models" "$OUT_DIR/logs"
TABLE=$OUT_DIR/results.csv
rm -f "$TABLE"

prepare Training "$OUT_DIR/train"
HAVE_VALIDATION=
if [[ -f "$DATA_DIR/ISIC-2017_Validation_Part3_GroundTruth.csv" ]]; then
  prepare Validation "$OUT_DIR/validation"
  HAVE_VALIDATION=1
fi

for task in task1_melanoma task2_seborrheic_keratosis three_class; do
  validation=
  [[ -n $HAVE_VALIDATION ]] && validation="$OUT_DIR/validation/$task"
  retrain_and_record "$OUT_DIR/train/$task" "$task" "$task" "$ARCHITECTURE" "$LEARNING_RATE" "$TRAINING_STEPS" "$validation"
done
write_markdown
