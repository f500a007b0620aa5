# Seed 000's CUB-200-2011 settings (sutd-visual-computing-group/LS-KD-compatibility), shared by
# teachers.sh and students.sh (sourced, never run). The values are those of the seed's code, which
# differ from its README (docs/reproducing.md cites the lines): SGD at lr 0.01, not Adam at 0.1; the
# students use weight decay 1e-3 and step every 80 epochs. DATA_DIR holds CUB_200_2011/ (images/,
# images.txt, image_class_labels.txt, train_test_split.txt).
#   IMAGENET_OUT_DIR       where scripts/imagenet/teachers.sh put its runs: each CUB teacher starts from
#                          the seed's own ImageNet ResNet-50 of the same label smoothing (a new 200-class fc)
#   TORCHVISION_TEACHER=1  the label-smoothing-0 CUB teacher starts from torchvision's ImageNet weights
#                          instead (as in scripts/imagenet/recipe.sh)
: "${DATA_DIR:=data/cub200}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/cub}"
: "${IMAGENET_OUT_DIR:=runs/imagenet}" "${IMAGENET_TEACHER_SEED:=0}"
[[ $SMOKE == 1 ]] && IMAGENET_OUT_DIR=$OUT_DIR  # smoke runs stay in their temporary directory
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"
TORCHVISION_TEACHER="${TORCHVISION_TEACHER:-0}"

# the seed's torchvision transforms: random-resized crop 224 (scale 0.2-1, ratio 0.8-1.25), flip,
# rotation 45, grayscale 0.2, colour jitter 0.2; val: resize 256, centre crop 224; 1 GPU, torch.cuda.amp
DATA=(--dataset cub200 --data-dir "$DATA_DIR" --loader torch --image-size 224 --val-resize 256 --augment cub --amp fp16)
# teachers: SGD lr 0.01, wd 1e-4, x0.1 every 30 epochs, 90 epochs (train_teacher.sh), batch 256
TEACHER_RECIPE=(--epochs 90 --batch-size 256 --optimizer sgd --lr 0.01 --momentum 0.9 --weight-decay 1e-4
                --lr-schedule step --lr-step 30 --gamma 0.1 --warmup-epochs 0)
# students: torchvision ImageNet weights, SGD lr 0.01, wd 1e-3, x0.1 every 80 epochs, 200 epochs, batch 256
STUDENT_RECIPE=(--pretrained --epochs 200 --batch-size 256 --optimizer sgd --lr 0.01 --momentum 0.9 --weight-decay 1e-3
                --lr-schedule step --lr-step 80 --gamma 0.1 --warmup-epochs 0)
TEACHER_MODEL=resnet50
# the tables' alpha columns: the label smoothing of the teacher (the seed's bash has ALPHAS=(0.1 0.1),
# which trains 0.1 twice and never 0.0; the tables report both)
TEACHER_LS=(0.0 0.1)
STUDENTS=(resnet18 resnet50 mobilenet_v2)  # the README's tables (the bash lists resnet18 mobilenet_v2 convnext_tiny)
TEMPERATURES=(1 2 3 64)
KD=(--ce-weight 0 --kd-weight 1)           # pure KD: T^2 * KL(batchmean) alone

teacher_init() {  # SMOOTHING -> INIT: the flags a CUB teacher starts from
  if [[ $TORCHVISION_TEACHER == 1 && $1 == 0.0 ]]; then
    INIT=(--pretrained)
  else
    INIT=(--init-from "$(run_ckpt "imagenet_teacher_ls$1" imagenet "$TEACHER_MODEL" "$IMAGENET_TEACHER_SEED" "$IMAGENET_OUT_DIR")")
  fi
}
