# Shared helpers of the launchers in scripts/*/ (sourced, never run). A launcher sets its table's
# hyper-parameters and calls `launch SCRIPT ARGS...` once per row of the table.
#
# Environment (every launcher):
#   DATA_DIR, NPROC, SEEDS, OUT_DIR   set by each launcher with its own defaults
#   TORCHRUN   how to start a run (default: "torchrun --standalone", one node); on each of two nodes:
#              TORCHRUN="torchrun --nnodes=2 --node_rank=$NODE_RANK --rdzv_backend=c10d --rdzv_endpoint=node0:29500"
#              (OUT_DIR on storage all nodes share; NPROC is per node)
#   DRY_RUN=1  print the command of every row of the table, run nothing
#   SMOKE=1    run each distinct command shape (script + method flags) once, for 2 steps on CPU, on
#              digits (CIFAR-sized rows) or fake 32x32 images (ImageNet-sized rows), in a fresh
#              temporary OUT_DIR; a checkpoint of another row that is missing (a teacher, an
#              --init-from or --resume run) and a torchvision-pretrained teacher become 2-step runs

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"  # the scripts import common/ from the repository root; a relative OUT_DIR is relative to it
DRY_RUN="${DRY_RUN:-0}"
SMOKE="${SMOKE:-0}"
read -r -a TORCHRUN_CMD <<< "${TORCHRUN:-torchrun --standalone}"

if [[ $SMOKE == 1 ]]; then
  NPROC=1
  OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kd_smoke.XXXXXX")}"
  SMOKE_BATCH=32      # global batch of a smoke step
  SMOKE_FRACTION=0.05 # of the training set: about 2 steps per epoch, so multi-phase runs reach every phase
  SMOKE_IMAGE_SIZE=32
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # steps this small run twice as fast on one thread
fi

default_nproc() {  # one process per visible GPU, at least one
  local n
  n=$(nvidia-smi -L 2>/dev/null | wc -l) || n=0
  echo $(( n > 0 ? n : 1 ))
}

# ---------------------------------------------------------------- checkpoints of other rows
# A row that needs another run's checkpoint (a teacher, a network to start from, a run to evaluate)
# finds it by name: <dir>/<exp>__<dataset>__<model>__seed<N>__<time>/best.pt, the newest such run.
# run_ckpt gives the pattern; launch resolves it when the row runs (after --teacher, --init-from and
# --resume), and DRY_RUN prints it unresolved.
run_ckpt() {  # EXP DATASET MODEL SEED [DIR, default OUT_DIR]
  local dataset=$2
  [[ $SMOKE == 1 ]] && dataset=$(smoke_dataset "$dataset")
  echo "${5:-$OUT_DIR}/${1}__${dataset}__${3}__seed${4}__*/best.pt"
}

resolve_ckpt() {  # PATTERN FLAG -> path of the newest match
  local matches
  matches=$(compgen -G "$1" || true)
  if [[ -z $matches && $SMOKE == 1 ]]; then
    smoke_checkpoint "$1" >&2  # stdout is the path
    matches=$(compgen -G "$1" || true)
  fi
  if [[ -z $matches ]]; then
    echo "error: no checkpoint for $2 matches $1; run the row that trains it first (same OUT_DIR)" >&2
    return 1
  fi
  ls -t $matches | head -n 1
}

# ---------------------------------------------------------------- SMOKE mode
smoke_dataset() {  # CIFAR-sized data -> digits, image files -> fake images
  case $1 in
    digits|cifar10|cifar100) echo digits ;;
    *) echo fake ;;
  esac
}

smoke_data_args() {  # extra flags of a smoke data set
  [[ $1 == fake ]] && echo "--image-size $SMOKE_IMAGE_SIZE --num-classes 10"
  return 0
}

smoke_common_args() {
  echo "--batch-size $SMOKE_BATCH --train-fraction $SMOKE_FRACTION --device cpu --log-interval 1"
}

smoke_checkpoint() {  # PATTERN: train, for 2 steps, the run the pattern names (in the pattern's directory)
  local exp dataset model seed
  IFS=' ' read -r exp dataset model seed <<< "$(basename "$(dirname "$1")" | awk -F'__' '{print $1, $2, $3, $4}')"
  run_cmd train_teacher.py --dataset "$dataset" $(smoke_data_args "$dataset") --model "$model" \
    --seed "${seed#seed}" --exp-name "$exp" --out-dir "$(dirname "$(dirname "$1")")" --epochs 1 --max-steps 2 \
    $(smoke_common_args)
}

