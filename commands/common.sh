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

# retrain_and_record IMAGE_DIR NAME TASK ARCHITECTURE LEARNING_RATE STEPS [VALIDATION_DIR]
retrain_and_record() {
  local image_dir=$1 name=$2 task=$3 architecture=$4 learning_rate=$5 steps=$6 validation=${7:-}
  local graph="$OUT_DIR/models/$name.pb" labels="$OUT_DIR/models/$name.txt" log="$OUT_DIR/logs/$name.retrain.log"
  run retrain --image_dir "$image_dir" --output_graph "$graph" --output_labels "$labels" \
    --bottleneck_dir "$BOTTLENECK_DIR" --architecture "$architecture" \
    --learning_rate "$learning_rate" --how_many_training_steps "$steps" "${EXTRA[@]}" 2>&1 | tee "$log"
  local eval_args=()
  if [[ -n $validation ]]; then
    local json="$OUT_DIR/logs/$name.validation.json"
    run evaluate --graph "$graph" --labels "$labels" --image_dir "$validation" --json "$json" \
      --plot "$OUT_DIR/logs/$name.validation_roc.png" | tee "$OUT_DIR/logs/$name.validation.txt"
    eval_args=(--eval_json "$json")
  fi
  run "$PYTHON" -m retrain.results add --table "$TABLE" --task "$task" --architecture "$architecture" \
    --steps "$steps" --learning_rate "$learning_rate" --retrain_log "$log" "${eval_args[@]}"
}

write_markdown() {
  "$PYTHON" -m retrain.results markdown "$TABLE" > "$OUT_DIR/results.md"
  echo "Results: $TABLE and $OUT_DIR/results.md" >&2
  cat "$OUT_DIR/results.md"
}
