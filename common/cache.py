"""A teacher's logits on every augmented training image of every epoch, written once by cache_teacher.py and
replayed by the logit methods (`--teacher-cache DIR`), which then run no teacher in their training loop.
It holds exactly what the teacher would compute because an in-memory data set's augmented image is a
function of (data seed, epoch, sample index) alone (common.data.TensorLoader)."""
import hashlib
import json
import os

import numpy as np
import torch

from common import UserError
from common.data import TENSOR_DATASETS, data_seed, resolve_augment

MANIFEST = "manifest.json"
ARRAYS = {False: ("logits",), True: ("values", "classes", "fill")}  # full logits, or top-k (FKD-style)


def file_hash(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(args, train_loader, num_classes):
    """What a cache must have been written for to serve this run: the teacher, and every setting that
    changes the training images (the set itself is fingerprinted by its labels, in order)."""
    if args.dataset not in TENSOR_DATASETS:
        raise UserError(f"a teacher cache needs an in-memory data set ({', '.join(TENSOR_DATASETS)}): the "
                        f"augmentation of {args.dataset}'s image files is not replayable (docs/performance.md)")
    labels = train_loader.sample_labels.numpy().astype(np.int64)
    return {"teacher": file_hash(args.teacher) if args.teacher else f"torchvision:{args.teacher_model}",
            "dataset": args.dataset, "image_size": args.image_size if args.dataset == "fake" else None,
            "num_classes": num_classes, "train_fraction": args.train_fraction,
            "training_set": f"{len(labels)} images, labels sha256:{hashlib.sha256(labels.tobytes()).hexdigest()[:16]}",
            "data_seed": data_seed(args), "augment": resolve_augment(args.augment, args.dataset)}


def open_arrays(folder, topk, mode="r"):
    return [np.load(os.path.join(folder, f"{name}.npy"), mmap_mode=mode) for name in ARRAYS[bool(topk)]]


class TeacherCache:
    """Refuses a cache written for another run with one line naming the field; `logits(epoch, index)` gives the
    teacher's logits on the images `index` of `epoch`, from that epoch's table moved to `device` once.
    `teacher_top1`: the writer's evaluation of the teacher, when it was on this run's (eval set, amp), else None."""

    def __init__(self, folder, key, epochs, device, evaluation=("val", "none")):
        path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(path):
            raise UserError(f"--teacher-cache {folder}: no {MANIFEST} (not a cache, or its writer did not finish); "
                            "write one with cache_teacher.py")
        with open(path) as f:
            self.manifest = json.load(f)
        for field, value in key.items():
            if self.manifest.get(field) != value:
                raise UserError(f"--teacher-cache {folder} was written for {field} {self.manifest.get(field)!r}, "
                                f"this run has {value!r}; write a cache for this run with cache_teacher.py")
        if self.manifest["epochs"] < epochs:
            raise UserError(f"--teacher-cache {folder} holds {self.manifest['epochs']} epochs, this run trains {epochs}; "
                            f"write one with cache_teacher.py --epochs {epochs}")
        self.topk, self.num_classes, self.device = self.manifest["topk"], key["num_classes"], device
        same_evaluation = (self.manifest.get("eval_on"), self.manifest.get("amp")) == tuple(evaluation)
        self.teacher_top1 = self.manifest.get("teacher_top1") if same_evaluation else None
        self.arrays, self.epoch, self.tables = open_arrays(folder, self.topk), None, None

    def logits(self, epoch, index):
        if epoch != self.epoch:  # one read of the epoch's rows: no host sync in the steps
            self.tables = [torch.from_numpy(np.array(a[epoch])).to(self.device) for a in self.arrays]
            self.epoch = epoch
        if not self.topk:
            return self.tables[0][index].float()
        values, classes, fill = (table[index] for table in self.tables)
        full = fill[:, None].expand(-1, self.num_classes)
        return full.scatter(1, classes.long(), values.float())
