"""FSP: Yim, Joo, Bae and Kim 2017 ("A Gift from Knowledge Distillation: Fast Optimization, Network
Minimization and Transfer Learning", CVPR 2017).

The flow of solution procedure (FSP) of stage k is the Gram matrix between the feature map that enters
the stage, F_in = features[k - 1] (N, C_in, h, w), and the one that leaves it, F_out = features[k]
(N, C_out, h, w) (`common.models.with_stages`; the larger map is average-pooled to the smaller size):

    G_k(x)[i, j] = sum_{s, t} F_in(s, t, i) * F_out(s, t, j) / (h * w),          shape (C_in, C_out)
    L_FSP = sum_{k=1..K} mean over the batch and the C_in * C_out entries of (G_k^S - G_k^T)^2

Student and teacher must have the same channel counts at every stage (the paper distils a ResNet
into a shallower one of the same widths); a mismatch is reported before training starts.

    --fsp-mode joint (default):  loss = ce_weight * CE(student, labels) + fsp_weight * L_FSP, for --epochs
        epochs. Seed 001's FSP is joint with --ce-weight 1 --fsp-weight 0.1111111111: its code takes each
        pair's mean squared error / 3, then the mean over its 3 pairs, i.e. (1/9) * L_FSP
    --fsp-mode two-stage (the paper): stage 1, --fsp-epochs epochs of L_FSP alone (its own optimizer,
        peak LR --fsp-lr and schedule; the classifier gets no gradient); stage 2, --epochs epochs of CE
        alone, from the stage-1 weights with a fresh optimizer and schedule

The paper weights the stages equally and averages over the batch; the mean over matrix entries (as in
CRD's RepDistiller) makes the loss size independent of the widths. Epoch and step numbers count both
stages; `charts/phase` in TensorBoard and "phase" in metrics.jsonl say which one ran (1: FSP alone,
2: CE alone, 0: joint).

Defaults. L_FSP is quadratic in the features, so its size follows the teacher's activations. A resnet56
digits teacher (train_teacher.py defaults) has rare images with stage-3 activations near 130 (a
resnet20's stay near 12): per-image (G^T)^2 reaches 1e5 against a median of 9, L_FSP is 30-300 and
does not go down. On that teacher --fsp-weight 0.01 already costs the resnet20 student 1.1 points of top-1
(0.1: 20 points); 0.001 leaves it at the no-teacher accuracy. In stage 1 the same gradients inflate
the weights (conv1 norm 2.4 -> 97 at --fsp-lr 0.05), and stage 2 then trains slowly: top-1 41% at
--fsp-lr 0.05, 85% at 0.01, 97% at 0.001, 99% at 0.0001. With a teacher whose features are tame
(a resnet20) stage 1 works at 0.01-0.05 (L_FSP 3.2 -> 0.7) and a weight of 0.1 is harmless: raise both then.
Measured again on 2026-11-23 (10 epochs, resnet20 student without zero-init, one seed each): with the
quick start's resnet56 teacher (--zero-init-residual) L_FSP is 2-5, and --fsp-weight 0.1 takes it from 2.6
to 1.2 at no cost (97.8 % against 97.5 % at 0.001, where it does not go down); two-stage at --fsp-lr 0.01
takes it from 2.1 to 0.7 and stage 2 reaches 98.1 % in 5 epochs (95.8 % after 1e-4). With a resnet56
trained by train_teacher.py's defaults (no zero-init) L_FSP is 60-140 and the same settings cost 23
points (joint) and stall stage 2 at 50 %: the small defaults stay, and the teacher decides.

    python kd_fsp.py --teacher runs/<teacher_run>/best.pt              # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_fsp.py --dataset cifar100 --download --model resnet20 \
        --teacher runs/<resnet56_teacher>/best.pt --fsp-mode two-stage --fsp-epochs 30 --epochs 240 \
        --lr-schedule multistep --milestones 150 180 210 --amp bf16

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
# ALGO LOGIC: the method's name, in results.json and checkpoints; report.py finds its published numbers by it
METHOD = "fsp"

import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from common import UserError
from common.data import DATASETS, build_loaders
from common.models import MODEL_NAMES, create_model, stage_shapes, with_stages
from common.utils import (RunLog, Throughput, all_reduce_sum, autocast_context, build_optimizer, build_scheduler,
                          check_finite, check_flags, cleanup_distributed, evaluate, evaluate_checkpoint, find_resume,
                          grad_scaler, init_from, load_teacher, new_run_dir, restore_training, rng_state, save_epoch,
                          seed_everything, setup_distributed, user_errors)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="digits", help=f"one of: {', '.join(DATASETS)}")
    data.add_argument("--data-dir", default="data", help="where the data set lives on disk")
    data.add_argument("--download", action="store_true", help="fetch CIFAR into --data-dir if missing")
    data.add_argument("--train-fraction", type=float, default=1.0, help="keep this stratified fraction of train")
    data.add_argument("--image-size", type=int, default=None, help="crop size (default: 224 for image files, 32 for fake data)")
    data.add_argument("--val-resize", type=int, default=256, help="val: resize shorter side, then centre crop")
    data.add_argument("--num-classes", type=int, default=1000, help="class count of --dataset fake")
    data.add_argument("--loader", default="auto", choices=["auto", "tensor", "dali", "torch"],
                      help="auto: tensor for digits/CIFAR/fake; for image files DALI (1.9-2.5x the DataLoader's "
                           "images/s on CPU), or torch when DALI is not installed")
    data.add_argument("--workers", type=int, default=4, help="DALI threads or DataLoader processes per rank")
    data.add_argument("--augment", default="auto", choices=["auto", "standard", "reflect", "cub", "fastai"],
                      help="train augmentation: auto = cub for cub200, standard otherwise; reflect = seed 001's CIFAR "
                           "crop; cub = seed 000's; fastai = seed 004's get_transforms(do_flip=False) (docs/reproducing.md)")
    data.add_argument("--eval-on", default="val", choices=["val", "heldout"],
                      help="heldout: evaluate on the training images --train-fraction leaves out (seed 004's 3/4 test)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="resnet20", help=f"one of: {', '.join(MODEL_NAMES)}")
    model.add_argument("--pretrained", action="store_true", help="start from torchvision's ImageNet weights")
    model.add_argument("--init-from", default=None,
                       help="start from this checkpoint's weights; tensors of another shape (a new classifier) stay fresh")
    model.add_argument("--zero-init-residual", action=argparse.BooleanOptionalAction, default=False,
                       help="zero-init the last BatchNorm of each residual block (Goyal et al. 2017); seed 001 and "
                            "RepDistiller do not")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=30, help="training epochs")
    optim.add_argument("--batch-size", type=int, default=64, help="global batch size, split across ranks")
    optim.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"], help="optimizer")
    optim.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    optim.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    optim.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the CE loss")
    sched = parser.add_argument_group("LR schedule")
    sched.add_argument("--lr-schedule", default="cosine", choices=["multistep", "step", "cosine"], help="LR decay")
    sched.add_argument("--milestones", type=int, nargs="*", default=None,
                       help="multistep: epochs at which LR *= gamma (default: 50%% and 75%% of --epochs)")
    sched.add_argument("--lr-step", type=int, default=30, help="step: LR *= gamma every this many epochs")
    sched.add_argument("--gamma", type=float, default=0.1, help="multistep/step decay factor")
    sched.add_argument("--warmup-epochs", type=int, default=1, help="linear LR warm-up epochs")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast precision")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                       help="NHWC memory format, on by default: 1.1-1.3x the images/s of NCHW on CPU (docs/performance.md)")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the student and the teacher; on CPU 1.04-1.15x the images/s "
                            "after 10-20 s of compiling (docs/performance.md)")
    speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    speed.add_argument("--threads", type=int, default=0,
                       help="CPU threads per process; 0: OMP_NUM_THREADS if set, else the CPUs free when the run starts")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="random seed")
    run.add_argument("--data-seed", type=int, default=None,
                     help="seed of the order and augmentation of the data (default: --seed); a teacher cache needs it")
    run.add_argument("--exp-name", default=os.path.basename(__file__)[:-3], help="experiment name")
    run.add_argument("--out-dir", default="runs", help="runs are written to <out-dir>/<run_name>/")
    run.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: off)")
    run.add_argument("--log-interval", type=int, default=20, help="steps between loss logs")
    run.add_argument("--resume", default=None,
                     help="a run's last.pt to continue, or 'auto': the newest run of this script with these settings, if any")
    run.add_argument("--evaluate", action="store_true", help="evaluate the --resume checkpoint and exit")
    method = parser.add_argument_group("method: FSP")
    method.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    method.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    method.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    method.add_argument("--fsp-mode", default="joint", choices=["joint", "two-stage"],
                        help="joint: CE + FSP together; two-stage: FSP alone for --fsp-epochs, then CE alone")
    method.add_argument("--ce-weight", type=float, default=1.0, help="joint: weight of the cross-entropy with the labels")
    method.add_argument("--fsp-weight", type=float, default=0.001, help="joint: weight of the FSP loss L_FSP")
    method.add_argument("--fsp-epochs", type=int, default=10, help="two-stage: epochs of stage 1 (FSP alone)")
    method.add_argument("--fsp-lr", type=float, default=0.0001, help="two-stage: peak learning rate of stage 1")
    return parser.parse_args(argv)


# ALGO LOGIC: the FSP loss
def pool_to(feature, size):
    """Average-pool to (H, W) `size`; by a whole factor with avg_pool2d, 1.3x faster than adaptive pooling on CPU."""
    height, width = feature.shape[2:]
    if (height, width) == size:
        return feature
    if height % size[0] == 0 and width % size[1] == 0:
        return F.avg_pool2d(feature, (height // size[0], width // size[1]))
    return F.adaptive_avg_pool2d(feature, size)


def fsp_matrix(feature_in, feature_out):
    """G = F_in^T F_out / (h * w), shape (N, C_in, C_out); a larger map is average-pooled to the smaller."""
    size = (min(feature_in.shape[2], feature_out.shape[2]), min(feature_in.shape[3], feature_out.shape[3]))
    feature_in, feature_out = pool_to(feature_in, size), pool_to(feature_out, size)
    with torch.autocast(feature_in.device.type, enabled=False):  # autocast would run bmm in half precision
        feature_in, feature_out = feature_in.float().flatten(2), feature_out.float().flatten(2)
        return torch.bmm(feature_in, feature_out.transpose(1, 2)) / feature_in.shape[2]


def fsp_loss(student_pairs, teacher_pairs):
    """sum over stages of mean((G_S - G_T)^2); pairs are (features[k - 1], features[k]) for k = 1..K."""
    return sum((fsp_matrix(*student_pair) - fsp_matrix(*teacher_pair)).pow(2).mean()
               for student_pair, teacher_pair in zip(student_pairs, teacher_pairs))


def check_channels(student_shapes, teacher_shapes, student_name, teacher_name):
    """FSP compares C_in x C_out matrices stage by stage: the widths must match."""
    if len(student_shapes) != len(teacher_shapes):
        raise UserError(f"FSP pairs stages: {student_name} has {len(student_shapes) - 1} stages but the teacher "
                        f"{teacher_name} has {len(teacher_shapes) - 1}; pick a teacher of the same family")
    for k in range(1, len(student_shapes)):
        student_in, student_out = student_shapes[k - 1][0], student_shapes[k][0]
        teacher_in, teacher_out = teacher_shapes[k - 1][0], teacher_shapes[k][0]
        if (student_in, student_out) != (teacher_in, teacher_out):
            raise UserError(f"FSP needs matching channels: stage {k} has {student_in} -> {student_out} in the student "
                            f"{student_name} but {teacher_in} -> {teacher_out} in the teacher {teacher_name}; "
                            "pick a student and teacher of the same widths")


def phase_of(epoch, args):
    """1: FSP alone (two-stage, first --fsp-epochs epochs), 2: CE alone (two-stage, after), 0: joint."""
    if args.fsp_mode == "joint":
        return 0
    return 1 if epoch < args.fsp_epochs else 2


# ALGO LOGIC: everything that trains, in one module: the optimizer, torch.compile, DDP and the checkpoint take it
class Trainable(nn.Module):
    def __init__(self, student, args):
        super().__init__()
        self.student = student
        # forward -> (logits, [stem, stage 1, ..., stage K]): a view of the student's own layers, in a list so
        # that the checkpoint holds each weight once
        self.staged = [with_stages(student, args.model)]

    def forward(self, images):
        return self.staged[0](images)


@user_errors
def main(args):
    # TRY NOT TO MODIFY: set-up, data, resume, teacher
    started = time.time()
    # ALGO LOGIC: the method's flags, range-checked with the shared ones
    check_flags(args, non_negative=("ce_weight", "fsp_weight", "fsp_epochs", "fsp_lr"))
    dist = setup_distributed(args.device, args.batch_size, args.threads)
    device, master = dist.device, dist.is_master
    seed_everything(args.seed, dist.rank)
    train_loader, val_loader, num_classes, image_shape = build_loaders(args, device, dist.rank, dist.world_size)
    resume_path, checkpoint = find_resume(args, METHOD)
    if args.evaluate:  # the checkpoint's own network, whatever --model says; no teacher needed
        if checkpoint is None:
            raise UserError("--evaluate needs a checkpoint: pass --resume PATH")
        metrics = evaluate_checkpoint(checkpoint, num_classes, val_loader, args, device)
        if master:
            print(f"FINAL top1={metrics['top1']:.2f} top5={metrics['top5']:.2f} best_top1={checkpoint['best_top1']:.2f}")
        return cleanup_distributed()
    teacher, teacher_name = load_teacher(args, num_classes)

    model = create_model(args.model, num_classes, args.pretrained, args.zero_init_residual)
    if args.init_from:
        init_from(model, args.model, args.init_from)
    # ALGO LOGIC: FSP compares C_in x C_out matrices stage by stage: a width mismatch stops here, before any output
    check_channels(stage_shapes(model, args.model, image_shape), stage_shapes(teacher, teacher_name, image_shape),
                   args.model, teacher_name)
    trainable = Trainable(model, args)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    trainable.to(device, memory_format=memory_format)
    autocast = autocast_context(args.amp, device)
    # the teacher is inert: eval mode (BatchNorm uses its running stats), no gradients, never in DDP
    teacher.eval().requires_grad_(False).to(device, memory_format=memory_format)
    teacher = with_stages(teacher, teacher_name).eval()  # ALGO LOGIC: -> (logits, [stem, stage 1, ..., stage K])
    # evaluated once per run: a resume reads its top-1 from the checkpoint
    teacher_top1 = checkpoint["teacher_top1"] if checkpoint else evaluate(teacher, val_loader, autocast, device,
                                                                          memory_format)["top1"]
    if master:
        print(f"teacher {teacher_name}: top1 {teacher_top1:.2f}")

    # ALGO LOGIC: two-stage: each stage has its own optimizer and LR schedule, over its own number of epochs. A
    # resume restores the optimizer of the stage it stopped in; the loop builds stage 2's when it begins
    fsp_epochs = args.fsp_epochs if args.fsp_mode == "two-stage" else 0
    total_epochs = fsp_epochs + args.epochs

    def stage_optimizer(phase):
        optimizer = build_optimizer(args, trainable.parameters())
        if phase == 1:  # before the scheduler, which takes its base LR from here
            for group in optimizer.param_groups:
                group["lr"] = args.fsp_lr
        return optimizer, build_scheduler(args, optimizer, len(train_loader), fsp_epochs if phase == 1 else args.epochs)

    phase = phase_of(checkpoint["epoch"] - 1 if checkpoint else 0, args)
    optimizer, scheduler = stage_optimizer(phase)
    scaler = grad_scaler(args.amp, device)
    start_epoch, step, best_top1, best_epoch, prior_wall = 0, 0, 0.0, 0, 0.0
    if checkpoint is not None:
        start_epoch, step, best_top1, best_epoch, prior_wall = restore_training(
            checkpoint, trainable, optimizer, scheduler, scaler, dist.rank, args.seed)
        run_dir = os.path.dirname(os.path.abspath(resume_path))
    else:
        run_name = f"{args.exp_name}__{args.dataset}__{args.model}__seed{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = new_run_dir(args.out_dir, run_name)

    # nanoGPT's order: to(device) -> compile -> DDP. Compiled in place, so the saved keys stay the module's own
    if args.compile:
        trainable.compile()
        teacher.compile()
    # ALGO LOGIC: stage 1 trains no classifier, so DDP must be told that some parameters get no gradient
    train_model = DDP(trainable, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=args.fsp_mode == "two-stage") if dist.world_size > 1 else trainable
    eval_model = trainable
    log = RunLog(run_dir, args, master, checkpoint)
    if master:
        print(f"run dir: {run_dir}  ({dist.world_size} process(es) on {device}, {torch.get_num_threads()} CPU "
              f"thread(s) each, {len(train_loader)} steps/epoch)")

    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    # TRY NOT TO MODIFY: the loop; it logs, sums and checks every term of `losses`
    planned_steps = (total_epochs - start_epoch) * len(train_loader)
    throughput = Throughput(device, min(planned_steps, args.max_steps or planned_steps))
    metrics, epochs_done = None, start_epoch
    for epoch in range(start_epoch, total_epochs):
        if args.max_steps and step >= args.max_steps:
            break
        if phase_of(epoch, args) != phase:  # ALGO LOGIC: stage 2 starts from the stage-1 weights, afresh
            phase = phase_of(epoch, args)
            optimizer, scheduler = stage_optimizer(phase)
            if master:
                print(f"stage 2: CE alone for {args.epochs} epochs, fresh optimizer and LR schedule")
        train_model.train()
        train_loader.set_epoch(epoch)
        loss_sums, epoch_steps = 0, 0
        throughput.start()
        bar = tqdm(throughput.timed(train_loader), total=len(train_loader), desc=f"epoch {epoch + 1}/{total_epochs}",
                   disable=not (master and sys.stdout.isatty()), leave=False)
        for images, labels in bar:
            images = images.contiguous(memory_format=memory_format)
            # ALGO LOGIC: one step's loss terms; losses["total"] is what the optimizer minimises
            if phase != 2:  # stage 2 needs no teacher
                with torch.no_grad(), autocast:
                    _, teacher_features = teacher(images)
            with autocast:
                logits, features = train_model(images)
                losses = {"ce": criterion(logits, labels)} if phase != 1 else {}  # stage 1: FSP alone
                if phase != 2:  # stage 2: CE alone
                    losses["fsp"] = fsp_loss(list(zip(features[:-1], features[1:])),
                                             list(zip(teacher_features[:-1], teacher_features[1:])))
                if phase == 0:
                    losses["total"] = args.ce_weight * losses["ce"] + args.fsp_weight * losses["fsp"]
                else:  # two-stage: the stage's one term, unweighted
                    losses["total"] = losses["fsp" if phase == 1 else "ce"]
            # TRY NOT TO MODIFY: the update, the sums and the step log
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            loss_sums = loss_sums + torch.stack(list(losses.values())).detach().float()
            step, epoch_steps = step + 1, epoch_steps + 1
            throughput.step(len(images) * dist.world_size)
            if step % args.log_interval == 0 and master:  # the only host syncs in the loop
                values = dict(zip(losses, torch.stack(list(losses.values())).tolist()))
                check_finite(values, step)
                bar.set_postfix(loss=f"{values['total']:.3f}")
                if bar.disable:  # no progress bar in a redirected log: one line per interval instead
                    print(f"epoch {epoch + 1} step {step}  " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()),
                          flush=True)
                log.scalars(step, {**{f"losses/{k}": v for k, v in values.items()}, "charts/lr": scheduler.get_last_lr()[0]})
            if args.max_steps and step >= args.max_steps:
                break
        throughput.stop()
        epochs_done = epoch + 1

        metrics = evaluate(eval_model, val_loader, autocast, device, memory_format)
        means = dict(zip(losses, (all_reduce_sum(loss_sums) / max(1, epoch_steps * dist.world_size)).tolist()))
        check_finite(means, step)
        if metrics["top1"] > best_top1:
            best_top1, best_epoch = metrics["top1"], epoch + 1
        record = {"epoch": epoch + 1, "step": step, "phase": phase, "train_loss": means["total"],
                  **{f"loss_{k}": v for k, v in means.items() if k != "total"}, "val_loss": metrics["loss"],
                  "top1": metrics["top1"], "top5": metrics["top5"], "lr": scheduler.get_last_lr()[0],
                  "images_per_sec": throughput.epoch_rate,
                  "data_wait_fraction": throughput.epoch_wait_fraction, "time_s": time.time() - started + prior_wall}
        log.epoch(record)
        log.scalars(step, {"losses/val": metrics["loss"], "eval/top1": metrics["top1"], "eval/top5": metrics["top5"],
                           "charts/epoch": epoch + 1, "charts/images_per_sec": throughput.epoch_rate,
                           "charts/data_wait_fraction": throughput.epoch_wait_fraction, "charts/phase": phase})
        if master:
            print(f"epoch {epoch + 1}/{total_epochs}  phase {phase}  loss {means['total']:.4f}  top1 {metrics['top1']:.2f}  "
                  f"top5 {metrics['top5']:.2f}  {throughput.epoch_rate:.0f} img/s")
            state = {"model": trainable.student.state_dict(), "trainable": trainable.state_dict(), "method": METHOD,
                     "model_name": args.model, "num_classes": num_classes, "dataset": args.dataset, "args": vars(args),
                     "epoch": epoch + 1, "step": step, "best_top1": best_top1, "best_epoch": best_epoch,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng_state(), "top1": metrics["top1"],
                     "teacher_top1": teacher_top1, "wall_time_s": time.time() - started + prior_wall, "phase": phase}
            save_epoch(run_dir, state, best_epoch == epoch + 1)

    if metrics is None:  # a finished run resumed: nothing to train, results.json stays as it is
        metrics = evaluate(eval_model, val_loader, autocast, device, memory_format)
    else:
        log.results({"top1": metrics["top1"], "top5": metrics["top5"], "best_top1": best_top1,
                     "best_epoch": best_epoch, "epochs": epochs_done, "steps": step,
                     "wall_time_s": time.time() - started + prior_wall, "images_per_sec": throughput.rate,
                     "data_wait_fraction": throughput.wait_fraction, "model": args.model, "dataset": args.dataset,
                     "world_size": dist.world_size, "teacher": teacher_name, "teacher_top1": teacher_top1,
                     "method": METHOD, "fsp_mode": args.fsp_mode})
    log.close()
    if master:
        print(f"FINAL top1={metrics['top1']:.2f} top5={metrics['top5']:.2f} best_top1={best_top1:.2f}")
    cleanup_distributed()


if __name__ == "__main__":
    main(parse_args())
