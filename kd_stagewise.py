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
conv where channel counts differ (FitNets, Romero et al. 2015), else the identity; the checkpoint's
"trainable" holds student and adapters, its "model" the plain student. The archived code behind the
seed's tables divided only the logged simultaneous loss by 1 + N, which under Adam changes nothing but
the role of eps.

Each phase gets a fresh optimizer and LR schedule and (--phase-start best, the seed) starts from the
previous phase's epoch of lowest validation MSE, student in eval mode. --frozen-bn train keeps the
whole student in train mode, as the seed does: frozen stages go on updating their BatchNorm statistics.
A stage-wise run lasts N * --stage-epochs + --classifier-epochs epochs, also --simultaneous's default.
metrics.jsonl's "stage" (`charts/stage`): k for map k, K + 1 the head, -1 everything (--simultaneous);
"loss_stage" (the MSE) and "loss_ce" appear in the epochs whose phase computes them. --resume restores
the phase, its optimizer, LR schedule and best epoch so far.

    python kd_stagewise.py --teacher runs/<teacher_run>/best.pt        # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_stagewise.py --dataset imagenette --data-dir /data/imagenette \
        --model sw_resnet14 --teacher runs/<fastai_resnet34_teacher_run>/best.pt --stage-epochs 100 \
        --classifier-epochs 100 --lr 1e-4 --lr-schedule step --gamma 1 --batch-size 64 --frozen-bn train

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
# ALGO LOGIC: the method's name, in results.json and checkpoints; report.py finds its published numbers by it
METHOD = "stagewise"  # --simultaneous, the seed's baseline, is "simultaneous" (main)

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
    optim = parser.add_argument_group("optimisation (each phase: a fresh optimizer and LR schedule)")
    optim.add_argument("--epochs", type=int, default=None,
                       help="total epochs; None: N * --stage-epochs + --classifier-epochs, the only value stage-wise accepts")
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
    run.add_argument("--data-seed", type=int, default=None,
                     help="seed of the order and augmentation of the data (default: --seed); a teacher cache needs it")
    run.add_argument("--exp-name", default=None, help="experiment name (default: kd_stagewise, or kd_stagewise_simultaneous)")
    run.add_argument("--out-dir", default="runs", help="runs are written to <out-dir>/<run_name>/")
    run.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: off)")
    run.add_argument("--log-interval", type=int, default=20, help="steps between loss logs")
    run.add_argument("--resume", default=None,
                     help="a run's last.pt to continue, or 'auto': the newest run of this script with these settings, if any")
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


# ALGO LOGIC: everything that trains, in one module: the optimizer, torch.compile, DDP and the checkpoint take it
class Trainable(nn.Module):
    """The student and the adapters A_k. forward(images, stage): in phase k (0 <= stage < N) the student
    runs, like the teacher, only as far as map k -> A_k(S_k): the rest would cost 20% of the step for
    nothing trained (with --frozen-bn train, the seed would also update their BatchNorm statistics,
    which their own phase renews); otherwise -> (logits, [A_0(S_0), ..., A_{N-1}(S_{N-1})]).
    `teacher_shapes[k]` is the shape of the teacher map that student map k learns."""

    def __init__(self, student, args, student_shapes, teacher_shapes):
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleList(
            nn.Conv2d(shape[0], teacher_shape[0], 1, bias=False) if shape[0] != teacher_shape[0] else nn.Identity()
            for shape, teacher_shape in zip(student_shapes, teacher_shapes))
        self.nodes = STAGE_NODES[args.model][:len(student_shapes)]
        # views of the student's own layers (FX shares the modules): the whole student with its maps, and the
        # student up to each map; in a list, so that the checkpoint holds each weight once
        self.views = [with_stages(student, args.model)] + [create_feature_extractor(student, [node])
                                                           for node in self.nodes]

    def forward(self, images, stage=-1):
        if 0 <= stage < len(self.nodes):
            return self.adapters[stage](self.views[stage + 1](images)[self.nodes[stage]])
        logits, features = self.views[0](images)
        return logits, [adapter(feature) for adapter, feature in zip(self.adapters, features)]


