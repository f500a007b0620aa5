#!/usr/bin/env bash
# What a teacher cache saves on a grid of KD runs with one teacher: seed 003's 7 cells of temperature x alpha
# (scripts/mini_imagenet/kd.sh), run with kd_st.py as usual, then again after one cache_teacher.py pass
# replaying it. Prints the wall times, the speed-up (the cache's writing included) and each cell's top-1 both
# ways, as a markdown table (docs/performance.md).
#
#   bash scripts/cache_grid.sh                          # digits: resnet56 -> resnet20, 30 epochs
#   DATASET=fake EPOCHS=5 bash scripts/cache_grid.sh    # fake 32x32 images, random-weight resnet56 teacher
#   DATASET=fake EPOCHS=5 TEACHER_MODEL=resnet110 bash scripts/cache_grid.sh
#
# Environment: DATASET (digits or fake), EPOCHS (30), TEACHER_MODEL (resnet56) and STUDENT (resnet20), TEACHER (a
# TEACHER_MODEL best.pt of the data set; default: trained here on digits, random weights on fake), DTYPE of the
# cache (float16), OUT_DIR (a new temporary folder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATASET="${DATASET:-digits}"
EPOCHS="${EPOCHS:-30}"
DTYPE="${DTYPE:-float16}"
TEACHER_MODEL="${TEACHER_MODEL:-resnet56}"
STUDENT="${STUDENT:-resnet20}"
OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cache_grid.XXXXXX")}"
mkdir -p "$OUT_DIR"
GRID=(1:0.9 3:0.9 5:0.9 10:0.9 3:0.7 3:0.6 3:0.5)  # T:alpha
DATA=(--dataset "$DATASET")
[[ $DATASET == fake ]] && DATA+=(--num-classes 10)

if [[ -z "${TEACHER:-}" ]]; then
  if [[ $DATASET == fake ]]; then
    TEACHER="$OUT_DIR/${TEACHER_MODEL}_random.pt"
    python -c "import sys, torch; sys.path.insert(0, '.'); from common.models import create_model
torch.save({'model': create_model('$TEACHER_MODEL', 10, zero_init_residual=True).state_dict(),
            'model_name': '$TEACHER_MODEL', 'num_classes': 10, 'top1': 0.0}, '$TEACHER')"
  else
    python train_teacher.py "${DATA[@]}" --model "$TEACHER_MODEL" --out-dir "$OUT_DIR/teacher" > "$OUT_DIR/teacher.log"
    TEACHER=$(ls "$OUT_DIR"/teacher/*/best.pt)
  fi
fi

now() { date +%s.%N; }
grid() {  # grid NAME [extra flags]: the 7 cells, top-1 of each into $OUT_DIR/NAME.top1
  local name=$1; shift
  for cell in "${GRID[@]}"; do
    local t=${cell%%:*} a=${cell##*:}
    python kd_st.py "${DATA[@]}" --model "$STUDENT" --teacher "$TEACHER" --epochs "$EPOCHS" --temperature "$t" --kd-weight "$a" \
      --ce-weight "$(python -c "print(round(1 - $a, 6))")" --out-dir "$OUT_DIR/$name" "$@" | tail -1 \
      | sed -E "s/.*FINAL top1=([0-9.]+).*/T=$t alpha=$a \1/" >> "$OUT_DIR/$name.top1"
  done
}

start=$(now)
grid plain
plain=$(python -c "print($(now) - $start)")
start=$(now)
python cache_teacher.py "${DATA[@]}" --teacher "$TEACHER" --epochs "$EPOCHS" --dtype "$DTYPE" --out "$OUT_DIR/cache" \
  | tail -1
written=$(python -c "print($(now) - $start)")
grid cached --teacher-cache "$OUT_DIR/cache"
cached=$(python -c "print($(now) - $start)")

echo
echo "$DATASET, $TEACHER_MODEL -> $STUDENT, $EPOCHS epochs, 7 kd_st.py runs; cache $DTYPE, $(du -sh "$OUT_DIR/cache" | cut -f1)"
echo
echo "| | wall time (s) |"
echo "|---|---|"
printf "| 7 runs, teacher in the loop | %.0f |\n" "$plain"
printf "| cache_teacher.py, once | %.0f |\n" "$written"
printf "| 7 runs replaying the cache (the writing included) | %.0f |\n" "$cached"
printf "| speed-up | %.2fx |\n" "$(python -c "print($plain / $cached)")"
echo
echo "| cell | top-1, teacher in the loop | top-1, cached |"
echo "|---|---|---|"
paste -d' ' "$OUT_DIR/plain.top1" "$OUT_DIR/cached.top1" | awk '{printf "| %s %s | %s | %s |\n", $1, $2, $3, $6}'
