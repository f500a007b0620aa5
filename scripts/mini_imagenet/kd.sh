#!/usr/bin/env bash
# Seed 003, mini-ImageNet, KD (loss = alpha * T^2 * soft + (1 - alpha) * hard): shufflenet_v2_x2_0 ->
# shufflenet_v2_x1_0 over the seed's T x alpha grid, and resnet50 -> resnet18 at T = 3, alpha = 0.6.
# The teachers are baselines.sh's runs with seed TEACHER_SEED (same OUT_DIR). Rows: (7 + 1) x SEEDS.
#
#   DATA_DIR=/data/mini-imagenet NPROC=1 bash scripts/mini_imagenet/kd.sh
#   DRY_RUN=1 bash scripts/mini_imagenet/kd.sh      # print the 8 commands
#   SMOKE=1 bash scripts/mini_imagenet/kd.sh        # 2 steps of each command shape on CPU, fake data
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

GRID=(1:0.9 3:0.9 5:0.9 10:0.9 3:0.7 3:0.6 3:0.5)  # T:alpha, the cells the seed filled in
RESNET_T=3
RESNET_ALPHA=0.6

for seed in $SEEDS; do
  common=("${DATA[@]}" "${RECIPE[@]}" "${COSINE_WU1[@]}" --seed "$seed" --out-dir "$OUT_DIR")
  teacher=$(run_ckpt mini_baseline mini-imagenet shufflenet_v2_x2_0 "$TEACHER_SEED")
  for cell in "${GRID[@]}"; do
    temperature=${cell%%:*} alpha=${cell##*:}
    launch kd_st.py "${common[@]}" --model shufflenet_v2_x1_0 --teacher "$teacher" \
      --temperature "$temperature" $(kd_weights "$alpha") --exp-name "mini_kd_T${temperature}_a$alpha"
  done
  launch kd_st.py "${common[@]}" --model resnet18 --teacher "$(run_ckpt mini_baseline mini-imagenet resnet50 "$TEACHER_SEED")" \
    --temperature "$RESNET_T" $(kd_weights "$RESNET_ALPHA") --exp-name "mini_kd_T${RESNET_T}_a$RESNET_ALPHA"
done
finish
