"""Knowledge review (ReviewKD): Chen, Liu, Zhao and Jia 2021 ("Distilling Knowledge via Knowledge Review",
CVPR 2021, arXiv:2104.09044).

The student's stage outputs S_1..S_K (`common.models.with_stages`) and its pooled feature S_{K+1} =
avgpool(S_K) (N, C, 1, 1) are "reviewed" deep to shallow by attention-based fusion (ABF) modules, one per
level j, all trained with the student: ABF_j maps S_j to the mid width M by a 1x1 conv + BN, fuses it with
the upsampled (nearest) fused map of level j + 1 through two sigmoid attention maps (a 1x1 conv over both),
and a 3x3 conv + BN turns the fusion into R_j, of the teacher's level-j width and size. The deepest level,
the pooled one, has nothing to fuse. The hierarchical context loss (HCL) compares R_j with the teacher's
T_j (its stage outputs and pooled feature) at full size and after adaptive average pooling to 4x4, 2x2 and
1x1 (the sizes smaller than the map), with weights halving:

    fused_{K+1} = conv1(S_{K+1});  fused_j = a_j * conv1(S_j) + b_j * up(fused_{j+1}),
                  [a_j, b_j] = sigmoid(conv1x1([conv1(S_j), up(fused_{j+1})]));   R_j = conv2(fused_j)
    HCL(R, T) = (MSE(R, T) + sum_i 2^-i MSE(pool_{l_i}(R), pool_{l_i}(T))) / (1 + sum_i 2^-i),
                l_1, l_2, ... = the sizes of 4, 2, 1 below the map's height
    loss = ce_weight * CE(student, labels) + w(epoch) * reviewkd_weight * sum_{j=1}^{K+1} HCL(R_j, T_j)
    w(epoch) = min(epoch / reviewkd_warmup_epochs, 1), epochs counted from 0 (0 in the first epoch)

As the authors' code (dvlab-research/ReviewKD, CIFAR-100/model/reviewkd.py, train.py; mdistiller's
ReviewKD.py is the same): M = min(512, the student's last width); the stem is not used; the CE weight 1;
a 20-epoch warm-up of the review loss; --reviewkd-weight 0.6 for resnet56 -> resnet20, 1 for
resnet110 -> resnet32, 5 for resnet32x4 -> resnet8x4 and wrn_40_2 -> wrn_16_2; on ImageNet (ResNet-34 ->
ResNet-18) weight 1 and no warm-up (0 here). Their teacher's stage features are taken before the last ReLU
of each stage; `with_stages` gives the stage outputs, after it (docs/kd_reviewkd.md).
The digits defaults, --reviewkd-weight 5 and --reviewkd-warmup-epochs 3 (of --epochs 30), were the best of
weights 0.5, 1, 2, 5, 10 and warm-ups 3, 20 on a quarter of digits (resnet56 -> resnet20, one seed: 93.6,
95.3, 96.1, 96.4, 95.0; weight 5 with a 20-epoch warm-up 95.3, with 1 96.9, within the noise of one seed);
on all of it weights 1 and 5 both gave 99.44. 3 of 30 epochs is about the authors' 20 of 240.

    python kd_reviewkd.py --teacher runs/<teacher_run>/best.pt         # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_reviewkd.py --dataset imagenet --data-dir /data/imagenet --model resnet18 \
        --teacher-model resnet34 --teacher-pretrained --reviewkd-weight 1 --reviewkd-warmup-epochs 0 \
        --epochs 100 --batch-size 256 --lr 0.1 --lr-schedule multistep --milestones 30 60 90 --warmup-epochs 0 \
        --weight-decay 1e-4 --amp bf16

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
# ALGO LOGIC: the method's name, in results.json and checkpoints; report.py finds its published numbers by it
METHOD = "reviewkd"

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
    method = parser.add_argument_group("method: knowledge review (ABF + HCL)")
    method.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    method.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    method.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    method.add_argument("--ce-weight", type=float, default=1.0, help="weight of the cross-entropy with the labels")
    method.add_argument("--reviewkd-weight", type=float, default=5.0,
                        help="weight of the summed HCL losses (CIFAR-100, the authors: 0.6 resnet56 -> resnet20, 1 "
                             "resnet110 -> resnet32, 5 resnet32x4 -> resnet8x4 and wrn_40_2 -> wrn_16_2; ImageNet: 1)")
    method.add_argument("--reviewkd-warmup-epochs", type=int, default=3,
                        help="the review loss is scaled by min(epoch / this, 1), epochs counted from 0 as in the "
                             "authors' code: 0 in the first epoch (CIFAR-100: 20); 0: no warm-up, as on ImageNet "
                             "(not the LR's --warmup-epochs)")
    return parser.parse_args(argv)


# ALGO LOGIC: the hierarchical context loss, the review levels, the warm-up and the ABF module
def hcl_loss(student_feature, teacher_feature, levels=(4, 2, 1)):
    """HCL(R, T) = (MSE(R, T) + sum_i 2^-i MSE(pool_{l_i}(R), pool_{l_i}(T))) / (1 + sum_i 2^-i): MSE averaged over
    batch, channels and positions; pool_l the adaptive average pool to l x l, for the levels l below the map's
    height only (the authors' `if l >= h: continue`), the i-th of them weighted 2^-i. Computed in float32."""
    student_feature, teacher_feature = student_feature.float(), teacher_feature.float()
    loss, weight, total = F.mse_loss(student_feature, teacher_feature), 1.0, 1.0
    for level in levels:
        if level >= student_feature.shape[2]:
            continue
        weight /= 2
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student_feature, level),
                                          F.adaptive_avg_pool2d(teacher_feature, level))
        total += weight
    return loss / total


