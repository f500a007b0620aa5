"""Write a teacher's logits on every augmented training image of every epoch, for the logit methods to replay
(`kd_st.py`, `kd_logit.py`, `kd_dkd.py --teacher-cache DIR`): their training loop then runs no teacher, so a
distillation step costs what the student's own step does (Fast KD, Shen & Xing 2022, arXiv:2112.01528).

An in-memory data set (digits, CIFAR, fake) augments image i in epoch e as a function of (--data-seed, e, i)
alone, not of the rank, the world size or the batch size, so this pass computes exactly what the student's run
would. One row per image per epoch, memory-mapped: float16 by default (CIFAR-100 for 240 epochs is 2.4 GB),
float32 with --dtype float32, or with --topk K the K largest logits and one value for the rest's mass.

    python cache_teacher.py --teacher runs/<teacher_run>/best.pt --epochs 30 --out caches/digits_t30
    python kd_st.py --teacher runs/<teacher_run>/best.pt --teacher-cache caches/digits_t30
    torchrun --nproc_per_node=8 cache_teacher.py --dataset cifar100 --data-dir data --teacher <resnet56 best.pt> \
        --augment standard --epochs 240 --amp bf16 --out caches/c100_r56

The student's run must use the same teacher, data set, --train-fraction, --data-seed, --augment and at most
--epochs epochs; the cache refuses any other with one line. manifest.json is written last: a folder without
it is an unfinished cache.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.distributed as torch_dist

from common import UserError
from common.cache import MANIFEST, cache_key, open_arrays
from common.data import TENSOR_DATASETS, build_loaders, data_seed
from common.utils import (autocast_context, check_flags, cleanup_distributed, evaluate, load_teacher, seed_everything,
                          setup_distributed, user_errors)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data: as the student's run will have them")
    data.add_argument("--dataset", default="digits", help=f"one of: {', '.join(TENSOR_DATASETS)}")
    data.add_argument("--data-dir", default="data", help="where the data set lives on disk")
    data.add_argument("--download", action="store_true", help="fetch CIFAR into --data-dir if missing")
    data.add_argument("--train-fraction", type=float, default=1.0, help="keep this stratified fraction of train")
    data.add_argument("--image-size", type=int, default=None, help="image size of --dataset fake (default 32)")
    data.add_argument("--num-classes", type=int, default=1000, help="class count of --dataset fake")
    data.add_argument("--augment", default="auto", choices=["auto", "standard", "reflect", "fastai"],
                      help="train augmentation (auto = standard)")
    data.add_argument("--eval-on", default="val", choices=["val", "heldout"], help="as the student's run")
    data.add_argument("--seed", type=int, default=0, help="the student's --seed (the data seed's default)")
    data.add_argument("--data-seed", type=int, default=None, help="the student's --data-seed (default: --seed)")
    cache = parser.add_argument_group("cache")
    cache.add_argument("--teacher", default=None, help="teacher checkpoint written by train_teacher.py")
    cache.add_argument("--teacher-model", default=None, help="torchvision teacher (with --teacher-pretrained)")
    cache.add_argument("--teacher-pretrained", action="store_true", help="use torchvision's ImageNet weights")
    cache.add_argument("--epochs", type=int, default=30, help="epochs to cache: at least the student's --epochs")
    cache.add_argument("--out", required=True, help="new folder to write the cache into")
    cache.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage of the logits")
    cache.add_argument("--topk", type=int, default=0, help="keep the K largest logits and the rest's mass (0: all)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--batch-size", type=int, default=256, help="images per teacher forward pass (any: same logits)")
    speed.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="the teacher's autocast")
    speed.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=None,
                       help="fold BatchNorm into the convolutions (logits move ~1e-7 relative); default: on unless "
                            "--dtype float32, which then holds the loop's logits bit for bit")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the teacher for inference, its weights frozen into the graph: resnet56 "
                            "on CPU 1.13x the images/s after 6-18 s of compiling, a gain past ~70,000 images")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC")
    speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    speed.add_argument("--threads", type=int, default=0,
                       help="CPU threads per process; 0: OMP_NUM_THREADS if set, else the CPUs free when it starts")
    args = parser.parse_args(argv)
    # what build_loaders reads besides: in-memory data only
    args.loader, args.workers, args.val_resize, args.out_dir = "tensor", 0, 256, os.path.dirname(os.path.abspath(args.out))
    return args


def create_arrays(folder, epochs, num_samples, num_classes, dtype, topk):
    """The cache's memory-mapped arrays, [epoch, sample, ...]; written in place by every rank."""
    os.makedirs(folder, exist_ok=True)
    shapes = ({"logits": ((epochs, num_samples, num_classes), dtype)} if not topk else
              {"values": ((epochs, num_samples, topk), dtype),
               "classes": ((epochs, num_samples, topk), np.int16 if num_classes < 2**15 else np.int32),
               "fill": ((epochs, num_samples), np.float32)})
    for name, (shape, kind) in shapes.items():
        np.lib.format.open_memmap(os.path.join(folder, f"{name}.npy"), mode="w+", dtype=kind, shape=shape).flush()


def compress(logits, topk):
    """Top-k logits and one fill value for the other classes, chosen so that softmax(reconstruction) keeps the
    top-k probabilities exactly and spreads the rest's mass evenly (FKD's soft labels, as logits)."""
    logits = logits.float()
    values, classes = logits.topk(topk, dim=1)
    log_z = torch.logsumexp(logits, dim=1)
    rest = (1 - torch.exp(values - log_z[:, None]).sum(1)).clamp_min(1e-12)
    return values, classes, torch.log(rest / (logits.shape[1] - topk)) + log_z


