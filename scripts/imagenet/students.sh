#!/usr/bin/env bash
# Seed 000, ImageNet-1K: Hinton KD from the ResNet-50 teachers of teachers.sh (label smoothing 0.0 and
# 0.1) into ResNet-18, ResNet-50 and EfficientNet-B0 at T in {1, 2, 3, 64}, pure KD (--alpha 1).
# Rows: 2 teachers x 3 students x 4 temperatures x SEEDS.
#
#   DATA_DIR=/data/imagenet NPROC=8 bash scripts/imagenet/students.sh
#   DRY_RUN=1 bash scripts/imagenet/students.sh      # print the 24 commands
#   SMOKE=1 bash scripts/imagenet/students.sh        # 2 steps of each command shape on CPU, fake data
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for seed in $SEEDS; do
  for smoothing in "${TEACHER_LS[@]}"; do
    teacher=$(teacher_ckpt "imagenet_teacher_ls$smoothing" imagenet "$TEACHER_MODEL" "$TEACHER_SEED")
    for student in "${STUDENTS[@]}"; do
      for temperature in "${TEMPERATURES[@]}"; do
        launch kd_st.py "${DATA[@]}" --model "$student" "${RECIPE[@]}" --epochs "$KD_EPOCHS" --teacher "$teacher" \
          --temperature "$temperature" --alpha "$KD_ALPHA" --seed "$seed" \
          --exp-name "imagenet_kd_ls${smoothing}_T$temperature" --out-dir "$OUT_DIR"
      done
    done
  done
done
finish
