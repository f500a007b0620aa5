#!/usr/bin/env bash
# Seed 004: ResNet-34 teacher -> ResNet-10/14/18/20/26 students on Imagenette, Imagewoof and CIFAR-10.
# On all the training data: no teacher, simultaneous and stage-wise; on a quarter of it: no teacher
# and stage-wise (the seed's quarter-data tables have no simultaneous column), evaluated on the full
# validation set as in the seed.
# Rows: 3 data sets x 5 students x (3 + 2) x SEEDS. Needs teachers.sh's runs in the same OUT_DIR.
#
#   DATA_DIR=/data NPROC=1 bash scripts/stagewise/students.sh
#   DRY_RUN=1 bash scripts/stagewise/students.sh      # print the 75 commands
#   SMOKE=1 bash scripts/stagewise/students.sh        # 2 steps of each command shape on CPU
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/recipe.sh"

for seed in $SEEDS; do
  for dataset in "${DATASETS[@]}"; do
    teacher=$(run_ckpt sw_teacher "$dataset" "$TEACHER_MODEL" "$TEACHER_SEED")
    for fraction in 1.0 "$QUARTER"; do
      for student in "${STUDENTS[@]}"; do
        common=($(data_args "$dataset") --train-fraction "$fraction" --model "$student" "${RECIPE[@]}"
                --seed "$seed" --out-dir "$OUT_DIR")
        launch train_teacher.py "${common[@]}" --epochs "$EPOCHS" --exp-name sw_baseline
        if [[ $fraction == 1.0 ]]; then
          launch kd_stagewise.py "${common[@]}" --teacher "$teacher" "${SIMULTANEOUS[@]}" --exp-name sw_simultaneous
        fi
        launch kd_stagewise.py "${common[@]}" --teacher "$teacher" "${STAGEWISE[@]}" --exp-name sw_stagewise
      done
    done
  done
done
finish
