#!/usr/bin/env bash
# Seed 000, CUB-200-2011: Hinton KD from the ResNet-50 teachers of teachers.sh (label smoothing 0.0 and
# 0.1) into ImageNet-pretrained ResNet-18, ResNet-50 and MobileNetV2 at T in {1, 2, 3, 64}, pure KD.
# Rows: 2 teachers x 3 students x 4 temperatures x SEEDS.
#
#   DATA_DIR=/data/cub200 NPROC=1 bash scripts/cub/students.sh
#   DRY_RUN=1 bash scripts/cub/students.sh      # print the 24 commands
#   SMOKE=1 bash scripts/cub/students.sh        # 2 steps of each command shape on CPU, fake data
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for seed in $SEEDS; do
  for smoothing in "${TEACHER_LS[@]}"; do
    teacher=$(run_ckpt "cub_teacher_ls$smoothing" cub200 "$TEACHER_MODEL" "$TEACHER_SEED")
    for student in "${STUDENTS[@]}"; do
      for temperature in "${TEMPERATURES[@]}"; do
        launch kd_st.py "${DATA[@]}" --model "$student" "${STUDENT_RECIPE[@]}" --teacher "$teacher" \
          "${KD[@]}" --temperature "$temperature" --seed "$seed" \
          --exp-name "cub_kd_ls${smoothing}_T$temperature" --out-dir "$OUT_DIR"
      done
    done
  done
done
finish
