"""Throughput of the data path against the bare model step, on the current device.

    python scripts/bench_loader.py                                   # digits, resnet56, batch 64
    python scripts/bench_loader.py --dataset fake --image-size 32 --model resnet20 --batch-size 512

Prints images/s of (1) the loader alone, (2) the bare training step (forward, backward, SGD) on
one batch that is already on the device, and (3) loader + step, as in the training scripts, and
the ratio (3)/(2): how close the data path lets training get to the model's own speed.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.data import build_loaders  # noqa: E402
from common.models import create_model  # noqa: E402
from common.utils import autocast_context  # noqa: E402


def timed(device, fn, steps):
    fn(5)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = fn(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--loader", default="auto")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    args.download, args.train_fraction, args.val_resize, args.seed = False, 1.0, 256, 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_flush_denormal(True)  # as the training scripts do (common.utils.setup_distributed)
    train, _, num_classes, _ = build_loaders(args, device)
    model = create_model(args.model, num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    autocast = autocast_context(args.amp, device)

    def batches(steps):
        count, epoch = 0, 0
        while True:
            train.set_epoch(epoch)
            for batch in train:
                yield batch
                count += 1
                if count == steps:
                    return
            epoch += 1

    def step(images, labels):
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def loader_only(steps):
        return sum(len(images) for images, _ in batches(steps))

    fixed = next(iter(train))

    def model_only(steps):
        for _ in range(steps):
            step(*fixed)
        return steps * len(fixed[0])

    def both(steps):
        count = 0
        for images, labels in batches(steps):
            step(images, labels)
            count += len(images)
        return count

    rates = {name: timed(device, fn, args.steps) for name, fn in
             [("loader alone", loader_only), ("bare model step", model_only), ("loader + step", both)]}
    print(f"{args.dataset} / {args.model} / batch {args.batch_size} / {args.amp} on {device} "
          f"({torch.get_num_threads()} threads)")
    for name, rate in rates.items():
        print(f"  {name:16s} {rate:10.0f} images/s")
    print(f"  loader + step reaches {100 * rates['loader + step'] / rates['bare model step']:.0f}% of the bare step")


if __name__ == "__main__":
    main()
