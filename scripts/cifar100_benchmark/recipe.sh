# The CIFAR-100 benchmark's settings, shared by teachers.sh and students.sh (sourced, never run).
# Source: RepDistiller (CRD, ICLR 2020), see REFERENCE_RESULTS.md.
: "${DATA_DIR:=data}" "${NPROC:=$(default_nproc)}" "${SEEDS:=0 1 2}" "${OUT_DIR:=runs/cifar100_benchmark}"
TEACHER_SEED="${TEACHER_SEED:-${SEEDS%% *}}"

PAIRS=(resnet56:resnet20 resnet110:resnet32 resnet32x4:resnet8x4 wrn_40_2:wrn_16_2)  # teacher:student
TEACHERS=("${PAIRS[@]%%:*}")
DATA=(--dataset cifar100 --data-dir "$DATA_DIR" --download --augment standard)  # zero-pad 4, crop, flip
# SGD lr 0.05 (0.01 for MobileNet/ShuffleNet students, none here), momentum 0.9, wd 5e-4, 240 epochs,
# x0.1 at epochs 150, 180 and 210, batch 64, no warm-up; teachers ("vanilla") and students alike
RECIPE=(--epochs 240 --batch-size 64 --optimizer sgd --lr 0.05 --momentum 0.9 --weight-decay 5e-4
        --lr-schedule multistep --milestones 150 180 210 --gamma 0.1 --warmup-epochs 0)
KD=(--ce-weight 0.1 --kd-weight 0.9 --temperature 4)  # KD: T = 4, CE weight 0.1, KD weight 0.9
AT=(--ce-weight 1 --at-weight 1000 --at-mode code)    # AT: CE + 1000 * sum of the attention losses (-b 1000)
FSP_EPOCHS=30    # FSP two-stage: RepDistiller's init stage (init_epochs = 30) of FSP alone, then CE alone
FSP_LR=0.05      # the init stage runs SGD at the students' lr (kd_fsp.py's own default is far lower)
