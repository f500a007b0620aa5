# Seed 000's CUB-200-2011 settings, shared by teachers.sh and students.sh (sourced, never run).
# DATA_DIR holds CUB_200_2011/ (images/, images.txt, image_class_labels.txt, train_test_split.txt).
: "${DATA_DIR:=data/cub200}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/cub}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

# the loader adds the seed's fine-grained augmentation (rotation, grayscale, colour jitter) for cub200
DATA=(--dataset cub200 --data-dir "$DATA_DIR" --loader dali --amp bf16)
# The seed: transfer from ImageNet-1K (every network starts from torchvision's weights, --pretrained),
# batch 256, Adam (0.9, 0.999), lr 0.1 decayed x0.1 every 30 epochs, as stated for ImageNet.
# Weight decay and warm-up are not stated: 1e-4 and none.
OPTIMIZER=adam
LR=0.1
WEIGHT_DECAY=1e-4
RECIPE=(--pretrained --batch-size 256 --optimizer "$OPTIMIZER" --lr "$LR" --weight-decay "$WEIGHT_DECAY"
        --lr-schedule step --lr-step 30 --gamma 0.1 --warmup-epochs 0)
TEACHER_EPOCHS=90
KD_EPOCHS=200
TEACHER_MODEL=resnet50
TEACHER_LS=(0.0 0.1)                         # the tables' alpha columns: the label smoothing of the teacher
STUDENTS=(resnet18 resnet50 mobilenet_v2)    # MobileNetV2: the "compact student" table
TEMPERATURES=(1 2 3 64)
KD_ALPHA=1.0                                 # pure KD
