"""Stage-wise training with feature maps (seed 004, akshaykvnit/knowledge_distillation): the
student learns the teacher's intermediate feature maps one stage at a time, then its classifier.

    phase k = 1..K:  min over stage k (the stem trains with stage 1)   MSE(A_k(S_k(x)), T_k(x)),
                     stages before k frozen: no gradients, BatchNorm in eval mode (statistics kept)
    phase K + 1:     min over the head (everything after stage K)      CE(student(x), y), body frozen
                     (--finetune-all: over the whole network)
    --simultaneous:  min over everything   CE(student(x), y) + sum_k MSE(A_k(S_k(x)), T_k(x))

S_k / T_k are the outputs of stage k of student and teacher (`common.models.STAGE_NODES`) and A_k
a learned 1x1 convolution where their channel counts differ (the FitNets regressor, Romero et al.
2015), the identity otherwise; adapters train with their stage and are saved as "adapters" next to
the plain student "model" in the checkpoints. Spatial sizes must match stage by stage.

Each phase gets a fresh optimizer and LR schedule (warm-up, milestones and steps count from the
phase's first epoch). A stage-wise run lasts K * --stage-epochs + --classifier-epochs epochs, which
is also --simultaneous's default --epochs. `charts/stage` and metrics.jsonl's "stage" say what an
epoch trained: k for stage k, K + 1 for the classifier, 0 for --simultaneous. --resume takes the
phase from the epoch and restores the optimizer and LR schedule only when it resumes inside the
phase they were saved in. The seed used Adam at lr 1e-4 throughout; the defaults here suit digits.

    python kd_stagewise.py --teacher runs/<teacher_run>/best.pt        # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_stagewise.py --dataset imagenette --data-dir /data/imagenette2 \
        --model resnet14_imagenet --teacher runs/<resnet34_teacher_run>/best.pt --stage-epochs 100 \
        --classifier-epochs 100 --lr 1e-4 --batch-size 64 --amp bf16

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
import argparse
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.models.feature_extraction import create_feature_extractor
from tqdm import tqdm

from common import UserError
from common.data import DATASETS, build_loaders
from common.models import MODEL_NAMES, STAGE_NODES, create_model, stage_modules, stage_shapes, with_stages
from common.utils import (RunLog, Throughput, all_reduce_sum, autocast_context, build_optimizer, build_scheduler,
                          cleanup_distributed, evaluate, find_resume, grad_scaler, load_checkpoint, load_teacher,
                          new_run_dir, rng_state, save_checkpoint, seed_everything, set_rng_state, setup_distributed, user_errors)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="digits", help=f"one of: {', '.join(DATASETS)}")
    data.add_argument("--data-dir", default="data", help="where the data set lives on disk")
    data.add_argument("--download", action="store_true", help="fetch CIFAR into --data-dir if missing")
    data.add_argument("--train-fraction", type=float, default=1.0, help="keep this stratified fraction of train")
    data.add_argument("--image-size", type=int, default=224, help="crop size for image-file and fake data")
    data.add_argument("--val-resize", type=int, default=256, help="val: resize shorter side, then centre crop")
    data.add_argument("--num-classes", type=int, default=1000, help="class count of --dataset fake")
    data.add_argument("--loader", default="auto", choices=["auto", "tensor", "dali", "torch"],
                      help="auto: tensor for digits/CIFAR/fake; for image files DALI (2.5x the DataLoader's "
                           "images/s on CPU), or torch when DALI is not installed")
    data.add_argument("--workers", type=int, default=4, help="DALI threads or DataLoader processes per rank")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="resnet20", help=f"one of: {', '.join(MODEL_NAMES)}")
    model.add_argument("--pretrained", action="store_true", help="start from torchvision's ImageNet weights")
    optim = parser.add_argument_group("optimisation (each phase: a fresh optimizer and LR schedule)")
    optim.add_argument("--epochs", type=int, default=0,
                       help="total epochs; 0: K * --stage-epochs + --classifier-epochs, the only value stage-wise accepts")
    optim.add_argument("--batch-size", type=int, default=64, help="global batch size, split across ranks")
    optim.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"], help="optimizer (seed: adam)")
    optim.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (seed: 1e-4)")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    optim.add_argument("--weight-decay", type=float, default=0.0, help="weight decay")
    optim.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the CE loss")
    sched = parser.add_argument_group("LR schedule (restarted in each phase)")
    sched.add_argument("--lr-schedule", default="cosine", choices=["multistep", "step", "cosine"], help="LR decay")
    sched.add_argument("--milestones", type=int, nargs="*", default=None,
                       help="multistep: epochs into the phase at which LR *= gamma (default: 50%% and 75%% of it)")
    sched.add_argument("--lr-step", type=int, default=30, help="step: LR *= gamma every this many epochs of a phase")
    sched.add_argument("--gamma", type=float, default=0.1, help="multistep/step decay factor")
    sched.add_argument("--warmup-epochs", type=int, default=0, help="linear LR warm-up epochs at the start of each phase")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast precision")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                       help="NHWC memory format, on by default: 1.1-1.3x the images/s of NCHW on CPU (docs/performance.md)")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the student and the teacher; on CPU 1.04-1.15x the images/s "
                            "after 10-20 s of compiling (docs/performance.md)")
    speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="random seed")
    run.add_argument("--exp-name", default=os.path.basename(__file__)[:-3], help="experiment name")
    run.add_argument("--out-dir", default="runs", help="runs are written to <out-dir>/<run_name>/")
    run.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: off)")
    run.add_argument("--log-interval", type=int, default=20, help="steps between loss logs")
    run.add_argument("--resume", default=None, help="checkpoint to continue from, or 'auto' for the newest last.pt")
    run.add_argument("--evaluate", action="store_true", help="evaluate the --resume checkpoint and exit")
    method = parser.add_argument_group("method: stage-wise training with feature maps")
    method.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    method.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    method.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    # defaults: 3 * 8 + 6 = 30 epochs for a CIFAR ResNet, train_teacher.py's budget
    method.add_argument("--stage-epochs", type=int, default=8, help="epochs of each stage's feature regression")
    method.add_argument("--classifier-epochs", type=int, default=6, help="epochs of the final CE phase")
    method.add_argument("--finetune-all", action="store_true", help="final phase trains the whole network, not the head")
    method.add_argument("--simultaneous", action="store_true",
                        help="the seed's baseline: all stage losses plus CE together for --epochs")
    return parser.parse_args(argv)


# ALGO LOGIC: the stage loss and the phase schedule
def stage_loss(student_feature, teacher_feature):
    """MSE(S_k, T_k) = mean over batch, channels and positions of (S_k - T_k)^2."""
    return F.mse_loss(student_feature.float(), teacher_feature.float())


def phase_plan(num_stages, args):
    """[(stage, first_epoch, epochs)] per phase. stage k = 1..K regresses stage k, K + 1 is the
    classifier phase, 0 the single phase of --simultaneous."""
    if args.simultaneous:
        return [(0, 0, args.epochs)]
    lengths = [args.stage_epochs] * num_stages + [args.classifier_epochs]
    return [(stage, sum(lengths[:stage - 1]), epochs) for stage, epochs in enumerate(lengths, start=1)]


def phase_at(plan, epoch):
    return next(phase for phase in reversed(plan) if phase[1] <= epoch)


def trained_groups(stage, num_stages, finetune_all):
    """Indices into `stage_modules` (0 stem, 1..K stages, K + 1 head) trained in a phase."""
    if stage == 0 or (stage == num_stages + 1 and finetune_all):
        return list(range(num_stages + 2))
    return [0, 1] if stage == 1 else [stage]


def freeze_all_but(groups, adapters, trained, stage):
    """Trained modules (and stage k's adapter) in train mode with gradients; every other module in
    eval mode (its BatchNorm statistics stay put) without. Returns the trained parameters."""
    params = []
    for index, modules in enumerate(groups):
        for module in modules:
            module.train(index in trained).requires_grad_(index in trained)
            params += [p for p in module.parameters(recurse=False) if index in trained]
    for index, adapter in enumerate(adapters, start=1):
        adapter.requires_grad_(stage in (0, index))
        params += [p for p in adapter.parameters() if stage in (0, index)]
    return params


class StudentWithAdapters(nn.Module):
    """forward(images) -> (logits, [A_1(S_1), ..., A_K(S_K)]); shares the student's parameters."""

    def __init__(self, model, name, student_shapes, teacher_shapes):
        super().__init__()
        self.stages = with_stages(model, name)
        self.adapters = nn.ModuleList(
            nn.Conv2d(student[0], teacher[0], 1, bias=False) if student[0] != teacher[0] else nn.Identity()
            for student, teacher in zip(student_shapes[1:], teacher_shapes[1:]))

    def forward(self, images):
        logits, features = self.stages(images)
        return logits, [adapter(feature) for adapter, feature in zip(self.adapters, features[1:])]


class StudentUpTo(nn.Module):
    """forward(images) -> A_k(S_k(images)): phase k runs the student only as far as stage k, as it
    does the teacher; the later stages and the head would cost 20% of the step for nothing trained.
    FX shares the student's modules, so training this trains the student."""

    def __init__(self, model, name, stage, adapter):
        super().__init__()
        self.node = STAGE_NODES[name][stage]
        modes = [(module, module.training) for module in model.modules()]
        self.body = create_feature_extractor(model, [self.node])
        for module, training in modes:  # tracing leaves every module in the model's mode: keep the frozen ones frozen
            module.training = training
        self.adapter = adapter

    def forward(self, images):
        return self.adapter(self.body(images)[self.node])


def phase_student(student, model, name, stage, num_stages):
    """The module a phase trains: the student up to stage k in phase k, else all of it."""
    return StudentUpTo(model, name, stage, student.adapters[stage - 1]) if 1 <= stage <= num_stages else student


def check_stages(student_name, student_shapes, teacher_name, teacher_shapes):
    """Feature maps are compared position by position: same stage count and spatial sizes needed."""
    if len(student_shapes) != len(teacher_shapes):
        raise UserError(f"--model {student_name} has {len(student_shapes) - 1} stages but teacher {teacher_name} has "
                        f"{len(teacher_shapes) - 1}; pick a student with the teacher's stage layout")
    for stage, (student, teacher) in enumerate(zip(student_shapes, teacher_shapes)):
        if stage > 0 and student[1:] != teacher[1:]:
            raise UserError(f"stage {stage}: student {student_name} outputs {student} (C, H, W) but teacher "
                            f"{teacher_name} {teacher}; spatial sizes must match, pick a student of the teacher's family")


@user_errors
def main(args):
    started = time.time()
    dist = setup_distributed(args.device, args.batch_size)
    device, master = dist.device, dist.is_master
    seed_everything(args.seed, dist.rank)
    resume_path = find_resume(args.resume, args.out_dir, args.exp_name)
    checkpoint = load_checkpoint(resume_path) if resume_path else None
    if args.evaluate and checkpoint is None:
        raise UserError("--evaluate needs a checkpoint: pass --resume PATH")
    if min(args.stage_epochs, args.classifier_epochs) < 1:
        raise UserError("--stage-epochs and --classifier-epochs must be at least 1")
    train_loader, val_loader, num_classes, image_shape = build_loaders(args, device, dist.rank, dist.world_size)
    teacher, teacher_name = load_teacher(args, num_classes)

    model = create_model(args.model, num_classes, args.pretrained)
    student_shapes = stage_shapes(model, args.model, image_shape)
    teacher_shapes = stage_shapes(teacher, teacher_name, image_shape)
    check_stages(args.model, student_shapes, teacher_name, teacher_shapes)
    num_stages = len(student_shapes) - 1
    stagewise_epochs = num_stages * args.stage_epochs + args.classifier_epochs
    if not args.simultaneous and args.epochs not in (0, stagewise_epochs):
        raise UserError(f"stage-wise training lasts {num_stages} stages x --stage-epochs {args.stage_epochs} + "
                        f"--classifier-epochs {args.classifier_epochs} = {stagewise_epochs} epochs: drop --epochs {args.epochs}")
    args.epochs = args.epochs or stagewise_epochs  # args.json and results.json record the real total
    student = StudentWithAdapters(model, args.model, student_shapes, teacher_shapes)
    if checkpoint is not None:
        if (checkpoint["model_name"], checkpoint["num_classes"]) != (args.model, num_classes):
            raise UserError(f"{resume_path} holds {checkpoint['model_name']} with {checkpoint['num_classes']} "
                            f"classes, not --model {args.model} with {num_classes} classes of {args.dataset}")
        model.load_state_dict(checkpoint["model"])
        if not args.evaluate:
            if "adapters" not in checkpoint:
                raise UserError(f"{resume_path} was not written by kd_stagewise.py: it has no adapters to resume")
            student.adapters.load_state_dict(checkpoint["adapters"])
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    student.to(device, memory_format=memory_format)
    autocast = autocast_context(args.amp, device)
    # the teacher is inert: eval mode (BatchNorm uses its running stats), no gradients, never in DDP
    teacher.eval().requires_grad_(False).to(device, memory_format=memory_format)
    teacher_top1 = evaluate(teacher, val_loader, autocast, device, memory_format)["top1"]
    if master:
        print(f"teacher {teacher_name}: top1 {teacher_top1:.2f}; stage shapes student {student_shapes[1:]}, "
              f"teacher {teacher_shapes[1:]}")

    if args.evaluate:
        metrics = evaluate(model, val_loader, autocast, device, memory_format)
        if master:
            print(f"FINAL top1={metrics['top1']:.2f} top5={metrics['top5']:.2f} best_top1={checkpoint['best_top1']:.2f}")
        return cleanup_distributed()

    scaler = grad_scaler(args.amp, device)
    start_epoch, best_top1, best_epoch, prior_wall = 0, 0.0, 0, 0.0
    if checkpoint is not None:
        scaler.load_state_dict(checkpoint["scaler"])
        if dist.rank == 0:  # only the master's RNG state is saved; other ranks re-seed per epoch
            set_rng_state(checkpoint["rng"])
        else:
            seed_everything(args.seed + 1000 * checkpoint["epoch"], dist.rank)
        start_epoch, best_top1, best_epoch = checkpoint["epoch"], checkpoint["best_top1"], checkpoint["best_epoch"]
        prior_wall = checkpoint["wall_time_s"]
        run_dir = os.path.dirname(os.path.abspath(resume_path))
    else:
        run_name = f"{args.exp_name}__{args.dataset}__{args.model}__seed{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = new_run_dir(args.out_dir, run_name)

    # nanoGPT's order: to(device) -> compile -> DDP; the unwrapped `model` is what gets saved
    eval_model = torch.compile(student) if args.compile else student
    log = RunLog(run_dir, args, master, start_epoch)
    if master:
        print(f"run dir: {run_dir}  ({dist.world_size} process(es) on {device}, {len(train_loader)} steps/epoch)")

    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    groups = stage_modules(model, args.model)
    plan = phase_plan(num_stages, args)
    classifier_stage = num_stages + 1
    optimizer, phase = None, None

    planned_steps = (args.epochs - start_epoch) * len(train_loader)
    throughput = Throughput(device, min(planned_steps, args.max_steps or planned_steps))
    step = start_epoch * len(train_loader)
    metrics, epochs_done = None, start_epoch
    for epoch in range(start_epoch, args.epochs):
        if args.max_steps and step >= args.max_steps:
            break
        stage, _, phase_epochs = phase_at(plan, epoch)
        trained = trained_groups(stage, num_stages, args.finetune_all)
        params = freeze_all_but(groups, student.adapters, trained, stage)  # every epoch: evaluate() resets modes
        if (stage, trained) != phase:  # a new phase: fresh optimizer and LR schedule; DDP over what it trains
            phase = (stage, trained)
            optimizer = build_optimizer(args, params)
            scheduler = build_scheduler(args, optimizer, len(train_loader), epochs=phase_epochs)
            if checkpoint is not None and epoch == start_epoch and checkpoint["phase"] == [stage, trained]:
                optimizer.load_state_dict(checkpoint["optimizer"])  # resumed inside the phase it was saved in
                scheduler.load_state_dict(checkpoint["scheduler"])
            phase_model = phase_student(student, model, args.model, stage, num_stages)
            if phase_model is student:
                phase_model = eval_model  # compiled once, shared with evaluation
            elif args.compile:
                phase_model = torch.compile(phase_model)
            train_model = DDP(phase_model, device_ids=[device.index] if device.type == "cuda" else None) \
                if dist.world_size > 1 else phase_model
            # the teacher runs only as far as the stage being learnt: FX drops the layers after it
            teacher_nodes = STAGE_NODES[teacher_name][:stage + 1] if stage else STAGE_NODES[teacher_name]
            teacher_stages = create_feature_extractor(teacher, teacher_nodes).eval()
            teacher_stages = torch.compile(teacher_stages) if args.compile else teacher_stages
        has_logits = not 1 <= stage <= num_stages  # stage phases stop at stage k: no CE to log
        train_loader.set_epoch(epoch)
        loss_sums, epoch_steps = torch.zeros(3, device=device), 0  # stage, ce, total
        zero = torch.zeros((), device=device)  # the loss term a phase does not compute
        throughput.start()
        bar = tqdm(throughput.timed(train_loader), total=len(train_loader),
                   desc=f"epoch {epoch + 1}/{args.epochs} stage {stage}", disable=not master, leave=False)
        for images, labels in bar:
            # ALGO LOGIC: one training step
            images = images.contiguous(memory_format=memory_format)
            if stage != classifier_stage:
                with torch.no_grad(), autocast:
                    teacher_features = list(teacher_stages(images).values())
            with autocast:
                if stage == classifier_stage:
                    loss_ce = criterion(train_model(images)[0], labels)
                    loss_stage = zero
                    loss = loss_ce
                elif stage == 0:
                    logits, features = train_model(images)
                    loss_ce = criterion(logits, labels)
                    loss_stage = sum(stage_loss(student_feature, teacher_feature)
                                     for student_feature, teacher_feature in zip(features, teacher_features[1:]))
                    loss = loss_ce + loss_stage
                else:  # the student ends at stage k: no logits, no CE
                    loss_stage = stage_loss(train_model(images), teacher_features[stage])
                    loss_ce = zero
                    loss = loss_stage
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            loss_sums += torch.stack([loss_stage, loss_ce, loss]).detach()
            step, epoch_steps = step + 1, epoch_steps + 1
            throughput.step(len(images) * dist.world_size)
            if step % args.log_interval == 0 and master:  # the only host syncs in the loop
                bar.set_postfix(loss=f"{loss.item():.3f}")
                log.scalars(step, {"losses/stage": loss_stage.item(), "losses/total": loss.item(),
                                   "charts/lr": scheduler.get_last_lr()[0], "charts/stage": stage,
                                   **({"losses/ce": loss_ce.item()} if has_logits else {})})
            if args.max_steps and step >= args.max_steps:
                break
        throughput.stop()
        epochs_done = epoch + 1

        metrics = evaluate(eval_model, val_loader, autocast, device, memory_format)
        loss_stage_mean, loss_ce_mean, train_loss = (all_reduce_sum(loss_sums) / max(1, epoch_steps * dist.world_size)).tolist()
        if metrics["top1"] > best_top1:
            best_top1, best_epoch = metrics["top1"], epoch + 1
        record = {"epoch": epoch + 1, "step": step, "stage": stage, "train_loss": train_loss,
                  "loss_stage": loss_stage_mean, "loss_ce": loss_ce_mean if has_logits else None,
                  "val_loss": metrics["loss"],
                  "top1": metrics["top1"], "top5": metrics["top5"], "lr": scheduler.get_last_lr()[0],
                  "images_per_sec": throughput.epoch_rate,
                  "data_wait_fraction": throughput.epoch_wait_fraction, "time_s": time.time() - started + prior_wall}
        log.epoch(record)
        log.scalars(epoch + 1, {"losses/train": train_loss, "losses/train_stage": loss_stage_mean,
                                "losses/val": metrics["loss"], "eval/top1": metrics["top1"],
                                "eval/top5": metrics["top5"], "charts/images_per_sec": throughput.epoch_rate,
                                "charts/data_wait_fraction": throughput.epoch_wait_fraction,
                                "charts/stage": stage, **({"losses/train_ce": loss_ce_mean} if has_logits else {})})
        if master:
            print(f"epoch {epoch + 1}/{args.epochs}  stage {stage}  loss {train_loss:.4f}  top1 {metrics['top1']:.2f}  "
                  f"top5 {metrics['top5']:.2f}  {throughput.epoch_rate:.0f} img/s")
            state = {"model": model.state_dict(), "adapters": student.adapters.state_dict(), "model_name": args.model,
                     "num_classes": num_classes, "dataset": args.dataset, "args": vars(args), "epoch": epoch + 1,
                     "phase": [stage, trained], "best_top1": best_top1, "best_epoch": best_epoch,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng_state(), "top1": metrics["top1"],
                     "wall_time_s": time.time() - started + prior_wall}
            save_checkpoint(os.path.join(run_dir, "last.pt"), state)
            if best_epoch == epoch + 1:
                save_checkpoint(os.path.join(run_dir, "best.pt"), state)

    if metrics is None:  # nothing left to train (resumed a finished run): report the checkpoint as it is
        metrics = evaluate(eval_model, val_loader, autocast, device, memory_format)
    results = {"top1": metrics["top1"], "top5": metrics["top5"], "best_top1": best_top1, "best_epoch": best_epoch,
               "epochs": epochs_done,
               "steps": step, "wall_time_s": time.time() - started + prior_wall,
               "images_per_sec": throughput.rate, "data_wait_fraction": throughput.wait_fraction,
               "model": args.model, "dataset": args.dataset,
               "world_size": dist.world_size, "teacher": teacher_name, "teacher_top1": teacher_top1,
               "method": "simultaneous" if args.simultaneous else "stagewise"}
    log.results(results)
    log.close()
    if master:
        print(f"FINAL top1={metrics['top1']:.2f} top5={metrics['top5']:.2f} best_top1={best_top1:.2f}")
    cleanup_distributed()


if __name__ == "__main__":
    main(parse_args())
