#!/usr/bin/env bash
# Seed 001: basic KD methods on CIFAR-10 and CIFAR-100, ResNet-20 -> ResNet-20 and ResNet-110 -> ResNet-110,
# mean of 3 runs. Rows: 2 data sets x 2 pairs x 6 methods (baseline, logits, ST, AT, AT+ST, FSP) x SEEDS.
# The baseline runs are the teachers: the teacher of every student is the baseline run of its
# architecture with seed TEACHER_SEED.
#
#   bash scripts/cifar/methods.sh                        # the whole table, one GPU per process
#   DATA_DIR=/data/cifar NPROC=1 SEEDS="0 1 2" OUT_DIR=runs/cifar bash scripts/cifar/methods.sh
#   DRY_RUN=1 bash scripts/cifar/methods.sh              # print the 72 commands
#   SMOKE=1 bash scripts/cifar/methods.sh                # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
: "${DATA_DIR:=data}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0 1 2}" "${OUT_DIR:=runs/cifar}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

DATASETS=(cifar10 cifar100)
MODELS=(resnet20 resnet110)                    # baselines, which are also the teachers
PAIRS=(resnet20:resnet20 resnet110:resnet110)  # teacher:student
# the seed's recipe: SGD lr 0.1, momentum 0.9, wd 1e-4, x0.1 at epochs 100 and 150, 200 epochs, batch 128, no warm-up
RECIPE=(--epochs 200 --batch-size 128 --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4
        --lr-schedule multistep --milestones 100 150 --gamma 0.1 --warmup-epochs 0)
# The seed does not state its method weights; it follows Knowledge-Distillation-Zoo, whose example
# script uses these for logits, AT (p = 2) and FSP. ST: Hinton's T = 4 with 0.9 on the soft term.
LOGIT_BETA=0.1
ST_T=4
ST_ALPHA=0.9
AT_BETA=1000
AT_MODE=code
FSP_BETA=1.0
FSP_MODE=joint  # the seed: "I had trained FSP with original paper settings (2 stage train), but the result was not good"

data_args() { echo "--dataset $1 --data-dir $DATA_DIR --download"; }

# baselines, which are also the teachers
for seed in $SEEDS; do
  for dataset in "${DATASETS[@]}"; do
    for model in "${MODELS[@]}"; do
      launch train_teacher.py $(data_args "$dataset") --model "$model" "${RECIPE[@]}" \
        --seed "$seed" --exp-name cifar_baseline --out-dir "$OUT_DIR"
    done
  done
done

# students
for seed in $SEEDS; do
  for dataset in "${DATASETS[@]}"; do
    for pair in "${PAIRS[@]}"; do
      teacher_model=${pair%%:*} student=${pair##*:}
      common=($(data_args "$dataset") --model "$student" "${RECIPE[@]}" --seed "$seed" --out-dir "$OUT_DIR"
              --teacher "$(teacher_ckpt cifar_baseline "$dataset" "$teacher_model" "$TEACHER_SEED")")
      launch kd_logit.py "${common[@]}" --exp-name cifar_logit --beta "$LOGIT_BETA"
      launch kd_st.py "${common[@]}" --exp-name cifar_st --temperature "$ST_T" --alpha "$ST_ALPHA"
      launch kd_at.py "${common[@]}" --exp-name cifar_at --beta "$AT_BETA" --at-mode "$AT_MODE"
      launch kd_at.py "${common[@]}" --exp-name cifar_at_st --beta "$AT_BETA" --at-mode "$AT_MODE" \
        --st-alpha "$ST_ALPHA" --temperature "$ST_T"
      launch kd_fsp.py "${common[@]}" --exp-name cifar_fsp --fsp-mode "$FSP_MODE" --beta "$FSP_BETA"
    done
  done
done
finish
