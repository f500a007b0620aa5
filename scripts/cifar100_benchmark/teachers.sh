#!/usr/bin/env bash
# CIFAR-100 benchmark pairs (REFERENCE_RESULTS.md, RepDistiller's recipe): the four teachers, trained once
# with seed TEACHER_SEED. Then run students.sh with the same OUT_DIR.
#
#   bash scripts/cifar100_benchmark/teachers.sh
#   DATA_DIR=/data/cifar NPROC=1 OUT_DIR=runs/cifar100_benchmark bash scripts/cifar100_benchmark/teachers.sh
#   DRY_RUN=1 bash scripts/cifar100_benchmark/teachers.sh     # print the 4 commands
#   SMOKE=1 bash scripts/cifar100_benchmark/teachers.sh       # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for teacher in "${TEACHERS[@]}"; do
  launch train_teacher.py "${DATA[@]}" --model "$teacher" "${RECIPE[@]}" --seed "$TEACHER_SEED" \
    --exp-name c100b_vanilla --out-dir "$OUT_DIR"
done
finish
