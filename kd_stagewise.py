"""Stage-wise training with feature maps (seed 004, IvLabs/stagewise-knowledge-distillation): the
student learns the teacher's feature maps one at a time, its stem first, then its classifier.

    phase k = 0..N-1:  min over group k (0 the stem, k stage k)      MSE(A_k(S_k(x)), T_p(k)(x)),
                       every other group frozen (no gradients)
    phase N:           min over the groups after map N-1 (the head)  CE(student(x), y)
                       (--finetune-all: over the whole network)
    --simultaneous:    min over everything   (CE(student(x), y) + sum_{k<N} MSE(A_k(S_k(x)), T_p(k)(x))) / (1 + N)

S_0 is the student's stem output, S_k that of stage k (`common.models.STAGE_NODES`); N = --feature-maps,
by default all K + 1. Map k learns teacher map p(k), the first after p(k - 1) of its height and width
(one to one within a family; seed 004's "smallest" skips the teacher's layer1). A_k is a learned 1x1
conv where channel counts differ (FitNets, Romero et al. 2015), else the identity; adapters are saved
as "adapters" next to the plain student "model". The archived code behind the seed's tables divided
only the logged simultaneous loss by 1 + N, which under Adam changes nothing but the role of eps.

Each phase gets a fresh optimizer and LR schedule and (--phase-start best, the seed) starts from the
previous phase's epoch of lowest validation MSE, student in eval mode. --frozen-bn train keeps the
whole student in train mode, as the seed does: frozen stages go on updating their BatchNorm statistics.
A stage-wise run lasts N * --stage-epochs + --classifier-epochs epochs, also --simultaneous's default.
metrics.jsonl's "stage" (`charts/stage`): k for map k, K + 1 the head, -1 everything (--simultaneous).
--resume restores the phase, its best epoch so far and, within the phase, optimizer and LR schedule.

    python kd_stagewise.py --teacher runs/<teacher_run>/best.pt        # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_stagewise.py --dataset imagenette --data-dir /data/imagenette \
        --model sw_resnet14 --teacher runs/<fastai_resnet34_teacher_run>/best.pt --stage-epochs 100 \
        --classifier-epochs 100 --lr 1e-4 --lr-schedule step --gamma 1 --batch-size 64 --frozen-bn train

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
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
from common.models import MODEL_NAMES, STAGE_NODES, create_model, stage_modules, stage_shapes, with_stages
from common.utils import (RunLog, Throughput, all_reduce_sum, autocast_context, build_optimizer, build_scheduler,
                          cleanup_distributed, evaluate, evaluate_checkpoint, find_resume, grad_scaler, init_from,
                          load_checkpoint, load_teacher, new_run_dir, rng_state, save_checkpoint, seed_everything,
                          set_rng_state, setup_distributed, user_errors)


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
    optim = parser.add_argument_group("optimisation (each phase: a fresh optimizer and LR schedule)")
    optim.add_argument("--epochs", type=int, default=0,
                       help="total epochs; 0: N * --stage-epochs + --classifier-epochs, the only value stage-wise accepts")
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
    speed.add_argument("--threads", type=int, default=0,
                       help="CPU threads per process; 0: OMP_NUM_THREADS if set, else the CPUs free when the run starts")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="random seed")
    run.add_argument("--exp-name", default=None, help="experiment name (default: kd_stagewise, or kd_stagewise_simultaneous)")
    run.add_argument("--out-dir", default="runs", help="runs are written to <out-dir>/<run_name>/")
    run.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: off)")
    run.add_argument("--log-interval", type=int, default=20, help="steps between loss logs")
    run.add_argument("--resume", default=None, help="checkpoint to continue from, or 'auto' for the newest last.pt")
    run.add_argument("--evaluate", action="store_true", help="evaluate the --resume checkpoint and exit")
    method = parser.add_argument_group("method: stage-wise training with feature maps")
    method.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    method.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    method.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    # defaults: 4 * 6 + 6 = 30 epochs for a CIFAR ResNet (stem and 3 stages), train_teacher.py's budget
    method.add_argument("--stage-epochs", type=int, default=6, help="epochs of each feature map's regression")
    method.add_argument("--classifier-epochs", type=int, default=6, help="epochs of the final CE phase")
    method.add_argument("--finetune-all", action="store_true", help="final phase trains the whole network, not the head")
    method.add_argument("--simultaneous", action="store_true",
                        help="the seed's baseline: all feature losses plus CE together for --epochs")
    method.add_argument("--feature-maps", type=int, default=0,
                        help="use the first N feature maps, the stem's first (the seed's 5/4/3-map ablation); 0: all")
    method.add_argument("--phase-start", default="best", choices=["best", "last"],
                        help="a phase starts from the previous one's epoch of lowest val MSE (best, the seed) or its last")
    method.add_argument("--frozen-bn", default="eval", choices=["eval", "train"],
                        help="BatchNorm of frozen groups: eval keeps its statistics; train (the seed) keeps the whole "
                             "student in train mode, so they normalise with batch statistics and update them")
    return parser.parse_args(argv)


# ALGO LOGIC: the feature loss, the pairing of maps and the phase schedule
def stage_loss(student_feature, teacher_feature):
    """MSE(S_k, T_k) = mean over batch, channels and positions of (S_k - T_k)^2."""
    return F.mse_loss(student_feature.float(), teacher_feature.float())


def simultaneous_loss(loss_ce, loss_stages):
    """(CE + sum_k MSE_k) / (1 + number of maps), the seed's simultaneous objective."""
    return (loss_ce + sum(loss_stages)) / (1 + len(loss_stages))


