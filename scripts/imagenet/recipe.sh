# Seed 000's ImageNet-1K settings (sutd-visual-computing-group/LS-KD-compatibility), shared by
# teachers.sh and students.sh (sourced, never run). The values are those of the seed's code, which
# differ from its README (docs/reproducing.md cites the lines): SGD, not Adam; a global batch of
# 2048 (8 processes x 256) with lr 0.1 unscaled; the students step every 80 epochs after a 5-epoch
# warm-up. Run with 8 processes (NPROC=8, or 2 nodes x 4): the batch is global, so fewer GPUs
# means more images per GPU.
#   TORCHVISION_TEACHER=1  the label-smoothing-0 teacher is torchvision's ResNet-50 V1 weights
#                          (--teacher-model resnet50 --teacher-pretrained), not trained here: the seed's
#                          alpha = 0 teacher scores 76.132 / 92.862, torchvision V1's documented numbers
: "${DATA_DIR:=data/imagenet}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/imagenet}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"
TORCHVISION_TEACHER="${TORCHVISION_TEACHER:-0}"

# random-resized crop 224 (area 0.08-1, aspect 3/4-4/3) + flip; val: resize 256, centre crop 224
DATA=(--dataset imagenet --data-dir "$DATA_DIR" --loader dali --image-size 224 --val-resize 256 --augment standard)
BATCH=2048  # global: the seed's 8 processes x 256 (train_*.sh: NUM_GPUS=8, 256 per GPU)
# teachers (train_teacher.py of the seed): lr 0.1 x0.1 every 30 epochs, 90 epochs, no warm-up, FP32
TEACHER_RECIPE=(--epochs 90 --batch-size "$BATCH" --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4
                --lr-schedule step --lr-step 30 --gamma 0.1 --warmup-epochs 0 --amp none)
# students (train_student_dali.py): lr 0.1 (its lr scaling is commented out), per-step linear warm-up
# over 5 epochs, x0.1 every 80 epochs, 200 epochs; apex O2 fp16 there, autocast fp16 here
STUDENT_RECIPE=(--epochs 200 --batch-size "$BATCH" --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4
                --lr-schedule step --lr-step 80 --gamma 0.1 --warmup-epochs 5 --amp fp16)
TEACHER_MODEL=resnet50
TEACHER_LS=(0.0 0.1)             # the tables' alpha columns: the label smoothing of the teacher
STUDENTS=(resnet18 resnet50)     # the seed's train_student.sh; no script of it trains EfficientNet-B0
TEMPERATURES=(1 2 3 64)
KD=(--ce-weight 0 --kd-weight 1)  # pure KD: T^2 * KL(batchmean) alone, no CE, no label smoothing

torchvision_teacher() {  # SMOOTHING: true where this teacher is torchvision's weights, not a run of teachers.sh
  [[ $TORCHVISION_TEACHER == 1 && $1 == 0.0 ]]
}
