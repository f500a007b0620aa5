# Seed 004's stage-wise study settings (IvLabs/stagewise-knowledge-distillation), shared by
# teachers.sh, students.sh and archived.sh (sourced, never run). The values are those of the seed's
# code (docs/reproducing.md cites the lines).
#   DATA_DIR      holds imagenette/ and imagewoof/ (train/ and val/ class folders) and CIFAR-10
#   DATA_VERSION  1 (default): Imagenette and Imagewoof version 1, as the seed's code downloads them;
#                 2: imagenette2/ and imagewoof2/ instead (other splits: not comparable with the tables)
#                 and OUT_DIR defaults to runs/stagewise_v2, so that teachers of the two versions never mix
DATA_VERSION="${DATA_VERSION:-1}"
case $DATA_VERSION in
  1) VERSION_SUFFIX="" ;;
  2) VERSION_SUFFIX=2 ;;
  *) echo "error: DATA_VERSION must be 1 or 2, not '$DATA_VERSION'" >&2; exit 2 ;;
esac
: "${DATA_DIR:=data}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/stagewise${VERSION_SUFFIX:+_v2}}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

DATASETS=(imagenette imagewoof cifar10)
# fastai's get_transforms(do_flip=False): shorter side to 224, random crop, warp, rotate, zoom,
# lighting, no flip; val: shorter side to 224, centre crop. CIFAR-10 stays at its 32x32.
data_args() {  # DATASET -> its data flags
  case $1 in
    imagenette|imagewoof) echo "--dataset $1 --data-dir $DATA_DIR/$1$VERSION_SUFFIX --loader torch --image-size 224
                                --val-resize 224 --augment fastai" ;;
    cifar10) echo "--dataset cifar10 --data-dir $DATA_DIR --download --augment fastai" ;;
  esac
}
# Teachers: fastai cnn_learner(resnet34, pretrained), unfrozen, fit_one_cycle(50, max_lr) with AdamW
# (wd 1e-2), batch 64, best epoch kept. One-cycle is approximated by 15 epochs (fastai's pct_start 0.3)
# of linear warm-up then cosine decay, with torch's AdamW betas (0.9, 0.999) for fastai's (0.9, 0.99).
TEACHER_MODEL=fastai_resnet34
TEACHER_RECIPE=(--pretrained --epochs 50 --batch-size 64 --optimizer adamw --weight-decay 1e-2
                --lr-schedule cosine --warmup-epochs 15 --amp none)
teacher_lr() {  # DATASET -> fit_one_cycle's max_lr
  case $1 in
    imagewoof) echo 5e-4 ;;
    *) echo 1e-4 ;;
  esac
}
# Students: Adam lr 1e-4, constant (a step schedule with gamma 1), wd 0, batch 64, FP32
RECIPE=(--batch-size 64 --optimizer adam --lr 1e-4 --weight-decay 0 --lr-schedule step --gamma 1.0 --warmup-epochs 0
        --amp none)
STUDENTS=(sw_resnet10 sw_resnet14 sw_resnet18 sw_resnet20 sw_resnet26)
EPOCHS=100  # each run without teacher, each simultaneous run, each phase of a stage-wise run
# stage-wise: 5 feature phases (stem, layer1-4) + the classifier phase, 100 epochs each; the whole
# student in train mode (frozen stages' BatchNorm too); each phase starts from the previous phase's
# best-val-MSE weights
STAGEWISE=(--stage-epochs "$EPOCHS" --classifier-epochs "$EPOCHS" --frozen-bn train --phase-start best)
SIMULTANEOUS=(--simultaneous --epochs "$EPOCHS")  # CE + the sum of the 5 feature MSEs, every parameter
QUARTER=0.25  # the seed's 1/4 subsets: 325 images per class (Imagenette/Imagewoof), 1,250 (CIFAR-10)
