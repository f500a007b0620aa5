"""Contrastive representation distillation: Tian, Krishnan and Isola 2020 ("Contrastive Representation
Distillation", ICLR 2020, arXiv:1910.10699). The pooled penultimate features of the student and of the
teacher are embedded (a linear map to --feat-dim, then L2 normalisation: s_i, t_i for image i) and
contrasted: the two embeddings of one image are a positive pair, an image's embedding and K = --nce-k
images of other classes are negative pairs. The other images' embeddings come from two memory banks of
N x feat_dim (N: the training images), one per network, whose rows i of the batch move towards its new
embeddings every step: m_i <- normalise(momentum * m_i + (1 - momentum) * v_i), --nce-momentum.

    loss = ce_weight * CE(student, labels) + crd_weight * (NCE(s; teacher bank) + NCE(t; student bank))
    P(j | v) = exp(<bank_j, v> / T) / Z          T = --nce-temperature, Z = N * mean of exp(.) on the first batch
    NCE(v; bank) = -1/B sum_i [ log P(i | v_i) / (P(i | v_i) + K/N) + sum_{k=1..K} log (K/N) / (P(j_ik | v_i) + K/N) ]

the paper's equation 18 as RepDistiller (crd/criterion.py, crd/memory.py) computes it: the NCE estimate of
the probability that a pair came from the joint distribution rather than from K independent draws. Only
the first half trains the student (the banks carry no gradient); the second trains the teacher's head.
Defaults are RepDistiller's and mdistiller's (configs/cifar100/crd.yaml, configs/imagenet/r34_r18/crd.yaml):
CE 1 (-r 1), CRD 0.8 (-b 0.8), no KD term (-a 0), 128-d embeddings, T 0.07, momentum 0.5, except K: 16384 of
CIFAR-100's 50,000 images; digits has 1,437 (359 at --train-fraction 0.25), so 256 by default.

    python kd_crd.py --teacher runs/<teacher_run>/best.pt              # resnet20 student on digits
    torchrun --nproc_per_node=8 kd_crd.py --dataset cifar100 --data-dir data --model resnet8x4 \
        --teacher runs/<resnet32x4_run>/best.pt --nce-k 16384 --epochs 240 --batch-size 64 --lr 0.05 \
        --lr-schedule multistep --milestones 150 180 210 --weight-decay 5e-4 --warmup-epochs 0

Writes runs/<run_name>/ with args.json, metrics.jsonl, results.json, last.pt, best.pt and
TensorBoard events; the last stdout line is `FINAL top1=... top5=... best_top1=...`.
"""
# ALGO LOGIC: the method's name, in results.json and checkpoints; report.py finds its published numbers by it
METHOD = "crd"

import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from tqdm import tqdm

from common import UserError
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
    method = parser.add_argument_group("method: contrastive representation distillation")
    method.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    method.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    method.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    # RepDistiller's and mdistiller's CIFAR-100 and ImageNet values are these defaults, except --nce-k
    method.add_argument("--ce-weight", type=float, default=1.0,
                        help="weight of the cross-entropy with the labels (RepDistiller's -r; CIFAR-100: 1)")
    method.add_argument("--crd-weight", type=float, default=0.8,
                        help="weight of the two NCE terms (RepDistiller's -b; CIFAR-100: 0.8)")
    method.add_argument("--feat-dim", type=int, default=128,
                        help="width of the embeddings and the memory banks (CIFAR-100: 128)")
    method.add_argument("--nce-k", type=int, default=256,
                        help="negatives per image, at most the training images outside the largest class; digits "
                             "has 1,437 (CIFAR-100: 16384 of 50,000)")
    method.add_argument("--nce-temperature", type=float, default=0.07,
                        help="temperature T of exp(<m, v> / T) (CIFAR-100: 0.07)")
    method.add_argument("--nce-momentum", type=float, default=0.5,
                        help="momentum of the memory banks' rows (CIFAR-100: 0.5)")
    return parser.parse_args(argv)


# ALGO LOGIC: the contrastive loss, its memory banks and its negatives
def contrast_scores(embeddings, bank, candidates, temperature):
    """exp(<bank_j, v_i> / T) for the candidates j of each anchor v_i: (B, 1 + K), the positive first. In float32:
    autocast would run the product in bf16, whose error of about 0.004 is 6 % of the score at T = 0.07."""
    with torch.autocast(embeddings.device.type, enabled=False):
        dots = torch.bmm(bank[candidates], embeddings.float().unsqueeze(2)).squeeze(2)
        return torch.exp(dots / temperature)


