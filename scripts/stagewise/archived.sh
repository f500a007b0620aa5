#!/usr/bin/env bash
# Seed 004's "Archived Results" (archive/README.md at commit 496c508): smaller students on Imagenette
# with the ResNet-34 teacher of teachers.sh (same OUT_DIR), Adam 1e-4 constant, batch 64, 100 epochs
# per run or phase, as students.sh. The students are fastai conv_layer stacks (conv -> ReLU -> BN):
# sw_medium (ResNet-34-like, widths 64-512, 5 feature maps), sw_small (stops at 256, 4 maps),
# sw_smallest (no skip connections; its 4 maps meet the teacher's stem, layer2, layer3, layer4) and
# sw_plain5 (archive/models/5fm.py: 5 plain conv + max-pool stages).
# Rows, each x SEEDS (the tables' 5 runs):
#   sw_medium    no teacher; stage-wise; simultaneous on the first 5, 4 and 3 feature maps
#   sw_small     no teacher; stage-wise; simultaneous on the first 4 and 3 feature maps
#   sw_plain5    no teacher ("trained independently"); simultaneous on its 5 feature maps
# and once, with the first seed (the tables' single runs):
#   sw_smallest  stage-wise
#   sw_medium    stage-wise and no teacher on a quarter of the training data, each evaluated twice: on
#                the validation set during training (the tables' accuracy, best epoch), then its
#                best checkpoint on the held-out 3/4 of the training images (the tables' "test acc";
#                an evaluation row: its FINAL line, no run directory)
# Rows: 11 x SEEDS + 5.
#
#   DATA_DIR=/data NPROC=1 bash scripts/stagewise/archived.sh
#   DRY_RUN=1 bash scripts/stagewise/archived.sh      # print the 60 commands
#   SMOKE=1 bash scripts/stagewise/archived.sh        # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
: "${SEEDS:=0 1 2 3 4}"
source "$HERE/recipe.sh"
FIRST_SEED=${SEEDS%% *}

DATASET=imagenette
teacher=(--teacher "$(run_ckpt sw_teacher "$DATASET" "$TEACHER_MODEL" "$TEACHER_SEED")")
common() {  # MODEL SEED [FRACTION] -> COMMON: the flags every row of this student shares
  COMMON=($(data_args "$DATASET") --train-fraction "${3:-1.0}" --model "$1" "${RECIPE[@]}" --seed "$2"
          --out-dir "$OUT_DIR")
}

for seed in $SEEDS; do
  common sw_medium "$seed"
  launch train_teacher.py "${COMMON[@]}" --epochs "$EPOCHS" --exp-name sw_arch_baseline
  launch kd_stagewise.py "${COMMON[@]}" "${teacher[@]}" "${STAGEWISE[@]}" --exp-name sw_arch_stagewise
  for maps in 5 4 3; do
    launch kd_stagewise.py "${COMMON[@]}" "${teacher[@]}" "${SIMULTANEOUS[@]}" --feature-maps "$maps" \
      --exp-name "sw_arch_simultaneous_fm$maps"
  done
  common sw_small "$seed"
  launch train_teacher.py "${COMMON[@]}" --epochs "$EPOCHS" --exp-name sw_arch_baseline
  launch kd_stagewise.py "${COMMON[@]}" "${teacher[@]}" "${STAGEWISE[@]}" --exp-name sw_arch_stagewise
  for maps in 4 3; do
    launch kd_stagewise.py "${COMMON[@]}" "${teacher[@]}" "${SIMULTANEOUS[@]}" --feature-maps "$maps" \
      --exp-name "sw_arch_simultaneous_fm$maps"
  done
  common sw_plain5 "$seed"
  launch train_teacher.py "${COMMON[@]}" --epochs "$EPOCHS" --exp-name sw_arch_baseline
  launch kd_stagewise.py "${COMMON[@]}" "${teacher[@]}" "${SIMULTANEOUS[@]}" --feature-maps 5 \
    --exp-name sw_arch_simultaneous_fm5
done

common sw_smallest "$FIRST_SEED"
launch kd_stagewise.py "${COMMON[@]}" "${teacher[@]}" "${STAGEWISE[@]}" --exp-name sw_arch_stagewise

common sw_medium "$FIRST_SEED" "$QUARTER"
launch kd_stagewise.py "${COMMON[@]}" "${teacher[@]}" "${STAGEWISE[@]}" --exp-name sw_arch_stagewise_quarter
launch train_teacher.py "${COMMON[@]}" --epochs "$EPOCHS" --exp-name sw_arch_baseline_quarter
for exp in sw_arch_stagewise_quarter sw_arch_baseline_quarter; do  # their best checkpoints on the held-out 3/4
  launch train_teacher.py "${COMMON[@]}" --exp-name "${exp}_heldout" \
    --resume "$(run_ckpt "$exp" "$DATASET" sw_medium "$FIRST_SEED")" --evaluate --eval-on heldout
done
finish
