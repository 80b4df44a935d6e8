#!/usr/bin/env bash
# ISIC 2017 Part 3 end to end: prepare both binary tasks and the three-class tree from
# the challenge's layout, retrain each (with the validation set as retrain's
# --validation_dir when DATA_DIR has it), evaluate each on that validation set, and
# write OUT_DIR/results.csv and OUT_DIR/results.md.
#
#   commands/retrain_isic2017.sh DATA_DIR OUT_DIR
#   RECIPE=finetune TASKS=three_class commands/retrain_isic2017.sh DATA_DIR OUT_DIR
#   OPERATING_POINT="melanoma:sensitivity=0.9" commands/retrain_isic2017.sh DATA_DIR OUT_DIR
#
# DATA_DIR holds ISIC-2017_Training_Data/ and ISIC-2017_Training_Part3_GroundTruth.csv
# (and optionally the _Validation_ pair and the _metadata.csv files).
# Environment:
#   RECIPE (poets)        retrain --recipe: poets, strong or finetune (whole backbone,
#                         ~20 min per task for the 2000 training images on 2 cores)
#   TASKS (task1_melanoma task2_seborrheic_keratosis three_class)   which trees to retrain
#   LEARNING_RATE, TRAINING_STEPS   passed as --learning_rate / --how_many_training_steps
#                         only when set; unset, the recipe's values apply
#   ARCHITECTURE (efficientnet_lite0)
#   METADATA (0)          1: also give retrain and evaluate the patients' age and sex
#                         (DATA_DIR's *_Data_metadata.csv) as a second model input
#   OPERATING_POINT (melanoma:sensitivity=0.95)   retrain --operating_point, given to each
#                         task that has the named class: the melanoma threshold is chosen on
#                         the validation set for 95 % sensitivity (screening: a missed melanoma
#                         costs far more than a needless biopsy) and stored with the model;
#                         results then record the sensitivity and specificity evaluate measures
#                         there. So task1_melanoma and three_class get it and
#                         task2_seborrheic_keratosis (seborrheic keratosis, a benign lesion, vs
#                         the rest) gets none: it keeps plain scores, as no screening target is
#                         obvious for it; name one, e.g. "seborrheic_keratosis:specificity=0.9",
#                         to give it one. Several points separated by spaces; CLASS:sensitivity=S,
#                         CLASS:specificity=S or CLASS:threshold=T, CLASS one of melanoma nevus
#                         seborrheic_keratosis other. Empty: no operating point.
#   RETRAIN_FLAGS         extra retrain flags, e.g. "--class_weights balanced" (set the
#                         recipe, learning rate, steps and operating points with the variables
#                         here)
#   BOTTLENECK_DIR (OUT_DIR/bottlenecks), PYTHON (python3)
# With a validation set, retrain trains on the whole training tree but its hash-split
# test share (--testing_percentage, 10 %) and picks its best step or epoch on the
# validation set (strong, finetune), so the validation figures in results are not fully
# independent of training; the test figures are. The operating point too is chosen on the
# validation set, so val_sensitivity meets its target there by construction: what it
# tells is its interval, not its value. With fewer than 30 validation images of the class, or no
# validation set, retrain chooses it on out-of-fold training predictions instead
# (op_chosen_on in results says where); without a validation set nothing is evaluated.
set -euo pipefail