def nce_loss(probabilities, num_samples):
    """-1/B sum_i [log P_i0 / (P_i0 + K/N) + sum_k log (K/N) / (P_ik + K/N)] with P = exp(.) / Z (B, 1 + K): the
    positive pair against noise drawn with probability 1/N (paper's eq. 18), summed over the K negatives and
    averaged over the batch, with RepDistiller's eps of 1e-7 in the denominators."""
    probabilities = probabilities.float()
    noise = (probabilities.shape[1] - 1) / num_samples
    positive, negative = probabilities[:, 0], probabilities[:, 1:]
    log_positive = torch.log(positive / (positive + noise + 1e-7))
    log_negative = torch.log(noise / (negative + noise + 1e-7))
    return -(log_positive.sum() + log_negative.sum()) / len(probabilities)


def momentum_update(bank, indices, embeddings, momentum):
    """bank_i <- normalise(momentum * bank_i + (1 - momentum) * v_i) for the rows `indices`, in place."""
    rows = bank[indices] * momentum + embeddings.float() * (1 - momentum)
    bank.index_copy_(0, indices, F.normalize(rows, dim=1))


def gather_ranks(tensor):
    """`tensor` of every rank, concatenated in rank order: each rank then updates its banks alike."""
    if not torch_dist.is_initialized():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(torch_dist.get_world_size())]
    torch_dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class Negatives:
    """K training-set indices per anchor, uniform over the images of the other classes (RepDistiller's mode
    "exact"), with replacement, on the device: the indices sorted by class, and a draw in [0, N - n_label) that
    skips the label's run. `draw(labels, seed)` depends on the seed alone, so a resumed run draws the same."""

    def __init__(self, sample_labels, count, device):
        self.order = sample_labels.argsort(stable=True).to(device)
        self.sizes = torch.bincount(sample_labels).to(device)
        self.starts, self.count = self.sizes.cumsum(0) - self.sizes, count
        self.generator = torch.Generator(device)

    def draw(self, labels, seed):
        self.generator.manual_seed(seed)
        sizes, starts = self.sizes[labels][:, None], self.starts[labels][:, None]
        uniform = torch.rand(len(labels), self.count, generator=self.generator, device=labels.device,
                             dtype=torch.float64)  # float32 could round N * u up to N
        position = (uniform * (len(self.order) - sizes)).long()
        return self.order[position + (position >= starts) * sizes]


class Penultimate(nn.Module):
    """forward(images) -> (logits, features): the input of the last Linear layer (the pooled penultimate features
    of a ResNet), read out by FX; shares `model`'s weights."""

    def __init__(self, model):
        super().__init__()
        names = get_graph_node_names(model)[0]
        last_linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
        self.nodes = [names[names.index(last_linear) - 1], names[-1]]
        self.body = create_feature_extractor(model, self.nodes)

    def forward(self, images):
        out = self.body(images)
        return out[self.nodes[1]], out[self.nodes[0]].flatten(1)


class Embed(nn.Module):
    """CRD's head: a linear map to feat_dim, then L2 normalisation (in float32)."""

    def __init__(self, width, feat_dim):
        super().__init__()
        self.linear = nn.Linear(width, feat_dim)

    def forward(self, features):
        return F.normalize(self.linear(features).float(), dim=1)


class ContrastMemory(nn.Module):
    """The two banks (buffers: saved, restored on resume) and Z. forward(s, t, indices, negatives) -> P for the
    student's anchors (against the teacher's bank) and the teacher's (against the student's), then moves the
    banks' rows of the batch, of every rank, towards s and t. Z is set from the first batch (averaged over
    the ranks), as RepDistiller does; a run that finds it set (a resume) keeps it."""

    def __init__(self, num_samples, feat_dim, temperature, momentum, seed):
        super().__init__()
        bound, generator = 1 / math.sqrt(feat_dim / 3), torch.Generator().manual_seed(seed)  # alike on every rank
        for name in ("student", "teacher"):  # uniform in [-b, b]: rows of norm 1 on average, as RepDistiller's
            self.register_buffer(name, (torch.rand(num_samples, feat_dim, generator=generator) * 2 - 1) * bound)
        self.register_buffer("normalisers", torch.full((2,), -1.0))
        self.temperature, self.momentum, self.normalised = temperature, momentum, False

    def forward(self, student_embeddings, teacher_embeddings, indices, negatives):
        candidates = torch.cat([indices[:, None], negatives], 1)
        scores = torch.stack([contrast_scores(student_embeddings, self.teacher, candidates, self.temperature),
                              contrast_scores(teacher_embeddings, self.student, candidates, self.temperature)])
        if not self.normalised:  # one host sync in a run
            if not bool((self.normalisers > 0).all()):
                ranks = torch_dist.get_world_size() if torch_dist.is_initialized() else 1
                self.normalisers.copy_(all_reduce_sum(scores.detach().mean((1, 2)) * len(self.student)) / ranks)
            self.normalised = True
        with torch.no_grad():
            every_index = gather_ranks(indices)
            momentum_update(self.student, every_index, gather_ranks(student_embeddings.detach()), self.momentum)
            momentum_update(self.teacher, every_index, gather_ranks(teacher_embeddings.detach()), self.momentum)
        return scores / self.normalisers[:, None, None]