def fold_batchnorm(teacher):
    """The eval-mode teacher with each BatchNorm that follows a convolution folded into its weights: one pass
    less over each activation (resnet56 forward: 1.16-1.43x the images/s, docs/performance.md). A network
    that FX cannot trace is used as it is."""
    from torch.fx.experimental.optimization import fuse
    try:
        return fuse(teacher)
    except Exception:  # torch.fx raises TraceError, TypeError or others on control flow it cannot trace
        return teacher


@user_errors
def main(args):
    started = time.time()
    check_flags(args, non_negative=("topk",))
    if args.dataset not in TENSOR_DATASETS:
        raise UserError(f"cache_teacher.py caches in-memory data sets ({', '.join(TENSOR_DATASETS)}), not {args.dataset}")
    if os.path.exists(args.out) and os.listdir(args.out):
        raise UserError(f"--out {args.out} exists and is not empty; choose a new folder (a cache is never overwritten)")
    dist = setup_distributed(args.device, args.batch_size, args.threads)
    if dist.world_size > 1:
        torch_dist.barrier()  # every rank has checked --out before rank 0 creates it
    device, master = dist.device, dist.is_master
    seed_everything(args.seed, dist.rank)
    train_loader, val_loader, num_classes, _ = build_loaders(args, device, dist.rank, dist.world_size)
    if args.topk >= num_classes:
        raise UserError(f"--topk {args.topk} keeps every class of {num_classes}: use --topk 0")
    teacher, teacher_name = load_teacher(args, num_classes)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    teacher.eval().requires_grad_(False).to(device, memory_format=memory_format)
    if args.fold_bn is None:
        args.fold_bn = args.dtype != "float32"
    forward = fold_batchnorm(teacher) if args.fold_bn else teacher
    args.fold_bn = forward is not teacher  # the manifest says what was done: FX may fail to trace a network
    if args.compile:
        forward = torch.compile(forward, dynamic=False, options={"freezing": True})
    per_rank = args.batch_size // dist.world_size or 1
    autocast = autocast_context(args.amp, device)
    key = cache_key(args, train_loader, num_classes)
    num_samples = len(train_loader.sample_labels)
    if master:
        create_arrays(args.out, args.epochs, num_samples, num_classes, np.dtype(args.dtype), args.topk)
    if dist.world_size > 1:
        torch_dist.barrier()  # the files exist before any rank writes into them
    arrays = open_arrays(args.out, args.topk, mode="r+")

    # every image of every epoch, each rank a strided share: the rows a student run uses under any world size
    mine = torch.arange(dist.rank, num_samples, dist.world_size)
    for epoch in range(args.epochs):
        train_loader.set_epoch(epoch)
        for index in mine.split(per_rank):
            images = train_loader.augmented(index.to(device)).contiguous(memory_format=memory_format)
            if args.compile and len(index) < per_rank:  # padded to the compiled shape; the padding's rows dropped
                images = torch.cat([images, images[:1].expand(per_rank - len(index), *images.shape[1:])])
            with torch.no_grad(), autocast:
                logits = forward(images)[:len(index)].float()
            if not torch.isfinite(logits).all():
                raise UserError(f"the teacher gave non-finite logits in epoch {epoch + 1}; try --amp none")
            if args.dtype == "float16" and logits.abs().max() > 65504:
                raise UserError(f"the teacher's logits reach {logits.abs().max():.0f}, beyond float16: use --dtype float32")
            rows = index.numpy()
            outputs = (logits,) if not args.topk else compress(logits, args.topk)
            for array, output in zip(arrays, outputs):
                array[epoch, rows] = output.cpu().numpy().astype(array.dtype)
        if master:
            print(f"epoch {epoch + 1}/{args.epochs} cached ({time.time() - started:.0f} s)", flush=True)
    for array in arrays:
        array.flush()
    if dist.world_size > 1:
        torch_dist.barrier()  # every rank's rows are on disk before the manifest says the cache is complete
    teacher_top1 = evaluate(teacher, val_loader, autocast, device, memory_format)["top1"]  # on every rank: a collective
    if master:
        wall = time.time() - started
        size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
        manifest = {**key, "epochs": args.epochs, "dtype": args.dtype, "topk": args.topk, "amp": args.amp,
                    "eval_on": args.eval_on, "fold_bn": args.fold_bn, "compile": args.compile,
                    "teacher_model": teacher_name,
                    "teacher_path": args.teacher, "teacher_top1": teacher_top1,
                    "num_samples": num_samples, "bytes": size, "bytes_per_epoch": size // args.epochs,
                    "world_size": dist.world_size, "wall_time_s": round(wall, 2),
                    "images_per_sec": round(args.epochs * num_samples / wall, 1)}
        with open(os.path.join(args.out, MANIFEST + ".tmp"), "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(os.path.join(args.out, MANIFEST + ".tmp"), os.path.join(args.out, MANIFEST))
        print(f"wrote {args.out}: {args.epochs} epochs x {num_samples} images of {teacher_name} (top1 "
              f"{teacher_top1:.2f}), {size / 2**20:.1f} MiB, {wall:.1f} s")
    cleanup_distributed()


if __name__ == "__main__":
    main(parse_args())
