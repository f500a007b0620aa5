#!/usr/bin/env bash
# Seed 001 (hankyul2/KnowledgeDistillation): basic KD methods on CIFAR-10 and CIFAR-100, ResNet-20 ->
# ResNet-20 and ResNet-110 -> ResNet-110, mean of 3 runs. Rows: 2 data sets x 2 pairs x 6 methods
# (baseline, logits, ST, AT, AT+ST, FSP) x SEEDS. The baseline runs are the teachers: the teacher of
# every student is the baseline run of its architecture with seed TEACHER_SEED. Every value below is
# the one the seed's code ran with (docs/reproducing.md cites the lines), not its README's.
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
# the seed's resnet_32 networks: a 7x7 stride-1 padding-1 stem, so the stages see 28/14/7 maps
MODELS=(resnet20_7x7 resnet110_7x7)                 # baselines, which are also the teachers
PAIRS=(resnet20_7x7:resnet20_7x7 resnet110_7x7:resnet110_7x7)  # teacher:student
# SGD lr 0.1, momentum 0.9, wd 1e-4 on every parameter, x0.1 at epochs 100 and 150, 200 epochs,
# batch 128, no warm-up, FP32; train augmentation: reflect-pad 4, random 32x32 crop, flip
RECIPE=(--epochs 200 --batch-size 128 --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4
        --lr-schedule multistep --milestones 100 150 --gamma 0.1 --warmup-epochs 0 --augment reflect --amp none)
# the loss weights of the seed's code (src/st.py, logits.py, at.py, fsp.py, train_*.py)
ST=(--ce-weight 1 --kd-weight 1 --temperature 4)              # CE + 1 * T^2 * KL, T = 4
LOGIT=(--target features --ce-weight 1 --kd-weight 1)          # "Logits" regresses the pooled 64-d features
AT=(--ce-weight 1 --at-weight 1000 --at-mode code)             # CE + 1000 * sum of 3 stage losses
AT_ST=("${AT[@]}" --kd-weight 0.9 --temperature 4)             # AT + 0.9 * T^2 * KL
FSP=(--fsp-mode joint --ce-weight 1 --fsp-weight 0.1111111111) # joint; per pair / 3, mean of 3 pairs = 1/9 * sum

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
              --teacher "$(run_ckpt cifar_baseline "$dataset" "$teacher_model" "$TEACHER_SEED")")
      launch kd_logit.py "${common[@]}" --exp-name cifar_logit "${LOGIT[@]}"
      launch kd_st.py "${common[@]}" --exp-name cifar_st "${ST[@]}"
      launch kd_at.py "${common[@]}" --exp-name cifar_at "${AT[@]}"
      launch kd_at.py "${common[@]}" --exp-name cifar_at_st "${AT_ST[@]}"
      launch kd_fsp.py "${common[@]}" --exp-name cifar_fsp "${FSP[@]}"
    done
  done
done
finish
