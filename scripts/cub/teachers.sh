#!/usr/bin/env bash
# Seed 000, CUB-200-2011: ResNet-50 teachers fine-tuned with label smoothing 0.0 and 0.1 (the two alpha
# columns of the seed's tables), once each with seed TEACHER_SEED, each from the ImageNet teacher of
# scripts/imagenet/teachers.sh with the same label smoothing (IMAGENET_OUT_DIR; see recipe.sh).
# Then run students.sh with the same OUT_DIR.
#
#   DATA_DIR=/data/cub200 NPROC=1 bash scripts/cub/teachers.sh
#   DRY_RUN=1 bash scripts/cub/teachers.sh      # print the 2 commands
#   SMOKE=1 bash scripts/cub/teachers.sh        # 2 steps of each command shape on CPU, fake data
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for smoothing in "${TEACHER_LS[@]}"; do
  teacher_init "$smoothing"
  launch train_teacher.py "${DATA[@]}" --model "$TEACHER_MODEL" "${INIT[@]}" "${TEACHER_RECIPE[@]}" \
    --label-smoothing "$smoothing" --seed "$TEACHER_SEED" --exp-name "cub_teacher_ls$smoothing" --out-dir "$OUT_DIR"
done
finish