def pair_maps(student_name, student_shapes, teacher_name, teacher_shapes):
    """p(k) for each student map k: the first teacher map after p(k - 1) with map k's height and width."""
    pairs, start = [], 0
    for k, shape in enumerate(student_shapes):
        match = next((i for i in range(start, len(teacher_shapes)) if teacher_shapes[i][1:] == shape[1:]), None)
        if match is None:
            after = f" after its map {start - 1}" if start else ""
            raise UserError(f"map {k} of --model {student_name} is {shape} (C, H, W) but teacher {teacher_name} has no "
                            f"map of its size{after} (its maps: {teacher_shapes}); pick a student of the teacher's family")
        pairs.append(match)
        start = match + 1
    return pairs


def phase_plan(num_maps, num_stages, args):
    """[(stage, first_epoch, epochs)] per phase: stage k < num_maps regresses map k, K + 1 is the
    classifier phase, -1 the single phase of --simultaneous."""
    if args.simultaneous:
        return [(-1, 0, args.epochs)]
    stages = list(range(num_maps)) + [num_stages + 1]
    lengths = [args.stage_epochs] * num_maps + [args.classifier_epochs]
    return [(stage, sum(lengths[:i]), epochs) for i, (stage, epochs) in enumerate(zip(stages, lengths))]


def phase_at(plan, epoch):
    return next(phase for phase in reversed(plan) if phase[1] <= epoch)


def trained_groups(stage, num_maps, num_stages, finetune_all):
    """Indices into `stage_modules` (0 stem, 1..K stages, K + 1 head) trained in a phase: map k's
    group; in the classifier phase the groups after the last map learnt (the head when all are)."""
    everything = list(range(num_stages + 2))
    if stage == -1 or (stage == num_stages + 1 and finetune_all):
        return everything
    return everything[num_maps:] if stage == num_stages + 1 else [stage]


def freeze_all_but(groups, adapters, trained, stage, frozen_bn="eval"):
    """Gradients for the trained groups (and map k's adapter) only. Frozen groups in eval mode, their
    BatchNorm statistics kept, or with frozen_bn "train" in train mode (the seed). Returns the trained parameters."""
    params = []
    for index, modules in enumerate(groups):
        for module in modules:
            module.train(index in trained or frozen_bn == "train").requires_grad_(index in trained)
            params += [p for p in module.parameters(recurse=False) if index in trained]
    for index, adapter in enumerate(adapters):
        adapter.requires_grad_(stage in (-1, index))
        params += [p for p in adapter.parameters() if stage in (-1, index)]
    return params


class StudentWithAdapters(nn.Module):
    """forward(images) -> (logits, [A_0(S_0), ..., A_{N-1}(S_{N-1})]); shares the student's parameters.
    `teacher_shapes[k]` is the shape of the teacher map that student map k learns."""

    def __init__(self, model, name, student_shapes, teacher_shapes):
        super().__init__()
        self.stages = with_stages(model, name)
        self.adapters = nn.ModuleList(
            nn.Conv2d(student[0], teacher[0], 1, bias=False) if student[0] != teacher[0] else nn.Identity()
            for student, teacher in zip(student_shapes, teacher_shapes))

    def forward(self, images):
        logits, features = self.stages(images)
        return logits, [adapter(feature) for adapter, feature in zip(self.adapters, features)]