ALL_TASKS="task1_melanoma task2_seborrheic_keratosis three_class"
task_classes() {  # the class folders prepare_isic writes for a task
  case $1 in
    task1_melanoma) echo "melanoma other" ;;
    task2_seborrheic_keratosis) echo "seborrheic_keratosis other" ;;
    three_class) echo "melanoma nevus seborrheic_keratosis" ;;
  esac
}
point_class() {  # melanoma:sensitivity=0.95 -> melanoma ("seborrheic keratosis" -> seborrheic_keratosis)
  local class=${1%%:*}
  class=${class,,}
  echo "${class// /_}"
}
if [[ $# -ne 2 ]]; then
  echo "usage: $0 DATA_DIR OUT_DIR" >&2
  exit 2
fi
DATA_DIR=$1
OUT_DIR=$2
ARCHITECTURE=${ARCHITECTURE:-efficientnet_lite0}
RECIPE=${RECIPE:-poets}
TASKS=${TASKS:-$ALL_TASKS}
LEARNING_RATE=${LEARNING_RATE:-}
TRAINING_STEPS=${TRAINING_STEPS:-}
BOTTLENECK_DIR=${BOTTLENECK_DIR:-$OUT_DIR/bottlenecks}
read -r -a EXTRA <<< "${RETRAIN_FLAGS:-}"
read -r -a POINTS <<< "${OPERATING_POINT-melanoma:sensitivity=0.95}"
PYTHON=${PYTHON:-python3}
METADATA=${METADATA:-0}
# shellcheck source=commands/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

read -r -a TASK_LIST <<< "$TASKS"
[[ ${#TASK_LIST[@]} -gt 0 ]] || die "TASKS is empty; choose from: $ALL_TASKS"
for task in "${TASK_LIST[@]}"; do
  [[ " $ALL_TASKS " == *" $task "* ]] || die "TASKS: unknown task $task; choose from: $ALL_TASKS"
done
for flag in "${EXTRA[@]}"; do
  case ${flag%%=*} in
    --recipe) die "RETRAIN_FLAGS: set RECIPE instead of $flag (results.csv records RECIPE)" ;;
    --learning_rate | --learning-rate) die "RETRAIN_FLAGS: set LEARNING_RATE instead of $flag" ;;
    --how_many_training_steps | --how-many-training-steps) die "RETRAIN_FLAGS: set TRAINING_STEPS instead of $flag" ;;
    --validation_dir | --validation-dir) die "RETRAIN_FLAGS: $flag is set by this script (the prepared validation tree)" ;;
    --operating_point | --operating-point) die "RETRAIN_FLAGS: set OPERATING_POINT instead of $flag (it picks the tasks with the class)" ;;
  esac
done
for point in "${POINTS[@]}"; do
  [[ $point == *:* ]] || die "OPERATING_POINT: $point: name the class, e.g. melanoma:sensitivity=0.95"
  [[ " melanoma nevus seborrheic_keratosis other " == *" $(point_class "$point") "* ]] \
    || die "OPERATING_POINT: $point: no task has class ${point%%:*}; the classes are melanoma nevus seborrheic_keratosis other"
done

points_for() {  # retrain_and_record's --operating_point options for a task: the points naming one of its classes
  local task=$1 point
  for point in "${POINTS[@]}"; do
    if [[ " $(task_classes "$task") " == *" $(point_class "$point") "* ]]; then
      printf '%s\n' --operating_point "$point"
    else
      echo "note: $task has no class ${point%%:*}: no --operating_point $point for it" >&2
    fi
  done
}

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

METADATA_FILES=()
if [[ $METADATA == 1 ]]; then
  [[ -f "$DATA_DIR/ISIC-2017_Training_Data_metadata.csv" ]] \
    || die "METADATA=1: DATA_DIR $DATA_DIR has no ISIC-2017_Training_Data_metadata.csv"
  METADATA_FILES+=(--metadata "$DATA_DIR/ISIC-2017_Training_Data_metadata.csv")
  if [[ -n $HAVE_VALIDATION && -f "$DATA_DIR/ISIC-2017_Validation_Data_metadata.csv" ]]; then
    METADATA_FILES+=(--metadata "$DATA_DIR/ISIC-2017_Validation_Data_metadata.csv")
  fi
fi

for task in "${TASK_LIST[@]}"; do
  validation=
  [[ -n $HAVE_VALIDATION ]] && validation="$OUT_DIR/validation/$task"
  mapfile -t point_args < <(points_for "$task")
  retrain_and_record "$OUT_DIR/train/$task" "$task" "$task" "$ARCHITECTURE" --recipe "$RECIPE" \
    --learning_rate "$LEARNING_RATE" --steps "$TRAINING_STEPS" --validation_dir "$validation" --evaluate_on "$validation" \
    "${METADATA_FILES[@]}" "${point_args[@]}"
done
write_markdown
