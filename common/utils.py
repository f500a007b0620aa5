"""Distributed, precision, optimisation, evaluation, checkpoint, flag and run-directory plumbing of the scripts."""
import collections
import contextlib
import ctypes
import functools
import glob
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F

from common import UserError

Dist = collections.namedtuple("Dist", "rank local_rank world_size device is_master")


def user_errors(main):
    """Turn a UserError into one line on stderr and exit code 2, instead of a traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    return wrapper


def setup_distributed(device_arg, batch_size, threads=0):
    """torchrun's RANK / LOCAL_RANK / WORLD_SIZE; NCCL on GPU, gloo on CPU; `--threads` (0: `free_cpu_threads`)."""
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if batch_size % world_size:
        raise UserError(f"--batch-size {batch_size} is global and must divide by the world size {world_size}")
    if threads < 0:
        raise UserError(f"--threads {threads}: give a thread count, or 0 to use the CPUs that are free")
    torch.set_num_threads(threads or free_cpu_threads(world_size))
    if device_arg == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA device is available")
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    # on CPU, denormal floats (e.g. from zero-initialised BatchNorm weights) can make steps 40x slower
    torch.set_flush_denormal(True)
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        keep_freed_memory()
    if world_size > 1:
        torch_dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return Dist(rank, local_rank, world_size, device, rank == 0)


def free_cpu_threads(world_size=1, interval=0.25):
    """OMP_NUM_THREADS when set (torchrun sets 1); else the CPUs of this process that were idle over the last
    `interval` seconds (/proc/stat; the 1-minute load average elsewhere), shared among the ranks. On a shared 2-core
    machine, 2 threads beside another job ran a step 21-42x slower than 1: OpenMP threads waiting for a core spin."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        def idle_and_total():
            with open("/proc/stat") as f:
                ticks = [float(t) for t in f.readline().split()[1:]]
            return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all
        idle, total = idle_and_total()
        time.sleep(interval)
        idle_now, total_now = idle_and_total()
        free = cpus * (idle_now - idle) / max(total_now - total, 1.0)
    except (OSError, IndexError, ValueError):
        free = cpus - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, int(free + 0.5) // world_size)


def keep_freed_memory():
    """glibc hands every freed tensor of a few MB back to the OS (munmap, heap trimming) and page-faults it in
    again at the next allocation: a third of a ResNet forward pass on CPU, 5-15% of a training step on this
    project's machine (docs/performance.md). Serve all allocations from the heap and never trim it."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(libc.mallopt(m_trim_threshold, 2**31 - 1)) and bool(libc.mallopt(m_mmap_max, 0))


def cleanup_distributed():
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_sum(tensor):
    if torch_dist.is_initialized():
        torch_dist.all_reduce(tensor)
    return tensor


def seed_everything(seed, rank):
    """Different seed per rank (augmentation, dropout); the data order is seeded separately in the loaders."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def autocast_context(amp, device):
    """Chosen once, so the training loop has no precision branches."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def grad_scaler(amp, device):
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def build_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                               nesterov=args.nesterov)
    optimizer = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return optimizer(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)