smoke_rewrite() {  # SCRIPT ARGS... -> SMOKE_ARGS: the row on small data, 1 epoch per phase, CPU
  local script=$1 dataset=digits prev="" arg multi_phase=0 has_epochs=0
  shift
  for arg in "$@"; do
    [[ $prev == --dataset ]] && dataset=$arg
    [[ $prev == --fsp-mode && $arg == two-stage ]] && multi_phase=1
    prev=$arg
  done
  [[ $script == kd_stagewise.py && " $* " != *" --simultaneous "* ]] && multi_phase=1
  local small
  small=$(smoke_dataset "$dataset")
  SMOKE_ARGS=()
  while (($#)); do
    case $1 in
      --dataset) SMOKE_ARGS+=(--dataset "$small" $(smoke_data_args "$small")); shift 2 ;;
      --data-dir|--loader|--workers|--batch-size|--train-fraction|--image-size|--num-classes|--val-resize) shift 2 ;;
      --pretrained|--download|--teacher-pretrained) shift ;;  # no downloads offline
      --teacher-model) SMOKE_ARGS+=(--teacher "$(run_ckpt smoke_pretrained "$dataset" "$2" 0)"); shift 2 ;;
      --epochs) SMOKE_ARGS+=(--epochs 1); has_epochs=1; shift 2 ;;
      --fsp-epochs|--stage-epochs|--classifier-epochs) SMOKE_ARGS+=("$1" 1); shift 2 ;;
      --nce-k) SMOKE_ARGS+=(--nce-k 32); shift 2 ;;  # CRD's negatives: a smoke run has about 70 images
      # a 2-step smoke teacher's logits (about 1e9) overflow fp16, which the non-finite-loss check stops: bf16 on CPU
      --amp) SMOKE_ARGS+=(--amp "$([[ $2 == fp16 ]] && echo bf16 || echo "$2")"); shift 2 ;;
      # recipes for data a smoke run replaces (cub: image files; reflect flips, and a mirrored digit is
      # another digit) fall back to standard; tests/test_data.py covers them on their own data
      --augment) SMOKE_ARGS+=(--augment "$([[ $2 == cub || ($small == digits && $2 == reflect) ]] && echo standard || echo "$2")")
        shift 2 ;;
      *) SMOKE_ARGS+=("$1"); shift ;;
    esac
  done
  SMOKE_ARGS+=($(smoke_common_args))
  # stage-wise training sets its own length (stages x 1 epoch + 1); everything else runs 1 epoch
  [[ $has_epochs == 0 && ! ($script == kd_stagewise.py && $multi_phase == 1) ]] && SMOKE_ARGS+=(--epochs 1)
  # a 2-step cap would end a multi-phase run inside its first phase
  [[ $multi_phase == 0 ]] && SMOKE_ARGS+=(--max-steps 2)
  return 0
}

# Flags every script shares (train_teacher.py's): the code behind them is common/, which every
# smoke run exercises, so rows that differ only in these flags (or in values) share a shape. The
# values of MODE_FLAGS choose a code path, so each value is a shape of its own. --evaluate is not
# listed: an evaluation row is a shape of its own. Each row's flags are checked against the scripts'
# parsers by tests/test_launchers.py.
COMMON_FLAGS=" --dataset --data-dir --download --train-fraction --image-size --val-resize --num-classes --loader
  --workers --augment --eval-on --model --pretrained --init-from --zero-init-residual --no-zero-init-residual
  --epochs --batch-size --optimizer --lr --momentum --nesterov --weight-decay --label-smoothing --lr-schedule
  --milestones --lr-step --gamma --warmup-epochs --amp --channels-last --compile --device --seed --exp-name
  --out-dir --max-steps --log-interval --resume"
COMMON_FLAGS=" $(echo $COMMON_FLAGS) "  # one space between flags
MODE_FLAGS=" --augment --eval-on --fsp-mode --at-mode --target --frozen-bn --phase-start "

shape_of() {  # SCRIPT ARGS...: the script, its method flags and the values of the mode flags
  local key=$1 prev="" arg
  shift
  for arg in "$@"; do
    if [[ $MODE_FLAGS == *" $prev "* ]]; then key+=$'\n'"$prev=$arg"
    elif [[ $arg == --* && $COMMON_FLAGS != *" $arg "* && $MODE_FLAGS != *" $arg "* ]]; then key+=$'\n'"$arg"
    fi
    prev=$arg
  done
  sort <<< "$key" | tr '\n' ' '
}

# ---------------------------------------------------------------- running
run_cmd() {  # SCRIPT ARGS...: print the command, then run it under torchrun
  local cmd=("${TORCHRUN_CMD[@]}" "--nproc_per_node=$NPROC" "$@")
  echo "+ ${cmd[*]}"
  "${cmd[@]}"
}

launch() {  # SCRIPT ARGS...: one row of a table (a run_ckpt pattern may follow --teacher, --init-from, --resume)
  local script=$1
  shift
  if [[ $DRY_RUN == 1 ]]; then
    echo "${TORCHRUN_CMD[*]} --nproc_per_node=$NPROC $script $*"
    return 0
  fi
  local args=("$@")
  if [[ $SMOKE == 1 ]]; then
    smoke_rewrite "$script" "$@"
    args=("${SMOKE_ARGS[@]}")
    local shape
    shape=$(shape_of "$script" "${args[@]}")
    mkdir -p "$OUT_DIR" && touch "$OUT_DIR/.smoke_shapes"
    grep -qxF -- "$shape" "$OUT_DIR/.smoke_shapes" && return 0
    echo "$shape" >> "$OUT_DIR/.smoke_shapes"
  fi
  local i
  for i in "${!args[@]}"; do  # checkpoints of other rows, found when this row starts
    if [[ ${args[i]} == --teacher || ${args[i]} == --init-from || (${args[i]} == --resume && ${args[i+1]} != auto) ]]; then
      args[i+1]=$(resolve_ckpt "${args[i+1]}" "${args[i]}")
    fi
  done
  run_cmd "$script" "${args[@]}"
}

finish() {  # last words of a launcher
  if [[ $SMOKE == 1 ]]; then
    echo "SMOKE done: $(grep -c '' "$OUT_DIR/.smoke_shapes") command shapes ran, runs in $OUT_DIR"
  elif [[ $DRY_RUN != 1 ]]; then
    echo "done; summarise with: python scripts/report.py $OUT_DIR --reference"
  fi
}
