#!/usr/bin/env bash
# Seed 003, mini-ImageNet, no teacher: the "tricks" table (shufflenet_v2_x1_0 with step, cosine,
# cosine + 1 warm-up epoch, cosine + 3 warm-up epochs; the step row is README only: the seed's code has
# no step schedule, so it is pytorch/examples' x0.1 every 30 epochs) and the baselines ShuffleNetV2
# x1.5 / x2.0 and ResNet-18 / 34 / 50 (cosine + 1 warm-up epoch). ShuffleNetV2 x2.0 and ResNet-50 are
# kd.sh's teachers.
# Rows: (4 + 5) x SEEDS.
#
#   DATA_DIR=/data/mini-imagenet NPROC=1 bash scripts/mini_imagenet/baselines.sh
#   DRY_RUN=1 bash scripts/mini_imagenet/baselines.sh      # print the 9 commands
#   SMOKE=1 bash scripts/mini_imagenet/baselines.sh        # 2 steps of each command shape on CPU, fake data
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for seed in $SEEDS; do
  common=("${DATA[@]}" "${RECIPE[@]}" --seed "$seed" --exp-name mini_baseline --out-dir "$OUT_DIR")
  launch train_teacher.py "${common[@]}" --model shufflenet_v2_x1_0 "${STEP[@]}"
  launch train_teacher.py "${common[@]}" --model shufflenet_v2_x1_0 "${COSINE[@]}"
  launch train_teacher.py "${common[@]}" --model shufflenet_v2_x1_0 "${COSINE_WU1[@]}"
  launch train_teacher.py "${common[@]}" --model shufflenet_v2_x1_0 "${COSINE_WU3[@]}"
  for model in shufflenet_v2_x1_5 shufflenet_v2_x2_0 resnet18 resnet34 resnet50; do
    launch train_teacher.py "${common[@]}" --model "$model" "${COSINE_WU1[@]}"
  done
done
finish
