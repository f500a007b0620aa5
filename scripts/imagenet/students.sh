#!/usr/bin/env bash
# Seed 000, ImageNet-1K: Hinton KD from the ResNet-50 teachers of teachers.sh (label smoothing 0.0 and
# 0.1) into ResNet-18 and ResNet-50 (from scratch) at T in {1, 2, 3, 64}, pure KD.
# Rows: 2 teachers x 2 students x 4 temperatures x SEEDS.
#
#   DATA_DIR=/data/imagenet NPROC=8 bash scripts/imagenet/students.sh
#   DRY_RUN=1 bash scripts/imagenet/students.sh      # print the 16 commands
#   SMOKE=1 bash scripts/imagenet/students.sh        # 2 steps of each command shape on CPU, fake data
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for seed in $SEEDS; do
  for smoothing in "${TEACHER_LS[@]}"; do
    if torchvision_teacher "$smoothing"; then
      teacher=(--teacher-model "$TEACHER_MODEL" --teacher-pretrained)
    else
      teacher=(--teacher "$(run_ckpt "imagenet_teacher_ls$smoothing" imagenet "$TEACHER_MODEL" "$TEACHER_SEED")")
    fi
    for student in "${STUDENTS[@]}"; do
      for temperature in "${TEMPERATURES[@]}"; do
        launch kd_st.py "${DATA[@]}" --model "$student" "${STUDENT_RECIPE[@]}" "${teacher[@]}" \
          "${KD[@]}" --temperature "$temperature" --seed "$seed" \
          --exp-name "imagenet_kd_ls${smoothing}_T$temperature" --out-dir "$OUT_DIR"
      done
    done
  done
done
finish
