"""FitNets: Romero, Ballas, Kahou, Chassang, Gatta and Bengio 2015 ("FitNets: Hints for Thin Deep Nets",
ICLR 2015, arXiv:1412.6550).

A regressor r trained beside the student (ConvReg of mdistiller and RepDistiller: a convolution, BatchNorm
and ReLU) maps the student's feature map at the hint stage g, S_g (N, C_s, H_s, W_s), to the shape of the
teacher's at the same stage, T_g (N, C_t, H_t, W_t) (`common.models.with_stages`: 0 is the stem, k stage k).
The hint loss is their squared error, averaged over the batch, the channels and the positions:

    L_hint = mean (r(S_g) - T_g)^2
    L_kd   = T^2 * KL(softmax(teacher / T) || softmax(student / T))          (only with --kd-weight > 0)

    --hint-epochs 0 (default; the CIFAR-100 benchmark's FitNet in mdistiller and RepDistiller, trained jointly):
        loss = ce_weight * CE(student, labels) + hint_weight * L_hint + kd_weight * L_kd,  --epochs epochs
    --hint-epochs N > 0 (the paper's stage-wise training):
        stage 1, N epochs: hint_weight * L_hint alone; only the student up to stage g runs, so only it and r train
        stage 2, --epochs epochs: ce_weight * CE + kd_weight * L_kd over the whole student, from the stage-1
                 weights with a fresh optimizer and LR schedule (the paper's stage 2 is Hinton's KD); r is dropped

Defaults: mdistiller's and RepDistiller's CIFAR-100 settings (hint layer 2, the output of the second of a CIFAR
ResNet's three stages; CE weight 1; FEAT_WEIGHT / -b 100; no KD), which the launchers pass. On digits (resnet56
-> resnet20, 30 epochs, one seed, 2026-11-23) --hint-weight 100, 10 and 1 all reach 99.44 % (0, CE alone: 99.17 %)
and L_hint goes from 0.37 to 0.05; 1000 costs 7-10 points on a quarter of the data, so 100 stays.
Epoch and step numbers count both stages; `charts/phase` and "phase" in metrics.jsonl say which one ran
(1: hints alone, 2: the whole student, 0: joint).

    python kd_fitnet.py --teacher runs/<teacher_run>/best.pt              # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_fitnet.py --dataset cifar100 --download --model resnet20 \
        --teacher runs/<resnet56_teacher>/best.pt --hint-weight 100 --epochs 240 --batch-size 64 --lr 0.05 \
        --lr-schedule multistep --milestones 150 180 210 --warmup-epochs 0

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
# ALGO LOGIC: the method's name, in results.json and checkpoints; report.py finds its published numbers by it
METHOD = "fitnet"

import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.models.feature_extraction import create_feature_extractor
from tqdm import tqdm

from common import UserError
from common.data import DATASETS, build_loaders
from common.models import MODEL_NAMES, STAGE_NODES, create_model, stage_shapes, with_stages
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
    method = parser.add_argument_group("method: FitNets hints")
    method.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    method.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    method.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    method.add_argument("--hint-stage", type=int, default=2,
                        help="feature map g whose hint the student learns: 0 the stem, k stage k (mdistiller's and "
                             "RepDistiller's hint layer 2)")
    method.add_argument("--hint-weight", type=float, default=100.0,
                        help="weight of the hint loss L_hint, in both stages (CIFAR-100: 100 in mdistiller and RepDistiller)")
    method.add_argument("--ce-weight", type=float, default=1.0,
                        help="weight of the cross-entropy with the labels (CIFAR-100: 1)")
    method.add_argument("--hint-epochs", type=int, default=0,
                        help="0: joint training (the CIFAR-100 benchmark's); N: N epochs of hints alone (stage 1), "
                             "then --epochs epochs of the whole student (stage 2), as the paper")
    method.add_argument("--kd-weight", type=float, default=0.0,
                        help="weight of Hinton's soft-target term T^2 * KL, joint or stage 2 (0: none, as the benchmark)")
    method.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T of the soft term")
    return parser.parse_args(argv)


# ALGO LOGIC: the regressor, the hint loss and the phases
def conv_regressor(student_shape, teacher_shape):
    """r: (C_s, H_s, W_s) -> (C_t, H_t, W_t), mdistiller's and RepDistiller's ConvReg: a 3x3 convolution at stride
    2 when the student's map is twice the teacher's, a 4x4 transposed one at stride 2 when half, else a valid
    convolution of kernel (1 + H_s - H_t, 1 + W_s - W_t) (1x1 at equal sizes); then BatchNorm and ReLU."""
    (s_channels, s_height, s_width), (t_channels, t_height, t_width) = student_shape, teacher_shape
    if (s_height, s_width) == (2 * t_height, 2 * t_width):
        conv = nn.Conv2d(s_channels, t_channels, 3, stride=2, padding=1)
    elif (2 * s_height, 2 * s_width) == (t_height, t_width):
        conv = nn.ConvTranspose2d(s_channels, t_channels, 4, stride=2, padding=1)
    elif s_height >= t_height and s_width >= t_width:
        conv = nn.Conv2d(s_channels, t_channels, (1 + s_height - t_height, 1 + s_width - t_width))
    else:
        raise UserError(f"the student's hint map is {s_height}x{s_width} and the teacher's {t_height}x{t_width}: "
                        "a regressor maps a larger map or one of half the size; pick another --hint-stage")
    return nn.Sequential(conv, nn.BatchNorm2d(t_channels), nn.ReLU(inplace=True))


def hint_loss(regressed, teacher_feature):
    """L_hint = mean over batch, channels and positions of (r(S_g) - T_g)^2, in float32: the authors' code
    (F.mse_loss / nn.MSELoss). The paper's equation 3 is half the squared L2 norm, summed over the entries."""
    return F.mse_loss(regressed.float(), teacher_feature.float())