def review_levels(features):
    """The levels ReviewKD distils, from `with_stages`' [stem, stage 1, ..., stage K]: the stage outputs and the
    last one average-pooled to 1x1 (the network's pooled feature, as (N, C, 1, 1)); the stem is not used."""
    return features[1:] + [F.adaptive_avg_pool2d(features[-1], 1)]


def reviewkd_warmup(epoch, warmup_epochs):
    """The factor of the review loss in epoch `epoch` (0-based, as the authors' train.py counts): min(epoch /
    warm-up, 1), so 0 in the first epoch and 1 from epoch `warmup_epochs` on; 0: no warm-up."""
    return min(epoch / warmup_epochs, 1.0) if warmup_epochs > 0 else 1.0


class ABF(nn.Module):
    """Attention-based fusion (the authors' ABF): forward(feature, deeper, out_size) -> (R, fused). conv1 (1x1 + BN)
    takes the student's feature to the mid width; with a deeper level's `fused`, upsampled (nearest) to this
    feature's size, two sigmoid maps from a 1x1 conv over both weigh the sum; the fusion is resized (nearest) to
    the teacher's `out_size`, then conv2 (3x3 + BN) gives R at the teacher's width. `fused` feeds the next,
    shallower level."""

    def __init__(self, in_channels, mid_channels, out_channels, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)  # the authors' init
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, feature, deeper=None, out_size=None):
        fused = self.conv1(feature)
        if self.att_conv is not None:
            deeper = F.interpolate(deeper, fused.shape[2:], mode="nearest")
            attention = self.att_conv(torch.cat([fused, deeper], 1))
            fused = fused * attention[:, 0:1] + deeper * attention[:, 1:2]
        if tuple(fused.shape[2:]) != tuple(out_size):
            fused = F.interpolate(fused, out_size, mode="nearest")
        return self.conv2(fused), fused


# ALGO LOGIC: everything that trains, in one module: the optimizer, torch.compile, DDP and the checkpoint take it
class Trainable(nn.Module):
    """The student and one ABF per review level (stage 1..K, then the pooled feature). forward(images) ->
    (logits, [R_1, ..., R_{K+1}]), R_j shaped as the teacher's level j; `student_shapes` and `teacher_shapes`
    are `stage_shapes` (stem first) of both networks."""

    def __init__(self, student, args, student_shapes, teacher_shapes):
        super().__init__()
        self.student = student
        # a view of the student's own layers, in a list so that the checkpoint holds each weight once
        self.staged = [with_stages(student, args.model)]
        student_levels = student_shapes[1:] + [(student_shapes[-1][0], 1, 1)]
        teacher_levels = teacher_shapes[1:] + [(teacher_shapes[-1][0], 1, 1)]
        mid_channels = min(512, student_shapes[-1][0])
        self.abfs = nn.ModuleList(ABF(shape[0], mid_channels, teacher_shape[0], fuse=j < len(student_levels) - 1)
                                  for j, (shape, teacher_shape) in enumerate(zip(student_levels, teacher_levels)))
        self.out_sizes = [tuple(shape[1:]) for shape in teacher_levels]

    def forward(self, images):
        logits, features = self.staged[0](images)
        reviewed, fused = [], None
        for feature, abf, out_size in reversed(list(zip(review_levels(features), self.abfs, self.out_sizes))):
            output, fused = abf(feature, fused, out_size)  # deep to shallow: each level reviews the deeper ones
            reviewed.insert(0, output)
        return logits, reviewed


