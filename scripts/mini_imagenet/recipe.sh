# Seed 003's mini-ImageNet settings, shared by baselines.sh and kd.sh (sourced, never run).
# DATA_DIR: class folders train/ and val/, or images/ with train.csv and val.csv.
: "${DATA_DIR:=data/mini-imagenet}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/mini_imagenet}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

DATA=(--dataset mini-imagenet --data-dir "$DATA_DIR" --workers 8)
# The seed's commands: --epochs 100 --batch 64 --workers 8, from scratch. Its main.py follows
# pytorch/examples/imagenet and passes no --lr, so that script's defaults apply: SGD lr 0.1,
# momentum 0.9, weight decay 1e-4; its "steplr" is pytorch/examples' x0.1 every 30 epochs.
RECIPE=(--epochs 100 --batch-size 64 --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4)
STEP=(--lr-schedule step --lr-step 30 --gamma 0.1 --warmup-epochs 0)
COSINE=(--lr-schedule cosine --warmup-epochs 0)
COSINE_WU1=(--lr-schedule cosine --warmup-epochs 1)   # the seed's chosen setting for everything after the tricks table
COSINE_WU3=(--lr-schedule cosine --warmup-epochs 3)
