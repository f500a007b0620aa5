#!/usr/bin/env bash
# Seed 000, ImageNet-1K: ResNet-50 teachers trained from scratch with label smoothing 0.0 and 0.1
# (the two alpha columns of the seed's tables), once each with seed TEACHER_SEED; with
# TORCHVISION_TEACHER=1 only the 0.1 one (torchvision's weights stand for 0.0, see recipe.sh).
# Then run students.sh with the same OUT_DIR.
#
#   DATA_DIR=/data/imagenet NPROC=8 bash scripts/imagenet/teachers.sh
#   DRY_RUN=1 bash scripts/imagenet/teachers.sh      # print the 2 commands
#   SMOKE=1 bash scripts/imagenet/teachers.sh        # 2 steps of each command shape on CPU, fake data
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for smoothing in "${TEACHER_LS[@]}"; do
  torchvision_teacher "$smoothing" && continue
  launch train_teacher.py "${DATA[@]}" --model "$TEACHER_MODEL" "${TEACHER_RECIPE[@]}" \
    --label-smoothing "$smoothing" --seed "$TEACHER_SEED" --exp-name "imagenet_teacher_ls$smoothing" --out-dir "$OUT_DIR"
done
finish
