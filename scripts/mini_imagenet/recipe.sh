# Seed 003's mini-ImageNet settings (wangziren1/knowledge_distill_on_mini-imagenet), shared by
# baselines.sh and kd.sh (sourced, never run). DATA_DIR is laid out as the seed's main.py reads it:
# images/, new_train.csv and new_val.csv (filename,label; 100 classes, 48,000 / 12,000 images) and
# classes_name.json ({wnid: [index, name]}), made by the restructure_csv.py its README points to.
: "${DATA_DIR:=data/mini-imagenet}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/mini_imagenet}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

# random-resized crop 224 + flip; val: resize 256, centre crop 224
DATA=(--dataset mini-imagenet --data-dir "$DATA_DIR" --workers 8 --image-size 224 --val-resize 256 --augment standard)
# The README's commands: --epochs 100 --batch 64, from scratch; main.py's defaults for the rest: SGD
# lr 0.1 (unscaled), momentum 0.9, wd 1e-4; AMP (autocast + GradScaler, fp16) in training
RECIPE=(--epochs 100 --batch-size 64 --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4 --amp fp16)
# "steplr": README only (main.py imports StepLR and never uses it); pytorch/examples' x0.1 every 30 epochs
STEP=(--lr-schedule step --lr-step 30 --gamma 0.1 --warmup-epochs 0)
COSINE=(--lr-schedule cosine --warmup-epochs 0)
COSINE_WU1=(--lr-schedule cosine --warmup-epochs 1)   # the seed's chosen setting for everything after the tricks table
COSINE_WU3=(--lr-schedule cosine --warmup-epochs 3)

kd_weights() {  # ALPHA -> the flags of kd.py's alpha * T^2 * soft + (1 - alpha) * CE
  echo "--kd-weight $1 --ce-weight $(awk -v alpha="$1" 'BEGIN { printf "%.10g", 1 - alpha }')"
}
