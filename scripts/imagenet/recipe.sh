# Seed 000's ImageNet-1K settings, shared by teachers.sh and students.sh (sourced, never run).
: "${DATA_DIR:=data/imagenet}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/imagenet}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

DATA=(--dataset imagenet --data-dir "$DATA_DIR" --loader dali --amp bf16)
# The seed: batch 256, Adam (beta1 0.9, beta2 0.999), lr 0.1 decayed x0.1 every 30 epochs. Adam at
# lr 0.1 is what the seed states (the LS-vs-KD papers it follows used SGD); change OPTIMIZER/LR here.
# Weight decay and warm-up are not stated: 1e-4 (the torchvision/pytorch-examples recipe) and none.
OPTIMIZER=adam
LR=0.1
WEIGHT_DECAY=1e-4
RECIPE=(--batch-size 256 --optimizer "$OPTIMIZER" --lr "$LR" --weight-decay "$WEIGHT_DECAY"
        --lr-schedule step --lr-step 30 --gamma 0.1 --warmup-epochs 0)
TEACHER_EPOCHS=90               # "epochs = 90 for LS experiments"
KD_EPOCHS=200                   # "epochs = 200 for KD experiments"
TEACHER_MODEL=resnet50
TEACHER_LS=(0.0 0.1)            # the tables' alpha columns: the label smoothing of the teacher
STUDENTS=(resnet18 resnet50 efficientnet_b0)  # EfficientNet-B0: the "compact student" task
TEMPERATURES=(1 2 3 64)
KD_ALPHA=1.0                    # pure KD: the student learns from the teacher's soft targets alone
