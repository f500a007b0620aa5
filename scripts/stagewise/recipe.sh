# Seed 004's stage-wise study settings, shared by teachers.sh and students.sh (sourced, never run).
# DATA_DIR holds imagenette2/ and imagewoof2/ (train/ and val/ class folders) and CIFAR-10.
: "${DATA_DIR:=data}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0}" "${OUT_DIR:=runs/stagewise}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

DATASETS=(imagenette imagewoof cifar10)
data_args() {  # DATASET -> its --dataset/--data-dir flags
  case $1 in
    imagenette) echo "--dataset imagenette --data-dir $DATA_DIR/imagenette2" ;;
    imagewoof) echo "--dataset imagewoof --data-dir $DATA_DIR/imagewoof2" ;;
    cifar10) echo "--dataset cifar10 --data-dir $DATA_DIR --download" ;;
  esac
}
# "Adam optimizer with learning rate 1e-4 is used everywhere": a constant LR (step schedule with
# gamma 1; the scripts have no constant schedule), no weight decay, no warm-up. Batch size and
# epochs are not stated in the seed: batch 64, and the epochs below.
RECIPE=(--batch-size 64 --optimizer adam --lr 1e-4 --weight-decay 0 --lr-schedule step --gamma 1.0 --warmup-epochs 0)
TEACHER_MODEL=resnet34
TEACHER_EPOCHS=30   # ImageNet-pretrained ResNet-34 fine-tuned on each data set
STUDENTS=(resnet10 resnet14_imagenet resnet18 resnet20_imagenet resnet26)
STAGE_EPOCHS=100      # per stage of stage-wise training (4 stages for these ResNets)
CLASSIFIER_EPOCHS=100 # the final classifier phase
NUM_STAGES=4
TOTAL_EPOCHS=$((NUM_STAGES * STAGE_EPOCHS + CLASSIFIER_EPOCHS))  # no-teacher and simultaneous runs: as long as stage-wise
FRACTIONS=(1.0 0.25)  # all the training data, and a stratified quarter of it
