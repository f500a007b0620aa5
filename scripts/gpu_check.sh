#!/usr/bin/env bash
# On whatever GPU this machine has, measure what docs/performance.md reports for the CPU, in under 10 minutes,
# and write the tables to one markdown file that the doc can take as is:
#   1. every script against its bare compute at 32x32 (fake data, resnet56 -> resnet20, bf16), cached rows too;
#   2. the same at 224x224 (resnet50 -> resnet18, 1000 classes, bf16, channels-last);
#   3. fp16 against bf16, and torch.compile, on kd_st.py at 224x224;
#   4. image-file loading: NVIDIA DALI "mixed" (GPU) decoding, DALI on the CPU and the DataLoader, and kd_st.py
#      reading JPEGs through DALI against the same run on synthetic (fake) input.
#
#   bash scripts/gpu_check.sh                      # writes gpu_check.md (OUT=path to change)
#   CPU_SMOKE=1 bash scripts/gpu_check.sh          # no GPU: every step but compile on the CPU at toy sizes (a test)
#
# Without a GPU (and without CPU_SMOKE=1) it writes only that no GPU was found, and exits 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-gpu_check.md}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
PY="${PYTHON:-python}"
started=$(date +%s)

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  if [[ "${CPU_SMOKE:-0}" != 1 ]]; then
    echo "# GPU check: no GPU" > "$OUT"
    echo "$(date +%F) on $(hostname): torch.cuda.is_available() is False; nothing was measured." >> "$OUT"
    echo "no GPU on this machine (torch.cuda.is_available() is False): nothing measured; wrote $OUT"
    exit 0
  fi
  device=cpu AMP=none HALF=none  # autocast on this CPU would take the toy run from seconds to minutes
  SMALL=(--steps 2 --warmup 1 --batch-size 8)  # toy sizes: the CPU proves the pipeline, not the speed
  BIG=(--image-size 32 --teacher resnet18 --model resnet18 --num-classes 10 --batch-size 8)
  JPEGS=(--jpegs 16 --jpeg-size 64 --loading-batch-size 8 --workers 2)
  ROWS=(--scripts train_teacher.py kd_st.py "kd_st.py --teacher-cache")
else
  device=cuda AMP=bf16 HALF=fp16
  SMALL=(--steps 50 --warmup 10 --batch-size 256)
  BIG=(--image-size 224 --teacher resnet50 --model resnet18 --num-classes 1000 --batch-size 256 --steps 30)
  JPEGS=(--jpegs 4096 --jpeg-size 224 --loading-batch-size 256 --workers 8)
  ROWS=()
fi

section() {  # section TITLE benchmark-args...: the tables of one benchmark.py run, under a heading
  local title=$1; shift
  echo "running: $title" >&2
  {
    echo
    echo "## $title"
    echo
    echo '```'
    echo "python scripts/benchmark.py $(printf '%q ' "$@")"
    echo '```'
    echo
    "$PY" scripts/benchmark.py --device "$device" --work-dir "$WORK" "$@" | grep -E '^(\||[0-9]{4}-|$)' | cat -s
  } >> "$OUT"
}

{
  echo "# GPU check"
  echo
  echo "$(date +%F), $("$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() \
    if torch.cuda.is_available() else 'no GPU: CPU smoke run at toy sizes, not a measurement')")"
} > "$OUT"
section "Every script at 32x32: fake data, resnet56 -> resnet20, $AMP" \
  --dataset fake --image-size 32 --amp "$AMP" "${SMALL[@]}" "${ROWS[@]}"
section "Every script at 224x224: resnet50 -> resnet18, $AMP, channels-last" \
  --dataset fake "${BIG[@]}" --amp "$AMP" --channels-last "${ROWS[@]}"
section "$HALF at 224x224" --dataset fake "${BIG[@]}" --amp "$HALF" --channels-last --scripts kd_st.py
if [[ $device == cuda ]]; then  # compiling on the CPU takes minutes: the smoke run leaves it out
  section "torch.compile at 224x224 ($AMP)" --dataset fake "${BIG[@]}" --amp "$AMP" --channels-last --compile \
    --scripts kd_st.py
fi
section "Image-file loading: DALI mixed and CPU decoding, DataLoader; kd_st.py on JPEGs against fake input" \
  --loading --scripts kd_st.py --files-row kd_st.py --dataset fake "${BIG[@]}" --amp "$AMP" "${JPEGS[@]}"
echo >> "$OUT"
echo "Whole check: $(( $(date +%s) - started )) s." >> "$OUT"
rm -rf "$WORK"
echo "wrote $OUT ($(( $(date +%s) - started )) s)"
