#!/usr/bin/env bash
# CIFAR-100 benchmark pairs (REFERENCE_RESULTS.md, RepDistiller's recipe): for each pair the student
# without teacher, with KD, with AT, with FSP (two-stage) and with DKD. Rows: 4 pairs x 5 methods x SEEDS.
# Needs the teachers of teachers.sh in the same OUT_DIR.
#
#   bash scripts/cifar100_benchmark/students.sh
#   DATA_DIR=/data/cifar NPROC=1 SEEDS="0 1 2" OUT_DIR=runs/cifar100_benchmark bash scripts/cifar100_benchmark/students.sh
#   DRY_RUN=1 bash scripts/cifar100_benchmark/students.sh     # print the 60 commands
#   SMOKE=1 bash scripts/cifar100_benchmark/students.sh       # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"
# DKD as mdistiller's configs/cifar100/dkd/<pair>.yaml: CE 1, alpha 1, T 4, 20 warm-up epochs, beta by pair
DKD=(--ce-weight 1 --tckd-weight 1 --temperature 4 --dkd-warmup-epochs 20)
declare -A DKD_BETA=([resnet56:resnet20]=2 [resnet110:resnet32]=2 [resnet32x4:resnet8x4]=8 [wrn_40_2:wrn_16_2]=6)

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
    launch kd_dkd.py "${common[@]}" "${kd[@]}" --exp-name c100b_dkd "${DKD[@]}" --nckd-weight "${DKD_BETA[$pair]}"
  done
done
finish