def build_scheduler(args, optimizer, steps_per_epoch, epochs=None):
    """Per-step LR: linear warm-up over `--warmup-epochs`, then multistep, step or cosine."""
    epochs = args.epochs if epochs is None else epochs
    warmup, total = args.warmup_epochs * steps_per_epoch, max(1, epochs * steps_per_epoch)
    milestones = args.milestones or [epochs // 2, epochs * 3 // 4]

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        epoch = step // steps_per_epoch
        if args.lr_schedule == "multistep":
            return args.gamma ** sum(epoch >= m for m in milestones)
        if args.lr_schedule == "step":
            return args.gamma ** (epoch // args.lr_step)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(model, loader, autocast, device, memory_format=torch.contiguous_format):
    """Top-1 / top-5 (percent) and mean CE over the whole val split, summed across ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # top1 hits, top5 hits, loss sum, count
    for images, labels in loader:
        with autocast:
            logits = model(images.contiguous(memory_format=memory_format))
        logits = (logits[0] if isinstance(logits, tuple) else logits).float()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        totals += torch.stack([hits[:, 0].sum(), hits.any(1).sum(), F.cross_entropy(logits, labels, reduction="sum"),
                               torch.full((), len(labels), device=device)])
    top1, top5, loss, count = all_reduce_sum(totals).tolist()
    model.train(was_training)
    return {"top1": 100 * top1 / count, "top5": 100 * top5 / count, "loss": loss / count}


def evaluate_checkpoint(checkpoint, num_classes, val_loader, args, device):
    """`--evaluate`: the checkpoint's own network (whatever --model says) in the run's precision and memory format."""
    from common.models import create_model
    if checkpoint["num_classes"] != num_classes:
        raise UserError(f"the checkpoint holds {checkpoint['model_name']} with {checkpoint['num_classes']} classes "
                        f"but {args.dataset} has {num_classes}")
    model = create_model(checkpoint["model_name"], num_classes)
    model.load_state_dict(checkpoint["model"])
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    return evaluate(model, val_loader, autocast_context(args.amp, device), device, memory_format)


class Throughput:
    """Set by `stop()`: training images/s of the epoch and of the run so far (`epoch_rate`, `rate`) and the share of
    that time spent waiting for `timed(loader)`'s batches (`epoch_wait_fraction`, `wait_fraction`). The run's first
    steps are left out (compilation, cuDNN autotuning, DALI start-up): 5, or a quarter of a short run."""

    def __init__(self, device, planned_steps=20):
        self.device, self.warmup, self.steps = device, min(5, max(1, planned_steps // 4)), 0
        self.images, self.seconds, self.wait = 0, 0.0, 0.0  # over the run's timed epochs
        self.epoch_rate = self.epoch_wait_fraction = self.rate = self.wait_fraction = 0.0

    def start(self):
        self.t0, self.epoch_images, self.epoch_wait = time.perf_counter(), 0, 0.0

    def timed(self, loader):
        """Yields `loader`'s batches, adding the time spent waiting for each to the epoch's data wait."""
        batches = iter(loader)
        waited = time.perf_counter()
        for batch in batches:
            self.epoch_wait += time.perf_counter() - waited
            yield batch
            waited = time.perf_counter()

    def step(self, batch_images):
        self.steps += 1
        if self.steps == self.warmup:  # one host sync in the whole run
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.t0, self.epoch_wait = time.perf_counter(), 0.0
        elif self.steps > self.warmup:
            self.epoch_images += batch_images

    def stop(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds, wait = (time.perf_counter() - self.t0, self.epoch_wait) if self.steps > self.warmup else (0.0, 0.0)
        self.images += self.epoch_images
        self.seconds += seconds
        self.wait += wait
        self.epoch_rate = self.epoch_images / seconds if seconds else 0.0
        self.epoch_wait_fraction = wait / seconds if seconds else 0.0
        self.rate = self.images / self.seconds if self.seconds else 0.0
        self.wait_fraction = self.wait / self.seconds if self.seconds else 0.0


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_epoch(run_dir, state, is_best):
    """best.pt before last.pt: a run killed between the two writes resumes from the older last.pt, and trains the
    epoch again, so the pair never disagrees. Each is written to a temporary file, then renamed: a crash never leaves
    a half-written checkpoint. The temporaries that a killed run or a full disk left behind are removed first."""
    for name in ("best.pt", "last.pt") if is_best else ("last.pt",):
        path = os.path.join(run_dir, name)
        for stale in glob.glob(glob.escape(path) + ".tmp*"):
            os.remove(stale)
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            torch.save(state, tmp)
        except (OSError, RuntimeError) as err:  # a full disk surfaces as either
            if os.path.exists(tmp):
                os.remove(tmp)
            raise UserError(f"could not write {path} ({err}); free disk space and continue with "
                            "--resume auto") from None
        os.replace(tmp, path)


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserError(f"{path} is not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or not {"model", "model_name", "num_classes"} <= checkpoint.keys():
        raise UserError(f"{path} is not a checkpoint written by these scripts (no model/model_name/num_classes)")
    return checkpoint


def init_from(model, model_name, path):
    """`--init-from`: copies every tensor of checkpoint `path` whose name and shape match into `model`; the rest (a
    classifier for another class count) stays freshly initialised, and its names are returned."""
    checkpoint = load_checkpoint(path)
    if checkpoint["model_name"] != model_name:
        raise UserError(f"--init-from {path} holds {checkpoint['model_name']}, not --model {model_name}")
    own = model.state_dict()
    kept = {key: value for key, value in checkpoint["model"].items() if key in own and own[key].shape == value.shape}
    fresh = sorted(set(own) - set(kept))
    if len(fresh) > len(own) // 2:
        raise UserError(f"--init-from {path}: only {len(kept)} of {len(own)} tensors fit {model_name}")
    model.load_state_dict(kept, strict=False)
    return fresh


# flags that change how fast a run goes or where it writes, not what it trains: a resume may change them
MAY_CHANGE_ON_RESUME = {"resume", "evaluate", "teacher_cache", "epochs", "max_steps", "workers", "threads",
                        "log_interval", "device", "compile", "channels_last", "loader", "out_dir", "data_dir",
                        "download", "exp_name"}


def resume_mismatch(checkpoint, args, method):
    """Why `checkpoint` is not a run that this command may continue, or None."""
    if checkpoint.get("method") != method or "trainable" not in checkpoint:
        return f"it is not a {method} run of this version (method: {checkpoint.get('method', 'unknown')})"
    saved, now = checkpoint["args"], vars(args)
    changed = [f"--{key.replace('_', '-')} {saved.get(key)} (now {now.get(key)})"
               for key in sorted(set(saved) | set(now))
               if key not in MAY_CHANGE_ON_RESUME and saved.get(key) != now.get(key)]
    return "it ran with other settings: " + ", ".join(changed) if changed else None


def find_resume(args, method):
    """(path, checkpoint) for `--resume`, or (None, None) for a fresh run. `auto`: the newest last.pt under the
    experiment name of a `method` run with the same settings (see MAY_CHANGE_ON_RESUME); a path must be such a run's
    last.pt. `--evaluate` takes any checkpoint."""
    if not args.resume:
        return None, None
    if args.resume == "auto":
        candidates = glob.glob(os.path.join(glob.escape(args.out_dir), f"{glob.escape(args.exp_name)}__*", "last.pt"))
        for path in sorted(candidates, key=os.path.getmtime, reverse=True):
            checkpoint = load_checkpoint(path)
            if resume_mismatch(checkpoint, args, method) is None:
                return path, checkpoint
        return None, None
    checkpoint = load_checkpoint(args.resume)
    if not args.evaluate:
        if os.path.basename(args.resume) != "last.pt":  # continuing best.pt in its folder would drop the later epochs
            raise UserError(f"--resume {args.resume}: continue a run from its last.pt; to start a new run from these "
                            "weights, use --init-from")
        mismatch = resume_mismatch(checkpoint, args, method)
        if mismatch:
            raise UserError(f"--resume {args.resume}: {mismatch}; start a new run instead (leave out --resume)")
    return args.resume, checkpoint


def restore_training(checkpoint, trainable, optimizer, scheduler, scaler, rank, seed):
    """Loads a resumed run's state and RNG; returns (epoch, step, best_top1, best_epoch, wall_time_s)."""
    for part, key in ((trainable, "trainable"), (optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        part.load_state_dict(checkpoint[key])
    if rank == 0:  # only the master's RNG state is saved; other ranks re-seed per epoch
        set_rng_state(checkpoint["rng"])
    else:
        seed_everything(seed + 1000 * checkpoint["epoch"], rank)
    return tuple(checkpoint[key] for key in ("epoch", "step", "best_top1", "best_epoch", "wall_time_s"))


def check_flags(args, positive=(), non_negative=(), below_one=()):
    """Every numeric flag in its range, or one line naming it; a script names its method's flags."""
    rules = [(("epochs", "batch_size", "gamma", "lr_step", "log_interval", "image_size", "val_resize",
               "num_classes", *positive), lambda v: v > 0, "must be above 0"),
             (("lr", "weight_decay", "warmup_epochs", "max_steps", "workers", "threads", *non_negative),
              lambda v: v >= 0, "must be 0 or more"),
             (("momentum", "label_smoothing", *below_one), lambda v: 0 <= v < 1, "must be in [0, 1)"),
             (("train_fraction",), lambda v: 0 < v <= 1, "must be in (0, 1]")]
    for names, ok, rule in rules:
        for name in names:
            value = getattr(args, name, None)
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise UserError(f"--{name.replace('_', '-')} {value} {rule}")
    if any(m < 0 for m in getattr(args, "milestones", None) or []):
        raise UserError(f"--milestones {args.milestones}: epochs must be 0 or more")
    existing = os.path.abspath(args.out_dir)
    while not os.path.exists(existing):  # the nearest folder that exists; "/" always does
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out-dir {args.out_dir}: {existing} is not a folder this user can write to")


def check_finite(losses, step):
    """Stops a diverged run (`losses`: {term: value}) with one line; its last.pt is the last finite epoch."""
    if not all(math.isfinite(value) for value in losses.values()):
        terms = ", ".join(f"{key} {value:.4g}" for key, value in losses.items())
        raise UserError(f"the loss is not finite at step {step} ({terms}): the run diverged; last.pt holds the "
                        "last finite epoch; lower --lr or check the method's flags")


def _epoch_of(line):
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return math.inf


class RunLog:
    """args.json, metrics.jsonl, results.json and TensorBoard events of a run; a no-op on all ranks but the master."""

    def __init__(self, run_dir, args, enabled, checkpoint=None):
        self.run_dir, self.enabled, self.writer = run_dir, enabled, None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        os.makedirs(run_dir, exist_ok=True)
        kept = []
        if checkpoint is None:
            self._write("args.json", "w", json.dumps(vars(args), indent=2))
        else:  # args.json stays as the run began; what this resume changed goes to resumes.jsonl
            changed = {key: [old, getattr(args, key, None)] for key, old in checkpoint["args"].items()
                       if old != getattr(args, key, None)}
            record = {"from_epoch": checkpoint["epoch"], "time": time.strftime("%Y-%m-%d %H:%M:%S"), "changed": changed}
            self._write("resumes.jsonl", "a", json.dumps(record) + "\n")
            metrics = os.path.join(run_dir, "metrics.jsonl")
            if os.path.exists(metrics):  # drop the epochs after the checkpoint, and a line a kill cut short
                with open(metrics) as f:
                    kept = [line for line in f if _epoch_of(line) <= checkpoint["epoch"]]
        self._write("metrics.jsonl", "w", "".join(kept))
        # every scalar is logged against the global step; a resume drops the points after its checkpoint's step
        self.writer = SummaryWriter(run_dir, purge_step=checkpoint["step"] + 1 if checkpoint else None)
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{key}|{value}|" for key, value in sorted(vars(args).items())))

    def _write(self, name, mode, text):
        if self.enabled:
            with open(os.path.join(self.run_dir, name), mode) as f:
                f.write(text)

    def scalars(self, step, values):
        if self.enabled:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def epoch(self, record):
        self._write("metrics.jsonl", "a", json.dumps(record) + "\n")

    def results(self, results):
        self._write("results.json", "w", json.dumps(results, indent=2))

    def close(self):
        if self.writer is not None:
            self.writer.close()


def new_run_dir(out_dir, run_name):
    """A fresh directory name: an existing run is never overwritten."""
    path, n = os.path.join(out_dir, run_name), 1
    while os.path.exists(path):
        path, n = os.path.join(out_dir, f"{run_name}-{n}"), n + 1
    return path


def load_teacher(args, num_classes):
    """(network, name) of the teacher: a train_teacher.py checkpoint, or torchvision's ImageNet weights."""
    from common.models import create_model
    if args.teacher:
        checkpoint = load_checkpoint(args.teacher)
        if checkpoint["num_classes"] != num_classes:
            raise UserError(f"teacher {args.teacher} ({checkpoint['model_name']}) predicts {checkpoint['num_classes']} "
                            f"classes but {args.dataset} has {num_classes}; train a teacher on this data set")
        if not all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point()):
            raise UserError(f"teacher {args.teacher} holds non-finite weights (its run diverged); train it again")
        teacher = create_model(checkpoint["model_name"], num_classes)
        teacher.load_state_dict(checkpoint["model"])
        return teacher, checkpoint["model_name"]
    if args.teacher_model and args.teacher_pretrained:
        if num_classes != 1000:
            raise UserError(f"--teacher-pretrained gives an ImageNet teacher with 1000 classes but {args.dataset} has "
                            f"{num_classes}; fine-tune one with train_teacher.py --pretrained and pass --teacher PATH")
        return create_model(args.teacher_model, num_classes, pretrained=True), args.teacher_model
    raise UserError("no teacher: pass --teacher PATH (a train_teacher.py checkpoint) "
                    "or --teacher-model NAME --teacher-pretrained")
