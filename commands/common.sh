# shellcheck shell=bash
# Shared by the scripts in commands/: printing and running commands, one retrain +
# evaluate + results row. Sourced, not run.

run() {  # print the command, shell-quoted, then run it
  printf '+' >&2
  printf ' %q' "$@" >&2
  printf '\n' >&2
  "$@"
}

die() {
  echo "error: $*" >&2
  exit 1
}

"$PYTHON" -c "import retrain" 2>/dev/null \
  || die "$PYTHON cannot import retrain; install it (pip install -e .) or set PYTHON to the interpreter that has it"
# Use the retrain, evaluate and prepare_isic installed beside that interpreter.
PATH="$("$PYTHON" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"

# retrain_and_record IMAGE_DIR NAME TASK ARCHITECTURE [OPTION VALUE]...
# Retrains IMAGE_DIR into OUT_DIR/models/NAME.{pb,txt} (log in OUT_DIR/logs), evaluates
# the model when asked and appends a row to TABLE. Options; an empty VALUE = not given:
#   --recipe R           retrain --recipe R (not given: retrain's default, poets)
#   --learning_rate LR   retrain --learning_rate LR (not given: the recipe's)
#   --steps N            retrain --how_many_training_steps N (not given: the recipe's)
#   --validation_dir DIR retrain --validation_dir DIR: DIR is retrain's validation set
#   --evaluate_on DIR    evaluate the model on DIR and record validation figures
#   --metadata CSV       patient metadata for retrain and evaluate (repeatable)
#   --operating_point P  retrain --operating_point P, e.g. melanoma:sensitivity=0.95
#                        (repeatable); evaluate measures it and the row records it
# A flag not given is left to the recipe: retrain lets any explicit flag override it.
retrain_and_record() {
  local image_dir=$1 name=$2 task=$3 architecture=$4
  shift 4
  local recipe='' learning_rate='' steps='' validation_dir='' evaluate_on='' metadata_args=() point_args=()
  while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || die "retrain_and_record: $1 needs a value"
    case $1 in
      --recipe) recipe=$2 ;;
      --learning_rate) learning_rate=$2 ;;
      --steps) steps=$2 ;;
      --validation_dir) validation_dir=$2 ;;
      --evaluate_on) evaluate_on=$2 ;;
      --metadata) [[ -z $2 ]] || metadata_args+=(--metadata "$2") ;;
      --operating_point) [[ -z $2 ]] || point_args+=(--operating_point "$2") ;;
      *) die "retrain_and_record: unknown option $1" ;;
    esac
    shift 2
  done
  local graph="$OUT_DIR/models/$name.pb" labels="$OUT_DIR/models/$name.txt" log="$OUT_DIR/logs/$name.retrain.log"
  local args=(--image_dir "$image_dir" --output_graph "$graph" --output_labels "$labels"
    --bottleneck_dir "$BOTTLENECK_DIR" --architecture "$architecture")
  if [[ -n $recipe ]]; then args+=(--recipe "$recipe"); fi
  if [[ -n $learning_rate ]]; then args+=(--learning_rate "$learning_rate"); fi
  if [[ -n $steps ]]; then args+=(--how_many_training_steps "$steps"); fi
  if [[ -n $validation_dir ]]; then args+=(--validation_dir "$validation_dir"); fi
  run retrain "${args[@]}" "${metadata_args[@]}" "${point_args[@]}" "${EXTRA[@]}" 2>&1 | tee "$log"
  local eval_args=()
  if [[ -n $evaluate_on ]]; then
    local json="$OUT_DIR/logs/$name.validation.json"
    run evaluate --graph "$graph" --labels "$labels" --image_dir "$evaluate_on" --json "$json" \
      --plot "$OUT_DIR/logs/$name.validation_roc.png" "${metadata_args[@]}" | tee "$OUT_DIR/logs/$name.validation.txt"
    eval_args=(--eval_json "$json")
  fi
  run "$PYTHON" -m retrain.cli.results add --table "$TABLE" --task "$task" --architecture "$architecture" \
    --recipe "$recipe" --steps "$steps" --learning_rate "$learning_rate" --retrain_log "$log" "${eval_args[@]}" \
    --metadata "$([[ ${#metadata_args[@]} -gt 0 ]] && echo yes || echo no)"
}

write_markdown() {
  "$PYTHON" -m retrain.cli.results markdown "$TABLE" > "$OUT_DIR/results.md"
  echo "Results: $TABLE and $OUT_DIR/results.md" >&2
  cat "$OUT_DIR/results.md"
}