def kd_loss(student_logits, teacher_logits, temperature):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over classes and averaged over the
    batch ('batchmean'; 'mean' would also divide by the class count). The T^2 keeps the gradient
    scale of the soft term independent of T (Hinton et al. 2015, section 2)."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2


def check_hint_stage(hint_stage, student_shapes, teacher_shapes, student_name, teacher_name):
    """The hint stage must exist in both networks."""
    for name, shapes in ((student_name, student_shapes), (f"the teacher {teacher_name}", teacher_shapes)):
        if hint_stage >= len(shapes):
            raise UserError(f"--hint-stage {hint_stage}: {name} has feature maps 0 (the stem) to {len(shapes) - 1}")


def phase_of(epoch, args):
    """1: hints alone (the first --hint-epochs epochs), 2: the whole student (after them), 0: joint."""
    if args.hint_epochs == 0:
        return 0
    return 1 if epoch < args.hint_epochs else 2


# ALGO LOGIC: everything that trains, in one module: the optimizer, torch.compile, DDP and the checkpoint take it
class Trainable(nn.Module):
    """The student and the regressor r. forward(images, phase) -> (logits, r(S_g)): in phase 1 the student runs
    only as far as stage g (logits None), in phase 2 it runs whole and r not at all (r(S_g) None)."""

    def __init__(self, student, args, student_shape, teacher_shape):
        super().__init__()
        self.student = student
        self.regressor = conv_regressor(student_shape, teacher_shape)
        self.hint_stage, self.hint_node = args.hint_stage, STAGE_NODES[args.model][args.hint_stage]
        # views of the student's own layers: the whole student with its maps, and the student up to stage g;
        # in a list, so that the checkpoint holds each weight once
        self.views = [with_stages(student, args.model), create_feature_extractor(student, [self.hint_node])]

    def forward(self, images, phase=0):
        if phase == 1:
            return None, self.regressor(self.views[1](images)[self.hint_node])
        if phase == 2:
            return self.student(images), None
        logits, features = self.views[0](images)
        return logits, self.regressor(features[self.hint_stage])


@user_errors
def main(args):
    # TRY NOT TO MODIFY: set-up, data, resume, teacher
    started = time.time()
    # ALGO LOGIC: the method's flags, range-checked with the shared ones
    check_flags(args, positive=("temperature",),
                non_negative=("hint_stage", "hint_weight", "ce_weight", "hint_epochs", "kd_weight"))
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
    # ALGO LOGIC: the regressor's input and output shapes; a stage or size that does not fit stops here, before any output
    student_shapes = stage_shapes(model, args.model, image_shape)
    teacher_shapes = stage_shapes(teacher, teacher_name, image_shape)
    check_hint_stage(args.hint_stage, student_shapes, teacher_shapes, args.model, teacher_name)
    trainable = Trainable(model, args, student_shapes[args.hint_stage], teacher_shapes[args.hint_stage])
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
    total_epochs = args.hint_epochs + args.epochs

    def stage_optimizer(phase):  # over all of Trainable: what a stage leaves without gradient, SGD leaves alone
        optimizer = build_optimizer(args, trainable.parameters())
        return optimizer, build_scheduler(args, optimizer, len(train_loader),
                                          args.hint_epochs if phase == 1 else args.epochs)

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
    # ALGO LOGIC: stage 1 runs no layer after stage g, stage 2 no regressor: DDP must be told that some get no gradient
    train_model = DDP(trainable, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=args.hint_epochs > 0) if dist.world_size > 1 else trainable
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
                print(f"stage 2: the whole student for {args.epochs} epochs, fresh optimizer and LR schedule")
        train_model.train()
        train_loader.set_epoch(epoch)
        loss_sums, epoch_steps = 0, 0
        throughput.start()
        bar = tqdm(throughput.timed(train_loader), total=len(train_loader), desc=f"epoch {epoch + 1}/{total_epochs}",
                   disable=not (master and sys.stdout.isatty()), leave=False)
        for images, labels in bar:
            images = images.contiguous(memory_format=memory_format)
            # ALGO LOGIC: one step's loss terms; losses["total"] is what the optimizer minimises
            if phase != 2 or args.kd_weight > 0:  # stage 2 without soft targets needs no teacher
                with torch.no_grad(), autocast:
                    teacher_logits, teacher_features = teacher(images)
            with autocast:
                logits, regressed = train_model(images, phase)
                losses = {}  # a stage leaves out the terms it does not train, decided by the phase alone
                if phase != 1:
                    losses["ce"] = criterion(logits, labels)
                if phase != 2:
                    losses["hint"] = hint_loss(regressed, teacher_features[args.hint_stage])
                if phase != 1 and args.kd_weight > 0:
                    losses["kd"] = kd_loss(logits, teacher_logits, args.temperature)
                losses["total"] = args.ce_weight * losses.get("ce", 0) + args.hint_weight * losses.get("hint", 0) + \
                    args.kd_weight * losses.get("kd", 0)
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
                     "method": METHOD})
    log.close()
    if master:
        print(f"FINAL top1={metrics['top1']:.2f} top5={metrics['top5']:.2f} best_top1={best_top1:.2f}")
    cleanup_distributed()


if __name__ == "__main__":
    main(parse_args())
