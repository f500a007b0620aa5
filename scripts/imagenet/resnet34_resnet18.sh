#!/usr/bin/env bash
# ImageNet-1K benchmark ResNet-34 -> ResNet-18 (REFERENCE_RESULTS.md; mdistiller / torchdistill recipe)
# with torchvision's pretrained ResNet-34 as the teacher: the student without teacher, with KD (T = 1,
# CE and KD weights 0.5 each), with AT (weight 1000), and with DKD, CRD and ReviewKD (mdistiller's configs).
# Rows: 6 methods x SEEDS.
#
#   DATA_DIR=/data/imagenet NPROC=8 bash scripts/imagenet/resnet34_resnet18.sh
#   DRY_RUN=1 bash scripts/imagenet/resnet34_resnet18.sh   # print the 6 commands
#   SMOKE=1 bash scripts/imagenet/resnet34_resnet18.sh     # 2 steps on CPU; a 2-step teacher replaces the download
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
: "${DATA_DIR:=data/imagenet}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/imagenet}"

DATA=(--dataset imagenet --data-dir "$DATA_DIR" --loader dali --image-size 224 --val-resize 256 --augment standard
      --amp bf16)
# 100 epochs, SGD lr 0.1 (batch 256), momentum 0.9, wd 1e-4, x0.1 at epochs 30, 60 and 90, no warm-up
RECIPE=(--model resnet18 --epochs 100 --batch-size 256 --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4
        --lr-schedule multistep --milestones 30 60 90 --gamma 0.1 --warmup-epochs 0)
TEACHER=(--teacher-model resnet34 --teacher-pretrained)
KD=(--ce-weight 0.5 --kd-weight 0.5 --temperature 1)  # CE and KD weights 0.5 each, T = 1
AT=(--ce-weight 1 --at-weight 1000 --at-mode code)    # CE + 1000 * sum of the attention losses
# DKD as mdistiller's configs/imagenet/r34_r18/dkd.yaml: CE 1, alpha 1, beta 0.5, T 1, warm-up 1 epoch (none);
# its batch 512 at lr 0.2 is the same lr per image as the recipe above
DKD=(--ce-weight 1 --tckd-weight 1 --nckd-weight 0.5 --temperature 1 --dkd-warmup-epochs 1)
# CRD as mdistiller's configs/imagenet/r34_r18/crd.yaml: CE 1, CRD 0.8, 128-d embeddings, 16384 negatives, T 0.07,
# momentum 0.5; memory banks of 2 x 1.28 M x 128 floats (1.3 GB, in the checkpoints too)
CRD=(--ce-weight 1 --crd-weight 0.8 --feat-dim 128 --nce-k 16384 --nce-temperature 0.07 --nce-momentum 0.5)
# ReviewKD as the authors' ImageNet code and mdistiller's configs/imagenet/r34_r18/reviewkd.yaml: CE 1, weight 1, no warm-up
REVIEWKD=(--ce-weight 1 --reviewkd-weight 1 --reviewkd-warmup-epochs 0)

for seed in $SEEDS; do
  common=("${DATA[@]}" "${RECIPE[@]}" --seed "$seed" --out-dir "$OUT_DIR")
  launch train_teacher.py "${common[@]}" --exp-name r34r18_baseline
  launch kd_st.py "${common[@]}" "${TEACHER[@]}" --exp-name r34r18_kd "${KD[@]}"
  launch kd_at.py "${common[@]}" "${TEACHER[@]}" --exp-name r34r18_at "${AT[@]}"
  launch kd_dkd.py "${common[@]}" "${TEACHER[@]}" --exp-name r34r18_dkd "${DKD[@]}"
  launch kd_crd.py "${common[@]}" "${TEACHER[@]}" --exp-name r34r18_crd "${CRD[@]}"
  launch kd_reviewkd.py "${common[@]}" "${TEACHER[@]}" --exp-name r34r18_reviewkd "${REVIEWKD[@]}"
done
finish