# ALGO LOGIC: everything that trains, in one module: the optimizer, torch.compile, DDP and the checkpoint take it
class Trainable(nn.Module):
    def __init__(self, student, args, student_width, teacher_width, num_samples):
        super().__init__()
        self.student = student
        # a view of the student's own layers; in a list, so that the checkpoint holds each weight once
        self.penultimate = [Penultimate(student)]
        self.embed_student = Embed(student_width, args.feat_dim)
        self.embed_teacher = Embed(teacher_width, args.feat_dim)
        self.memory = ContrastMemory(num_samples, args.feat_dim, args.nce_temperature, args.nce_momentum, args.seed)
        # every rank updates its banks alike from the gathered batch: DDP need not broadcast them at each forward
        DDP._set_params_and_buffers_to_ignore_for_model(self, [f"memory.{name}" for name, _ in
                                                               self.memory.named_buffers()])

    def forward(self, images, teacher_features=None):
        """logits alone (evaluation), or with the teacher's features (logits, student embeddings, teacher's)."""
        logits, features = self.penultimate[0](images)
        if teacher_features is None:
            return logits
        return logits, self.embed_student(features), self.embed_teacher(teacher_features)


@user_errors
def main(args):
    # TRY NOT TO MODIFY: set-up, data, resume, teacher
    started = time.time()
    # ALGO LOGIC: the method's flags, range-checked with the shared ones
    check_flags(args, positive=("feat_dim", "nce_k", "nce_temperature"), non_negative=("ce_weight", "crd_weight"),
                below_one=("nce_momentum",))
    dist = setup_distributed(args.device, args.batch_size, args.threads)
    device, master = dist.device, dist.is_master
    seed_everything(args.seed, dist.rank)
    # ALGO LOGIC: the train loader also yields each image's index, its row in the memory banks
    train_loader, val_loader, num_classes, image_shape = build_loaders(args, device, dist.rank, dist.world_size,
                                                                       with_index=True)
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
    # ALGO LOGIC: the heads' input widths, the banks' N rows, and K checked against the other classes' images
    teacher = Penultimate(teacher.eval())
    with torch.no_grad():
        widths = [net.eval()(torch.zeros(1, *image_shape))[1].shape[1] for net in (Penultimate(model), teacher)]
    sample_labels = train_loader.sample_labels
    outside = len(sample_labels) - int(torch.bincount(sample_labels).max())
    if args.nce_k > outside:
        raise UserError(f"--nce-k {args.nce_k} is more than the {outside} training images outside the largest class "
                        f"of {args.dataset}: lower it (CIFAR-100's 16384 is a third of its 50,000 images)")
    trainable = Trainable(model, args, *widths, len(sample_labels))
    negatives = Negatives(sample_labels, args.nce_k, device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    trainable.to(device, memory_format=memory_format)
    autocast = autocast_context(args.amp, device)
    # the teacher is inert: eval mode (BatchNorm uses its running stats), no gradients, never in DDP
    teacher.eval().requires_grad_(False).to(device, memory_format=memory_format)
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
        for images, labels, indices in bar:
            images = images.contiguous(memory_format=memory_format)
            # ALGO LOGIC: one step's loss terms; losses["total"] is what the optimizer minimises
            with torch.no_grad(), autocast:
                _, teacher_features = teacher(images)
            # K negatives per image, a function of (seed, step, rank): a resumed run draws the same
            negative_indices = negatives.draw(labels, (args.seed * 1_000_003 + step) * 1024 + dist.rank)
            with autocast:
                logits, student_embeddings, teacher_embeddings = train_model(images, teacher_features)
                # the banks' rows of this batch move after the scores are taken, as in RepDistiller
                student_p, teacher_p = trainable.memory(student_embeddings, teacher_embeddings, indices,
                                                        negative_indices)
                losses = {"ce": criterion(logits, labels),
                          "crd": nce_loss(student_p, len(sample_labels)) + nce_loss(teacher_p, len(sample_labels))}
                losses["total"] = args.ce_weight * losses["ce"] + args.crd_weight * losses["crd"]
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
