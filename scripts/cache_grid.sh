#!/usr/bin/env bash
# What a teacher cache saves on a grid of KD runs with one teacher: seed 003's 7 cells of temperature x alpha
# (scripts/mini_imagenet/kd.sh), run with kd_st.py as usual and, after one cache_teacher.py pass, replaying it.
# Prints the wall times, the speed-up (the cache's writing included) and each cell's top-1 both ways, as a
# markdown table (docs/performance.md).
#
#   bash scripts/cache_grid.sh                          # digits: resnet56 -> resnet20, 30 epochs
#   DATASET=fake EPOCHS=5 bash scripts/cache_grid.sh    # fake 32x32 images, random-weight resnet56 teacher
#   DATASET=fake EPOCHS=5 TEACHER_MODEL=resnet110 bash scripts/cache_grid.sh
#   DATASET=fake EPOCHS=100 CACHE_FLAGS=--compile bash scripts/cache_grid.sh   # seed 003's length
#
# Environment: DATASET (digits or fake), EPOCHS (30), TEACHER_MODEL (resnet56) and STUDENT (resnet20), TEACHER (a
# TEACHER_MODEL best.pt of the data set; default: trained here on digits, random weights on fake), DTYPE of the
# cache (float16), CACHE_FLAGS for cache_teacher.py (e.g. --compile, which pays past ~70,000 images), OUT_DIR (a new
# temporary folder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATASET="${DATASET:-digits}"
EPOCHS="${EPOCHS:-30}"
DTYPE="${DTYPE:-float16}"
read -r -a CACHE_FLAGS <<< "${CACHE_FLAGS:-}"
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

# One cache_teacher.py pass, then each cell twice, teacher in the loop and replaying the cache, one after the
# other: this shared VM's speed drifts by up to 2x over minutes, and interleaving gives both ways the same drift.
now() { date +%s.%N; }
elapsed() { python -c "print($(now) - $1)"; }
cell() {  # cell NAME T ALPHA [extra flags]: one kd_st.py run; its top-1 into $OUT_DIR/NAME.top1, its seconds echoed
  local name=$1 t=$2 a=$3 start; shift 3
  start=$(now)
  python kd_st.py "${DATA[@]}" --model "$STUDENT" --teacher "$TEACHER" --epochs "$EPOCHS" --temperature "$t" \
    --kd-weight "$a" --ce-weight "$(python -c "print(round(1 - $a, 6))")" --out-dir "$OUT_DIR/$name" "$@" | tail -1 \
    | sed -E "s/.*FINAL top1=([0-9.]+).*/T=$t alpha=$a \1/" >> "$OUT_DIR/$name.top1"
  elapsed "$start"
}

start=$(now)
python cache_teacher.py "${DATA[@]}" --teacher "$TEACHER" --epochs "$EPOCHS" --dtype "$DTYPE" --out "$OUT_DIR/cache" \
  ${CACHE_FLAGS[@]+"${CACHE_FLAGS[@]}"} | tail -1
written=$(elapsed "$start")
plain=0 cached=$written
for c in "${GRID[@]}"; do
  plain=$(python -c "print($plain + $(cell plain "${c%%:*}" "${c##*:}"))")
  cached=$(python -c "print($cached + $(cell cached "${c%%:*}" "${c##*:}" --teacher-cache "$OUT_DIR/cache"))")
done

echo
echo "$DATASET, $TEACHER_MODEL -> $STUDENT, $EPOCHS epochs, 7 kd_st.py runs; cache $DTYPE${CACHE_FLAGS[*]+ ${CACHE_FLAGS[*]}}, $(du -sh "$OUT_DIR/cache" | cut -f1)"
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