@torch.no_grad()
def val_stage_loss(trainable, stage, teacher_stages, loader, autocast, device, memory_format):
    """Map k's MSE over the validation set, student in eval mode (the next epoch sets the modes again)."""
    trainable.eval()
    totals = torch.zeros(2, device=device, dtype=torch.float64)  # sum of per-image MSE, images
    for images, _ in loader:
        images = images.contiguous(memory_format=memory_format)
        with autocast:
            loss = stage_loss(trainable(images, stage), next(iter(teacher_stages(images).values())))
        totals[0] += loss * len(images)
        totals[1] += len(images)
    total, count = all_reduce_sum(totals).tolist()
    return total / count


@user_errors
def main(args):
    # TRY NOT TO MODIFY: set-up, data, resume, teacher
    started = time.time()
    # ALGO LOGIC: the method's flags, range-checked with the shared ones; --simultaneous has its own name and runs
    check_flags(args, positive=("stage_epochs", "classifier_epochs"), non_negative=("feature_maps",))
    method = "simultaneous" if args.simultaneous else METHOD
    args.exp_name = args.exp_name or ("kd_stagewise_simultaneous" if args.simultaneous else "kd_stagewise")
    dist = setup_distributed(args.device, args.batch_size, args.threads)
    device, master = dist.device, dist.is_master
    seed_everything(args.seed, dist.rank)
    train_loader, val_loader, num_classes, image_shape = build_loaders(args, device, dist.rank, dist.world_size)
    resume_path, checkpoint = find_resume(args, method)
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
    # ALGO LOGIC: which teacher map each student map learns, and how long the phases last
    student_shapes = stage_shapes(model, args.model, image_shape)
    teacher_shapes = stage_shapes(teacher, teacher_name, image_shape)
    num_stages = len(student_shapes) - 1
    if args.feature_maps > num_stages + 1:
        raise UserError(f"--feature-maps {args.feature_maps}: {args.model} has {num_stages + 1} (stem and stages)")
    num_maps = args.feature_maps or num_stages + 1
    pairs = pair_maps(args.model, student_shapes[:num_maps], teacher_name, teacher_shapes)
    stagewise_epochs = num_maps * args.stage_epochs + args.classifier_epochs
    if not args.simultaneous and args.epochs not in (None, stagewise_epochs):
        raise UserError(f"stage-wise training lasts {num_maps} feature maps x --stage-epochs {args.stage_epochs} + "
                        f"--classifier-epochs {args.classifier_epochs} = {stagewise_epochs} epochs: drop --epochs {args.epochs}")
    args.epochs = args.epochs or stagewise_epochs  # args.json and results.json record the real total
    trainable = Trainable(model, args, student_shapes[:num_maps], [teacher_shapes[i] for i in pairs])
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    trainable.to(device, memory_format=memory_format)
    autocast = autocast_context(args.amp, device)
    # the teacher is inert: eval mode (BatchNorm uses its running stats), no gradients, never in DDP
    teacher.eval().requires_grad_(False).to(device, memory_format=memory_format)
    # evaluated once per run: a resume reads its top-1 from the checkpoint
    teacher_top1 = checkpoint["teacher_top1"] if checkpoint else evaluate(teacher, val_loader, autocast, device,
                                                                          memory_format)["top1"]
    if master:
        print(f"teacher {teacher_name}: top1 {teacher_top1:.2f}; student maps {student_shapes[:num_maps]} learn "
              f"teacher maps {pairs} of {teacher_shapes}")

    # ALGO LOGIC: the phases. Each trains its groups alone, with a fresh optimizer and LR schedule over them; a
    # resume restores those of the phase it stopped in, and the loop builds the next phase's when it begins
    groups, plan = stage_modules(model, args.model), phase_plan(num_maps, num_stages, args)
    classifier_stage = num_stages + 1

    def set_phase(stage):  # every epoch, as evaluation resets the modes; returns the parameters the phase trains
        trainable.train()
        trained = trained_groups(stage, num_maps, num_stages, args.finetune_all)
        return freeze_all_but(groups, trainable.adapters, trained, stage, args.frozen_bn)

    def phase_optimizer(epoch):
        stage, _, phase_epochs = phase_at(plan, epoch)
        optimizer = build_optimizer(args, set_phase(stage))
        return stage, optimizer, build_scheduler(args, optimizer, len(train_loader), epochs=phase_epochs)

    stage, optimizer, scheduler = phase_optimizer(checkpoint["epoch"] - 1 if checkpoint else 0)
    # {"stage", "epoch", "val_stage_loss", "trainable"}: the feature phase's best epoch so far
    stage_best = checkpoint["stage_best"] if checkpoint else None
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
    if args.compile:  # ALGO LOGIC: the whole module; each phase compiles its own graphs (training, val MSE, evaluation)
        torch._dynamo.config.recompile_limit = 64  # dynamo's 8 would leave the phases after the third uncompiled
        trainable.compile()
    train_model = None  # ALGO LOGIC: each phase wraps the trainable in DDP again, over what it trains
    eval_model = trainable
    log = RunLog(run_dir, args, master, checkpoint)
    if master:
        print(f"run dir: {run_dir}  ({dist.world_size} process(es) on {device}, {torch.get_num_threads()} CPU "
              f"thread(s) each, {len(train_loader)} steps/epoch)")

    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    teacher_nodes = [STAGE_NODES[teacher_name][i] for i in pairs]

    # TRY NOT TO MODIFY: the loop; it logs, sums and checks every term of `losses`
    planned_steps = (args.epochs - start_epoch) * len(train_loader)
    throughput = Throughput(device, min(planned_steps, args.max_steps or planned_steps))
    metrics, epochs_done = None, start_epoch
    for epoch in range(start_epoch, args.epochs):
        if args.max_steps and step >= args.max_steps:
            break
        # ALGO LOGIC: a new phase starts from the last one's best epoch, with a fresh optimizer and LR schedule
        if phase_at(plan, epoch)[0] != stage:
            if stage_best is not None:
                trainable.load_state_dict(stage_best["trainable"])
                stage_best = None
            stage, optimizer, scheduler = phase_optimizer(epoch)
            train_model = None
        set_phase(stage)
        if train_model is None:  # DDP over what the phase trains; the teacher only as far as the map learnt
            train_model = DDP(trainable, device_ids=[device.index] if device.type == "cuda" else None) \
                if dist.world_size > 1 else trainable
            if stage != classifier_stage:  # FX drops the teacher's layers after the map; the head needs none
                teacher_stages = create_feature_extractor(teacher, teacher_nodes if stage == -1 else
                                                          [teacher_nodes[stage]]).eval()
                if args.compile:
                    teacher_stages.compile()
        train_loader.set_epoch(epoch)
        loss_sums, epoch_steps = 0, 0
        throughput.start()
        bar = tqdm(throughput.timed(train_loader), total=len(train_loader), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=not (master and sys.stdout.isatty()), leave=False)
        for images, labels in bar:
            images = images.contiguous(memory_format=memory_format)
            # ALGO LOGIC: one step's loss terms; losses["total"] is what the optimizer minimises
            if stage != classifier_stage:
                with torch.no_grad(), autocast:
                    teacher_features = list(teacher_stages(images).values())
            with autocast:
                if stage == classifier_stage:
                    losses = {"ce": criterion(train_model(images, stage)[0], labels)}
                    losses["total"] = losses["ce"]
                elif stage == -1:
                    logits, features = train_model(images, stage)
                    loss_stages = [stage_loss(student_feature, teacher_feature)
                                   for student_feature, teacher_feature in zip(features, teacher_features)]
                    losses = {"ce": criterion(logits, labels), "stage": sum(loss_stages)}
                    losses["total"] = simultaneous_loss(losses["ce"], loss_stages)
                else:  # the student ends at map k: no logits, no CE
                    losses = {"stage": stage_loss(train_model(images, stage), teacher_features[0])}
                    losses["total"] = losses["stage"]
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

        val_stage = None
        if 0 <= stage < num_maps:  # ALGO LOGIC: keep the feature phase's epoch of lowest validation MSE
            val_stage = val_stage_loss(eval_model, stage, teacher_stages, val_loader, autocast, device, memory_format)
            if args.phase_start == "best" and (stage_best is None or val_stage < stage_best["val_stage_loss"]):
                stage_best = {"stage": stage, "epoch": epoch + 1, "val_stage_loss": val_stage, "trainable": {
                    key: value.to("cpu", copy=True) for key, value in trainable.state_dict().items()}}
        metrics = evaluate(eval_model, val_loader, autocast, device, memory_format)
        means = dict(zip(losses, (all_reduce_sum(loss_sums) / max(1, epoch_steps * dist.world_size)).tolist()))
        check_finite(means, step)
        if metrics["top1"] > best_top1:
            best_top1, best_epoch = metrics["top1"], epoch + 1
        record = {"epoch": epoch + 1, "step": step, "stage": stage, "train_loss": means["total"],
                  **{f"loss_{k}": v for k, v in means.items() if k != "total"}, "val_loss": metrics["loss"],
                  "val_stage_loss": val_stage,
                  "top1": metrics["top1"], "top5": metrics["top5"], "lr": scheduler.get_last_lr()[0],
                  "images_per_sec": throughput.epoch_rate,
                  "data_wait_fraction": throughput.epoch_wait_fraction, "time_s": time.time() - started + prior_wall}
        log.epoch(record)
        log.scalars(step, {"losses/val": metrics["loss"], "eval/top1": metrics["top1"], "eval/top5": metrics["top5"],
                           "charts/epoch": epoch + 1, "charts/images_per_sec": throughput.epoch_rate,
                           "charts/data_wait_fraction": throughput.epoch_wait_fraction, "charts/stage": stage,
                           **({"losses/val_stage": val_stage} if val_stage is not None else {})})
        if master:
            print(f"epoch {epoch + 1}/{args.epochs}  stage {stage}  loss {means['total']:.4f}  "
                  + (f"val MSE {val_stage:.4f}  " if val_stage is not None else "")
                  + f"top1 {metrics['top1']:.2f}  top5 {metrics['top5']:.2f}  {throughput.epoch_rate:.0f} img/s")
            state = {"model": trainable.student.state_dict(), "trainable": trainable.state_dict(), "method": method,
                     "model_name": args.model, "num_classes": num_classes, "dataset": args.dataset, "args": vars(args),
                     "epoch": epoch + 1, "step": step, "best_top1": best_top1, "best_epoch": best_epoch,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng_state(), "top1": metrics["top1"],
                     "teacher_top1": teacher_top1, "wall_time_s": time.time() - started + prior_wall,
                     "stage": stage, "stage_best": stage_best}
            save_epoch(run_dir, state, best_epoch == epoch + 1)

    if metrics is None:  # a finished run resumed: nothing to train, results.json stays as it is
        metrics = evaluate(eval_model, val_loader, autocast, device, memory_format)
    else:
        log.results({"top1": metrics["top1"], "top5": metrics["top5"], "best_top1": best_top1,
                     "best_epoch": best_epoch, "epochs": epochs_done, "steps": step,
                     "wall_time_s": time.time() - started + prior_wall, "images_per_sec": throughput.rate,
                     "data_wait_fraction": throughput.wait_fraction, "model": args.model, "dataset": args.dataset,
                     "world_size": dist.world_size, "teacher": teacher_name, "teacher_top1": teacher_top1,
                     "method": method})
    log.close()
    if master:
        print(f"FINAL top1={metrics['top1']:.2f} top5={metrics['top5']:.2f} best_top1={best_top1:.2f}")
    cleanup_distributed()


if __name__ == "__main__":
    main(parse_args())