@user_errors
def main(args):
    # TRY NOT TO MODIFY: set-up, data, resume, teacher
    started = time.time()
    # ALGO LOGIC: the method's flags, range-checked with the shared ones
    check_flags(args, non_negative=("ce_weight", "reviewkd_weight", "reviewkd_warmup_epochs"))
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
    # ALGO LOGIC: one ABF per level, from the student's widths to the teacher's widths and sizes
    student_shapes = stage_shapes(model, args.model, image_shape)
    teacher_shapes = stage_shapes(teacher, teacher_name, image_shape)
    if len(student_shapes) != len(teacher_shapes):
        raise UserError(f"ReviewKD pairs stages: {args.model} has {len(student_shapes) - 1} stages but the teacher "
                        f"{teacher_name} has {len(teacher_shapes) - 1}; pick a teacher of the same family")
    if args.batch_size // dist.world_size < 2:
        raise UserError(f"--batch-size {args.batch_size}: the pooled level's BatchNorm needs 2 or more images per process")
    trainable = Trainable(model, args, student_shapes, teacher_shapes)
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

    optimizer = build_optimizer(args, trainable.parameters())
    scheduler = build_scheduler(args, optimizer, len(train_loader))
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
    train_model = DDP(trainable, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.world_size > 1 else trainable
    eval_model = trainable
    log = RunLog(run_dir, args, master, checkpoint)
    if master:
        print(f"run dir: {run_dir}  ({dist.world_size} process(es) on {device}, {torch.get_num_threads()} CPU "
              f"thread(s) each, {len(train_loader)} steps/epoch)")

    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    # TRY NOT TO MODIFY: the loop; it logs, sums and checks every term of `losses`
    planned_steps = (args.epochs - start_epoch) * len(train_loader)
    throughput = Throughput(device, min(planned_steps, args.max_steps or planned_steps))
    metrics, epochs_done = None, start_epoch
    for epoch in range(start_epoch, args.epochs):
        if args.max_steps and step >= args.max_steps:
            break
        train_model.train()
        train_loader.set_epoch(epoch)
        loss_sums, epoch_steps = 0, 0
        throughput.start()
        bar = tqdm(throughput.timed(train_loader), total=len(train_loader), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=not (master and sys.stdout.isatty()), leave=False)
        for images, labels in bar:
            images = images.contiguous(memory_format=memory_format)
            # ALGO LOGIC: one step's loss terms; losses["total"] is what the optimizer minimises
            with torch.no_grad(), autocast:
                _, teacher_features = teacher(images)
            with autocast:
                logits, reviewed = train_model(images)
                # one HCL term per level (stages 1..K, then the pooled feature), and their sum
                names = [f"reviewkd_stage{j}" for j in range(1, len(reviewed))] + ["reviewkd_pooled"]
                levels = {name: hcl_loss(output, target)
                          for name, output, target in zip(names, reviewed, review_levels(teacher_features))}
                losses = {"ce": criterion(logits, labels), "reviewkd": sum(levels.values()), **levels}
                losses["total"] = args.ce_weight * losses["ce"] + reviewkd_warmup(epoch, args.reviewkd_warmup_epochs) * \
                    args.reviewkd_weight * losses["reviewkd"]
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
        record = {"epoch": epoch + 1, "step": step, "train_loss": means["total"],
                  **{f"loss_{k}": v for k, v in means.items() if k != "total"}, "val_loss": metrics["loss"],
                  "top1": metrics["top1"], "top5": metrics["top5"], "lr": scheduler.get_last_lr()[0],
                  "images_per_sec": throughput.epoch_rate,
                  "data_wait_fraction": throughput.epoch_wait_fraction, "time_s": time.time() - started + prior_wall}
        log.epoch(record)
        log.scalars(step, {"losses/val": metrics["loss"], "eval/top1": metrics["top1"], "eval/top5": metrics["top5"],
                           "charts/epoch": epoch + 1, "charts/images_per_sec": throughput.epoch_rate,
                           "charts/data_wait_fraction": throughput.epoch_wait_fraction})
        if master:
            print(f"epoch {epoch + 1}/{args.epochs}  loss {means['total']:.4f}  top1 {metrics['top1']:.2f}  "
                  f"top5 {metrics['top5']:.2f}  {throughput.epoch_rate:.0f} img/s")
            state = {"model": trainable.student.state_dict(), "trainable": trainable.state_dict(), "method": METHOD,
                     "model_name": args.model, "num_classes": num_classes, "dataset": args.dataset, "args": vars(args),
                     "epoch": epoch + 1, "step": step, "best_top1": best_top1, "best_epoch": best_epoch,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng_state(), "top1": metrics["top1"],
                     "teacher_top1": teacher_top1, "wall_time_s": time.time() - started + prior_wall}
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
