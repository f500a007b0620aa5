#!/usr/bin/env bash
# CIFAR-100 benchmark pairs (REFERENCE_RESULTS.md, RepDistiller's recipe): for each pair the student
# without teacher, with KD, with AT and with FSP (two-stage). Rows: 4 pairs x 4 methods x SEEDS.
# Needs the teachers of teachers.sh in the same OUT_DIR.
#
#   bash scripts/cifar100_benchmark/students.sh
#   DATA_DIR=/data/cifar NPROC=1 SEEDS="0 1 2" OUT_DIR=runs/cifar100_benchmark bash scripts/cifar100_benchmark/students.sh
#   DRY_RUN=1 bash scripts/cifar100_benchmark/students.sh     # print the 48 commands
#   SMOKE=1 bash scripts/cifar100_benchmark/students.sh       # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for seed in $SEEDS; do
  for pair in "${PAIRS[@]}"; do
    teacher=${pair%%:*} student=${pair##*:}
    common=("${DATA[@]}" --model "$student" "${RECIPE[@]}" --seed "$seed" --out-dir "$OUT_DIR")
    kd=(--teacher "$(run_ckpt c100b_vanilla cifar100 "$teacher" "$TEACHER_SEED")")
    launch train_teacher.py "${common[@]}" --exp-name c100b_vanilla
    launch kd_st.py "${common[@]}" "${kd[@]}" --exp-name c100b_kd "${KD[@]}"
    launch kd_at.py "${common[@]}" "${kd[@]}" --exp-name c100b_at "${AT[@]}"
    launch kd_fsp.py "${common[@]}" "${kd[@]}" --exp-name c100b_fsp --fsp-mode two-stage \
      --fsp-epochs "$FSP_EPOCHS" --fsp-lr "$FSP_LR"
  done
done
finish
