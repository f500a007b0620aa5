#!/usr/bin/env bash
# Seed 004: the ResNet-34 teachers (fastai's cnn_learner head on torchvision's ImageNet-pretrained
# body) fine-tuned on Imagenette, Imagewoof and CIFAR-10, once each with seed TEACHER_SEED (recipe.sh).
# Then run students.sh (and archived.sh) with the same OUT_DIR.
#
#   DATA_DIR=/data NPROC=1 bash scripts/stagewise/teachers.sh
#   DRY_RUN=1 bash scripts/stagewise/teachers.sh      # print the 3 commands
#   SMOKE=1 bash scripts/stagewise/teachers.sh        # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for dataset in "${DATASETS[@]}"; do
  launch train_teacher.py $(data_args "$dataset") --model "$TEACHER_MODEL" "${TEACHER_RECIPE[@]}" \
    --lr "$(teacher_lr "$dataset")" --seed "$TEACHER_SEED" --exp-name sw_teacher --out-dir "$OUT_DIR"
done
finish
