#!/usr/bin/env bash
# CIFAR-100 benchmark pairs (REFERENCE_RESULTS.md, RepDistiller's recipe): for each pair the student
# without teacher, with KD, with FitNet, with AT, with FSP (two-stage), with CRD, with DKD and with ReviewKD.
# Rows: 4 pairs x 8 methods x SEEDS.
# Needs the teachers of teachers.sh in the same OUT_DIR.
#
#   bash scripts/cifar100_benchmark/students.sh
#   DATA_DIR=/data/cifar NPROC=1 SEEDS="0 1 2" OUT_DIR=runs/cifar100_benchmark bash scripts/cifar100_benchmark/students.sh
#   DRY_RUN=1 bash scripts/cifar100_benchmark/students.sh     # print the 96 commands
#   SMOKE=1 bash scripts/cifar100_benchmark/students.sh       # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"
# DKD as mdistiller's configs/cifar100/dkd/<pair>.yaml: CE 1, alpha 1, T 4, 20 warm-up epochs, beta by pair
DKD=(--ce-weight 1 --tckd-weight 1 --temperature 4 --dkd-warmup-epochs 20)
declare -A DKD_BETA=([resnet56:resnet20]=2 [resnet110:resnet32]=2 [resnet32x4:resnet8x4]=8 [wrn_40_2:wrn_16_2]=6)
# FitNet as RepDistiller's --distill hint -a 0 -b 100 --hint_layer 2 (= mdistiller's fitnet.yaml): CE 1 + 100 * hint, joint
FITNET=(--ce-weight 1 --hint-weight 100 --hint-stage 2 --hint-epochs 0 --kd-weight 0)
# CRD as RepDistiller's train_student.py --distill crd -r 1 -a 0 -b 0.8 (mdistiller's configs/cifar100/crd.yaml):
# 128-d embeddings, 16384 negatives of other classes, T 0.07, memory momentum 0.5
CRD=(--ce-weight 1 --crd-weight 0.8 --feat-dim 128 --nce-k 16384 --nce-temperature 0.07 --nce-momentum 0.5)
# ReviewKD as the authors' CIFAR-100/script/reviewKD.sh: CE 1, 20 warm-up epochs of the review loss, weight by pair
REVIEWKD=(--ce-weight 1 --reviewkd-warmup-epochs 20)
declare -A REVIEWKD_WEIGHT=([resnet56:resnet20]=0.6 [resnet110:resnet32]=1 [resnet32x4:resnet8x4]=5 [wrn_40_2:wrn_16_2]=5)

for seed in $SEEDS; do
  for pair in "${PAIRS[@]}"; do
    teacher=${pair%%:*} student=${pair##*:}
    common=("${DATA[@]}" --model "$student" "${RECIPE[@]}" --seed "$seed" --out-dir "$OUT_DIR")
    kd=(--teacher "$(run_ckpt c100b_vanilla cifar100 "$teacher" "$TEACHER_SEED")")
    launch train_teacher.py "${common[@]}" --exp-name c100b_vanilla
    launch kd_st.py "${common[@]}" "${kd[@]}" --exp-name c100b_kd "${KD[@]}"
    launch kd_fitnet.py "${common[@]}" "${kd[@]}" --exp-name c100b_fitnet "${FITNET[@]}"
    launch kd_at.py "${common[@]}" "${kd[@]}" --exp-name c100b_at "${AT[@]}"
    launch kd_fsp.py "${common[@]}" "${kd[@]}" --exp-name c100b_fsp --fsp-mode two-stage \
      --fsp-epochs "$FSP_EPOCHS" --fsp-lr "$FSP_LR"
    launch kd_crd.py "${common[@]}" "${kd[@]}" --exp-name c100b_crd "${CRD[@]}"
    launch kd_dkd.py "${common[@]}" "${kd[@]}" --exp-name c100b_dkd "${DKD[@]}" --nckd-weight "${DKD_BETA[$pair]}"
    launch kd_reviewkd.py "${common[@]}" "${kd[@]}" --exp-name c100b_reviewkd "${REVIEWKD[@]}" \
      --reviewkd-weight "${REVIEWKD_WEIGHT[$pair]}"
  done
done
finish