class StudentUpTo(nn.Module):
    """forward(images) -> A_k(S_k(images)): phase k runs the student, like the teacher, only as far as
    map k: the rest would cost 20% of the step for nothing trained (with --frozen-bn train, the seed
    would also update their BatchNorm statistics, which their own phase renews). FX shares the modules."""

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


def phase_student(student, model, name, stage, num_maps):
    """The module a phase trains: the student up to map k in phase k, else all of it."""
    return StudentUpTo(model, name, stage, student.adapters[stage]) if 0 <= stage < num_maps else student


@torch.no_grad()
def val_stage_loss(phase_model, teacher_stages, loader, autocast, device, memory_format):
    """The phase's MSE over the validation set, student in eval mode (freeze_all_but restores the modes)."""
    phase_model.eval()
    totals = torch.zeros(2, device=device, dtype=torch.float64)  # sum of per-image MSE, images
    for images, _ in loader:
        images = images.contiguous(memory_format=memory_format)
        with autocast:
            loss = stage_loss(phase_model(images), next(iter(teacher_stages(images).values())))
        totals[0] += loss * len(images)
        totals[1] += len(images)
    total, count = all_reduce_sum(totals).tolist()
    return total / count


@user_errors
def main(args):
    started = time.time()
    dist = setup_distributed(args.device, args.batch_size, args.threads)
    device, master = dist.device, dist.is_master
    seed_everything(args.seed, dist.rank)
    args.exp_name = args.exp_name or ("kd_stagewise_simultaneous" if args.simultaneous else "kd_stagewise")
    resume_path = find_resume(args.resume, args.out_dir, args.exp_name)
    checkpoint = load_checkpoint(resume_path) if resume_path else None
    if args.evaluate and checkpoint is None:
        raise UserError("--evaluate needs a checkpoint: pass --resume PATH")
    if min(args.stage_epochs, args.classifier_epochs) < 1:
        raise UserError("--stage-epochs and --classifier-epochs must be at least 1")
    train_loader, val_loader, num_classes, image_shape = build_loaders(args, device, dist.rank, dist.world_size)
    if args.evaluate:  # the checkpoint's own network, whatever --model says; no teacher needed
        metrics = evaluate_checkpoint(checkpoint, num_classes, val_loader, args, device)
        if master:
            print(f"FINAL top1={metrics['top1']:.2f} top5={metrics['top5']:.2f} best_top1={checkpoint['best_top1']:.2f}")
        return cleanup_distributed()
    teacher, teacher_name = load_teacher(args, num_classes)

    model = create_model(args.model, num_classes, args.pretrained, args.zero_init_residual)
    if args.init_from:
        init_from(model, args.model, args.init_from)
    student_shapes = stage_shapes(model, args.model, image_shape)
    teacher_shapes = stage_shapes(teacher, teacher_name, image_shape)
    num_stages = len(student_shapes) - 1
    if not 0 <= args.feature_maps <= num_stages + 1:
        raise UserError(f"--feature-maps {args.feature_maps}: {args.model} has {num_stages + 1} (stem and stages)")
    num_maps = args.feature_maps or num_stages + 1
    pairs = pair_maps(args.model, student_shapes[:num_maps], teacher_name, teacher_shapes)
    stagewise_epochs = num_maps * args.stage_epochs + args.classifier_epochs
    if not args.simultaneous and args.epochs not in (0, stagewise_epochs):
        raise UserError(f"stage-wise training lasts {num_maps} feature maps x --stage-epochs {args.stage_epochs} + "
                        f"--classifier-epochs {args.classifier_epochs} = {stagewise_epochs} epochs: drop --epochs {args.epochs}")
    args.epochs = args.epochs or stagewise_epochs  # args.json and results.json record the real total
    student = StudentWithAdapters(model, args.model, student_shapes[:num_maps], [teacher_shapes[i] for i in pairs])
    if checkpoint is not None:
        if (checkpoint["model_name"], checkpoint["num_classes"]) != (args.model, num_classes):
            raise UserError(f"{resume_path} holds {checkpoint['model_name']} with {checkpoint['num_classes']} "
                            f"classes, not --model {args.model} with {num_classes} classes of {args.dataset}")
        model.load_state_dict(checkpoint["model"])
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
        print(f"teacher {teacher_name}: top1 {teacher_top1:.2f}; student maps {student_shapes[:num_maps]} learn "
              f"teacher maps {pairs} of {teacher_shapes}")

    scaler = grad_scaler(args.amp, device)
    start_epoch, best_top1, best_epoch, prior_wall = 0, 0.0, 0, 0.0
    stage_best = None  # {"stage", "epoch", "val_stage_loss", "model", "adapters"}: the feature phase's best epoch so far
    if checkpoint is not None:
        scaler.load_state_dict(checkpoint["scaler"])
        if dist.rank == 0:  # only the master's RNG state is saved; other ranks re-seed per epoch
            set_rng_state(checkpoint["rng"])
        else:
            seed_everything(args.seed + 1000 * checkpoint["epoch"], dist.rank)
        start_epoch, best_top1, best_epoch = checkpoint["epoch"], checkpoint["best_top1"], checkpoint["best_epoch"]
        prior_wall, stage_best = checkpoint["wall_time_s"], checkpoint["stage_best"]
        run_dir = os.path.dirname(os.path.abspath(resume_path))
    else:
        run_name = f"{args.exp_name}__{args.dataset}__{args.model}__seed{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = new_run_dir(args.out_dir, run_name)

    # nanoGPT's order: to(device) -> compile -> DDP; the unwrapped `model` is what gets saved
    eval_model = torch.compile(student) if args.compile else student
    log = RunLog(run_dir, args, master, start_epoch)
    if master:
        print(f"run dir: {run_dir}  ({dist.world_size} process(es) on {device}, {torch.get_num_threads()} CPU "
              f"thread(s) each, {len(train_loader)} steps/epoch)")

    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    groups = stage_modules(model, args.model)
    plan = phase_plan(num_maps, num_stages, args)
    classifier_stage = num_stages + 1
    teacher_nodes = [STAGE_NODES[teacher_name][i] for i in pairs]
    optimizer, phase = None, None

    planned_steps = (args.epochs - start_epoch) * len(train_loader)
    throughput = Throughput(device, min(planned_steps, args.max_steps or planned_steps))
    step = start_epoch * len(train_loader)
    metrics, epochs_done = None, start_epoch
    for epoch in range(start_epoch, args.epochs):
        if args.max_steps and step >= args.max_steps:
            break
        stage, _, phase_epochs = phase_at(plan, epoch)
        trained = trained_groups(stage, num_maps, num_stages, args.finetune_all)
        # every epoch, as evaluation resets the modes
        params = freeze_all_but(groups, student.adapters, trained, stage, args.frozen_bn)
        if (stage, trained) != phase:  # a new phase: fresh optimizer and LR schedule; DDP over what it trains
            phase = (stage, trained)
            if stage_best is not None and stage_best["stage"] != stage:  # ALGO LOGIC: from the last phase's best epoch
                model.load_state_dict(stage_best["model"])
                student.adapters.load_state_dict(stage_best["adapters"])
                stage_best = None
            optimizer = build_optimizer(args, params)
            scheduler = build_scheduler(args, optimizer, len(train_loader), epochs=phase_epochs)
            if checkpoint is not None and epoch == start_epoch and checkpoint["phase"] == [stage, trained]:
                optimizer.load_state_dict(checkpoint["optimizer"])  # resumed inside the phase it was saved in
                scheduler.load_state_dict(checkpoint["scheduler"])
            phase_model = phase_student(student, model, args.model, stage, num_maps)
            if phase_model is student:
                phase_model = eval_model  # compiled once, shared with evaluation
            elif args.compile:
                phase_model = torch.compile(phase_model)
            train_model = DDP(phase_model, device_ids=[device.index] if device.type == "cuda" else None) \
                if dist.world_size > 1 else phase_model
            # the teacher runs only as far as the map being learnt (FX drops the layers after it); not for the head
            if stage != classifier_stage:
                nodes = teacher_nodes if stage == -1 else [teacher_nodes[stage]]
                teacher_stages = create_feature_extractor(teacher, nodes).eval()
                teacher_stages = torch.compile(teacher_stages) if args.compile else teacher_stages
        has_logits = stage in (-1, classifier_stage)  # feature phases stop at map k: no CE to log
        train_loader.set_epoch(epoch)
        loss_sums, epoch_steps = torch.zeros(3, device=device), 0  # stage, ce, total
        zero = torch.zeros((), device=device)  # the loss term a phase does not compute
        throughput.start()
        bar = tqdm(throughput.timed(train_loader), total=len(train_loader),
                   desc=f"epoch {epoch + 1}/{args.epochs} stage {stage}", disable=not (master and sys.stdout.isatty()), leave=False)
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
                elif stage == -1:
                    logits, features = train_model(images)
                    loss_ce = criterion(logits, labels)
                    loss_stages = [stage_loss(student_feature, teacher_feature)
                                   for student_feature, teacher_feature in zip(features, teacher_features)]
                    loss_stage = sum(loss_stages)
                    loss = simultaneous_loss(loss_ce, loss_stages)
                else:  # the student ends at map k: no logits, no CE
                    loss_stage = stage_loss(train_model(images), teacher_features[0])
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
                if bar.disable:  # no progress bar in a redirected log: one line per interval instead
                    print(f"epoch {epoch + 1} step {step}  loss {loss.item():.4f}", flush=True)
                log.scalars(step, {"losses/stage": loss_stage.item(), "losses/total": loss.item(),
                                   "charts/lr": scheduler.get_last_lr()[0], "charts/stage": stage,
                                   **({"losses/ce": loss_ce.item()} if has_logits else {})})
            if args.max_steps and step >= args.max_steps:
                break
        throughput.stop()
        epochs_done = epoch + 1

        val_stage = None
        if 0 <= stage < num_maps:  # ALGO LOGIC: keep the feature phase's epoch of lowest validation MSE
            val_stage = val_stage_loss(phase_model, teacher_stages, val_loader, autocast, device, memory_format)
            if args.phase_start == "best" and (stage_best is None or val_stage < stage_best["val_stage_loss"]):
                stage_best = {"stage": stage, "epoch": epoch + 1, "val_stage_loss": val_stage, **{
                    part: {key: value.to("cpu", copy=True) for key, value in module.state_dict().items()}
                    for part, module in (("model", model), ("adapters", student.adapters))}}
        metrics = evaluate(eval_model, val_loader, autocast, device, memory_format)
        loss_stage_mean, loss_ce_mean, train_loss = (all_reduce_sum(loss_sums) / max(1, epoch_steps * dist.world_size)).tolist()
        if metrics["top1"] > best_top1:
            best_top1, best_epoch = metrics["top1"], epoch + 1
        record = {"epoch": epoch + 1, "step": step, "stage": stage, "train_loss": train_loss,
                  "loss_stage": loss_stage_mean, "loss_ce": loss_ce_mean if has_logits else None,
                  "val_loss": metrics["loss"], "val_stage_loss": val_stage,
                  "top1": metrics["top1"], "top5": metrics["top5"], "lr": scheduler.get_last_lr()[0],
                  "images_per_sec": throughput.epoch_rate,
                  "data_wait_fraction": throughput.epoch_wait_fraction, "time_s": time.time() - started + prior_wall}
        log.epoch(record)
        log.scalars(epoch + 1, {"losses/train": train_loss, "losses/train_stage": loss_stage_mean,
                                "losses/val": metrics["loss"], "eval/top1": metrics["top1"],
                                "eval/top5": metrics["top5"], "charts/images_per_sec": throughput.epoch_rate,
                                "charts/data_wait_fraction": throughput.epoch_wait_fraction,
                                "charts/stage": stage, **({"losses/train_ce": loss_ce_mean} if has_logits else {}),
                                **({"losses/val_stage": val_stage} if val_stage is not None else {})})
        if master:
            print(f"epoch {epoch + 1}/{args.epochs}  stage {stage}  loss {train_loss:.4f}  "
                  + (f"val MSE {val_stage:.4f}  " if val_stage is not None else "")
                  + f"top1 {metrics['top1']:.2f}  top5 {metrics['top5']:.2f}  {throughput.epoch_rate:.0f} img/s")
            state = {"model": model.state_dict(), "adapters": student.adapters.state_dict(), "model_name": args.model,
                     "num_classes": num_classes, "dataset": args.dataset, "args": vars(args), "epoch": epoch + 1,
                     "phase": [stage, trained], "best_top1": best_top1, "best_epoch": best_epoch,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng_state(), "top1": metrics["top1"], "stage_best": stage_best,
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
