"""Decoupled knowledge distillation (DKD): Zhao, Cui, Song, Qiu and Liang 2022 ("Decoupled Knowledge
Distillation", CVPR 2022, arXiv:2203.08679).

With t the labelled class, b = [p_t, 1 - p_t] the binary target / non-target probabilities and p_hat
the softmax over the non-target classes alone (all at temperature T), Hinton's KD splits, per example, into

    KL(p^teacher || p^student) = TCKD + (1 - p_t^teacher) * NCKD
    TCKD = KL(b^teacher || b^student)              target-class KD: how sure of the label each network is
    NCKD = KL(p_hat^teacher || p_hat^student)      non-target-class KD: how the rest of the mass is spread

so KD weights NCKD down exactly where the teacher is confident. DKD weights the two terms freely and
ramps them in over the first epochs:

    loss = ce_weight * CE(student, labels) + warmup * (tckd_weight * T^2 * TCKD + nckd_weight * T^2 * NCKD)
    warmup = min(epoch / dkd_warmup_epochs, 1), epoch = 1, 2, ... (mdistiller's count; constant within an epoch)

The defaults are mdistiller's (megvii-research/mdistiller, the authors' code) for CIFAR-100: T 4, CE
weight 1, alpha = --tckd-weight 1, beta = --nckd-weight 8, 20 warm-up epochs. Its per-pair configs
(configs/cifar100/dkd/) lower beta to 2 for resnet56 -> resnet20 and resnet110 -> resnet32, and to 6 for
wrn_40_2 -> wrn_16_2 / wrn_40_1 and vgg13 -> vgg8 / MobileNetV2; ImageNet ResNet-34 -> ResNet-18
(configs/imagenet/r34_r18/dkd.yaml) takes T 1, beta 0.5 and a 1-epoch warm-up, i.e. none.

    python kd_dkd.py --teacher runs/<teacher_run>/best.pt              # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_dkd.py --dataset imagenet --data-dir /data/imagenet --model resnet18 \
        --teacher-model resnet34 --teacher-pretrained --temperature 1 --nckd-weight 0.5 --dkd-warmup-epochs 1 \
        --epochs 100 --batch-size 512 --lr 0.2 --lr-schedule multistep --milestones 30 60 90 --weight-decay 1e-4 \
        --warmup-epochs 0 --amp bf16

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
# ALGO LOGIC: the method's name, in results.json and checkpoints; report.py finds its published numbers by it
METHOD = "dkd"

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
from common.cache import TeacherCache, cache_key
from common.data import DATASETS, build_loaders
from common.models import MODEL_NAMES, create_model
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
    method = parser.add_argument_group("method: decoupled knowledge distillation")
    method.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    method.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    method.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    method.add_argument("--teacher-cache", default=None,
                        help="replay the teacher's logits written by cache_teacher.py: no teacher in the loop")
    method.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T (mdistiller's ImageNet: 1)")
    method.add_argument("--ce-weight", type=float, default=1.0, help="weight of the cross-entropy with the labels")
    method.add_argument("--tckd-weight", type=float, default=1.0, help="alpha: weight of the target-class term T^2 * TCKD")
    method.add_argument("--nckd-weight", type=float, default=8.0,
                        help="beta: weight of the non-target-class term T^2 * NCKD (mdistiller: 2, 6 or 8 by pair)")
    method.add_argument("--dkd-warmup-epochs", type=int, default=20,
                        help="the TCKD + NCKD part is scaled by min(epoch / this, 1), epochs counted from 1 as in "
                             "mdistiller: 1/20 in the first epoch, full from the 20th; 0 or 1: no warm-up (not the LR's "
                             "--warmup-epochs)")
    return parser.parse_args(argv)


# ALGO LOGIC: the two halves of the KD loss, and the warm-up
def _log_binary(logits, labels, temperature):
    """log b = [log p_t, log(1 - p_t)] at temperature T, shape (N, 2), by logsumexp: mdistiller takes the log
    of summed softmax probabilities, which is -inf (and NaN in the KL) once p_t rounds to 1."""
    scaled = logits.float() / temperature
    log_total = scaled.logsumexp(1)
    log_target = scaled.gather(1, labels[:, None]).squeeze(1)
    log_other = (scaled - 1000.0 * F.one_hot(labels, scaled.shape[1])).logsumexp(1)  # the target class drops out
    return torch.stack([log_target, log_other], 1) - log_total[:, None]


def tckd_loss(student_logits, teacher_logits, labels, temperature):
    """Target-class KD: T^2 * KL(b^teacher || b^student), b = [p_t, 1 - p_t] with p = softmax(z / T) and t the
    label; summed over the two entries and averaged over the batch (mdistiller divides the sum by N)."""
    log_b_student = _log_binary(student_logits, labels, temperature)
    log_b_teacher = _log_binary(teacher_logits, labels, temperature)
    return F.kl_div(log_b_student, log_b_teacher, reduction="batchmean", log_target=True) * temperature ** 2


def nckd_loss(student_logits, teacher_logits, labels, temperature):
    """Non-target-class KD: T^2 * KL(p_hat^teacher || p_hat^student), with p_hat_i = exp(z_i / T) /
    sum_{j != t} exp(z_j / T) for i != t, averaged over the batch. As in mdistiller the target logit is lowered
    by 1000 (not -inf: its probability is then 0 in both, and 0 * log 0 stays 0 in the KL), in float32 after
    the division by T."""
    gt_mask = 1000.0 * F.one_hot(labels, student_logits.shape[1])
    log_p_student = F.log_softmax(student_logits.float() / temperature - gt_mask, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature - gt_mask, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2


def dkd_warmup(epoch, warmup_epochs):
    """The factor of the TCKD + NCKD part in epoch `epoch` (0-based here): mdistiller's min(epoch / warmup, 1)
    with its epochs counted from 1, so 1 / warmup in the first epoch and 1 from epoch `warmup` on."""
    return min((epoch + 1) / warmup_epochs, 1.0) if warmup_epochs > 0 else 1.0


# ALGO LOGIC: everything that trains, in one module: the optimizer, torch.compile, DDP and the checkpoint take it
class Trainable(nn.Module):
    def __init__(self, student, args):
        super().__init__()
        self.student = student

    def forward(self, images):
        return self.student(images)


@user_errors
def main(args):
    # TRY NOT TO MODIFY: set-up, data, resume, teacher
    started = time.time()
    # ALGO LOGIC: the method's flags, range-checked with the shared ones
    check_flags(args, positive=("temperature",),
                non_negative=("ce_weight", "tckd_weight", "nckd_weight", "dkd_warmup_epochs"))
    dist = setup_distributed(args.device, args.batch_size, args.threads)
    device, master = dist.device, dist.is_master
    seed_everything(args.seed, dist.rank)
    # ALGO LOGIC: the train loader also yields each image's index, the row of a --teacher-cache
    train_loader, val_loader, num_classes, _ = build_loaders(args, device, dist.rank, dist.world_size, with_index=True)
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
    trainable = Trainable(model, args)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    trainable.to(device, memory_format=memory_format)
    autocast = autocast_context(args.amp, device)
    # the teacher is inert: eval mode (BatchNorm uses its running stats), no gradients, never in DDP
    teacher.eval().requires_grad_(False).to(device, memory_format=memory_format)
    # ALGO LOGIC: a --teacher-cache replaces the teacher's forward pass in the loop
    cache = (TeacherCache(args.teacher_cache, cache_key(args, train_loader, num_classes), args.epochs, device,
                          evaluation=(args.eval_on, args.amp)) if args.teacher_cache else None)
    # evaluated once per run: a resume reads its top-1 from the checkpoint, a cached run from the cache's manifest
    teacher_top1 = checkpoint["teacher_top1"] if checkpoint else cache.teacher_top1 if cache else None
    if teacher_top1 is None:
        teacher_top1 = evaluate(teacher, val_loader, autocast, device, memory_format)["top1"]
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
        for images, labels, indices in bar:
            images = images.contiguous(memory_format=memory_format)
            # ALGO LOGIC: one step's loss terms; losses["total"] is what the optimizer minimises
            if cache is not None:  # the teacher's logits on exactly these images, from cache_teacher.py
                teacher_logits = cache.logits(epoch, indices)
            else:
                with torch.no_grad(), autocast:
                    teacher_logits = teacher(images)
            with autocast:
                logits = train_model(images)
                losses = {"ce": criterion(logits, labels),
                          "tckd": tckd_loss(logits, teacher_logits, labels, args.temperature),
                          "nckd": nckd_loss(logits, teacher_logits, labels, args.temperature)}
                losses["total"] = args.ce_weight * losses["ce"] + dkd_warmup(epoch, args.dkd_warmup_epochs) * (
                    args.tckd_weight * losses["tckd"] + args.nckd_weight * losses["nckd"])
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
