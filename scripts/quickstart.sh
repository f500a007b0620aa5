#!/usr/bin/env bash
# Quick start on the embedded digits data set (CPU is enough): a resnet56 teacher, a resnet20
# no-teacher baseline, and the same resnet20 distilled with every method, on all of the training
# data and on 1/4 of it (where distillation matters most); then a table made by scripts/report.py.
#   bash scripts/quickstart.sh                 # 5-11 minutes on a 2-core CPU
#   OUT_DIR=runs/qs EPOCHS=30 bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}"
EPOCHS="${EPOCHS:-30}"
TEACHER="${TEACHER:-resnet56}"
STUDENT="${STUDENT:-resnet20}"
started=$SECONDS
# zero-init residual blocks for a ResNet teacher: resnet56 reaches 99.2 % on digits with it, 97.5-97.8 % without
zero_init=()
[[ $TEACHER == resnet* ]] && zero_init=(--zero-init-residual)

run() {  # print, then run quietly: the per-epoch lines go to the run's log
  local log="$OUT_DIR/logs/$1.log"
  shift
  mkdir -p "$OUT_DIR/logs"
  echo "+ $*"
  if ! "$@" > "$log" 2>&1; then
    tail -n 20 "$log" >&2
    exit 1
  fi
  tail -n 1 "$log"
}

for fraction in 1.0 0.25; do
  out="$OUT_DIR/fraction$fraction"
  common=(--dataset digits --train-fraction "$fraction" --out-dir "$out")
  echo "== digits, train fraction $fraction =="
  run "teacher_$fraction" "$PYTHON" train_teacher.py --model "$TEACHER" "${zero_init[@]}" --exp-name teacher \
    --epochs "$EPOCHS" "${common[@]}"
  teacher=$(ls -td "$out"/teacher__*/ | head -n 1)best.pt
  student=(--model "$STUDENT" "${common[@]}")
  run "baseline_$fraction" "$PYTHON" train_teacher.py "${student[@]}" --epochs "$EPOCHS" --exp-name baseline
  run "st_$fraction" "$PYTHON" kd_st.py --teacher "$teacher" "${student[@]}" --epochs "$EPOCHS"
  run "dkd_$fraction" "$PYTHON" kd_dkd.py --teacher "$teacher" "${student[@]}" --epochs "$EPOCHS"
  run "logit_$fraction" "$PYTHON" kd_logit.py --teacher "$teacher" "${student[@]}" --epochs "$EPOCHS"
  run "fitnet_$fraction" "$PYTHON" kd_fitnet.py --teacher "$teacher" "${student[@]}" --epochs "$EPOCHS"
  run "crd_$fraction" "$PYTHON" kd_crd.py --teacher "$teacher" "${student[@]}" --epochs "$EPOCHS"
  run "reviewkd_$fraction" "$PYTHON" kd_reviewkd.py --teacher "$teacher" "${student[@]}" --epochs "$EPOCHS"
  # AT's weight for digits' 8x8 maps (its default; CIFAR's 32x32 maps take 1000), written out as a reminder
  run "at_$fraction" "$PYTHON" kd_at.py --teacher "$teacher" --at-weight 50 "${student[@]}" --epochs "$EPOCHS"
  run "at_st_$fraction" "$PYTHON" kd_at.py --teacher "$teacher" --at-weight 50 --kd-weight 0.9 --exp-name kd_at_st \
    "${student[@]}" --epochs "$EPOCHS"
  run "fsp_$fraction" "$PYTHON" kd_fsp.py --teacher "$teacher" "${student[@]}" --epochs "$EPOCHS"
  # stage-wise: 4 feature maps (stem + 3 stages) + classifier in EPOCHS epochs as the others; a quarter
  # of the data gives 5 steps an epoch, so twice as many there
  budget=$EPOCHS
  [[ $fraction == 0.25 ]] && budget=$((2 * EPOCHS))
  stage_epochs=$(( budget / 5 > 0 ? budget / 5 : 1 ))
  classifier_epochs=$(( budget - 4 * stage_epochs > 0 ? budget - 4 * stage_epochs : 1 ))
  phases=(--stage-epochs "$stage_epochs" --classifier-epochs "$classifier_epochs")
  run "stagewise_$fraction" "$PYTHON" kd_stagewise.py --teacher "$teacher" "${phases[@]}" "${student[@]}"
done

echo
"$PYTHON" scripts/report.py "$OUT_DIR" --compact
echo
echo "quick start finished in $((SECONDS - started)) s; runs, report.md, report.csv and plots in $OUT_DIR"
