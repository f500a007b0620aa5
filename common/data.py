"""Data sets and loaders. Every loader yields `(images, labels)`, normalised float NCHW and int64 on the training
device, this rank's shard only, and has `set_epoch(epoch)` and `len()`. Small data sets (digits, CIFAR, fake) live on
the device as uint8, augmented a whole batch at a time with tensor ops (`TensorLoader`); image-file data sets are
(path, label) lists read by NVIDIA DALI (`DaliLoader`) or a torchvision DataLoader (`TorchLoader`, `--loader torch`).
`--augment` recipes (README: Data sets) are the same operations and ranges in every loader that has them: standard,
reflect (seed 001, in memory), cub (seed 000, files), fastai (seed 004, fastai v1 `get_transforms(do_flip=False)`).
"""
import csv
import json
import math
import os
import pickle
from functools import partial

import numpy as np
import torch
from PIL import Image

from common import UserError
from common.models import CIFAR_MODELS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
TENSOR_DATASETS = ("digits", "cifar10", "cifar100", "fake")
FILE_DATASETS = ("imagenet", "imagenette", "imagewoof", "mini-imagenet", "cub200", "imagefolder")
DATASETS = TENSOR_DATASETS + FILE_DATASETS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
EVAL_SETS = ("val", "heldout")


class DataError(UserError):
    """A problem with the user's data: reported as one line."""


# ---------------------------------------------------------------- subsets and recipes
def stratified_subset(labels, fraction, seed=0):
    """Indices of a fixed, seeded, class-stratified `fraction` of `labels` (at least one per class)."""
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        keep.append(rng.choice(idx, max(1, round(len(idx) * fraction)), replace=False))
    return np.sort(np.concatenate(keep))


def split_training_set(labels, fraction, eval_on):
    """(training indices, and for `--eval-on heldout` the indices training never sees, else None)."""
    keep = stratified_subset(labels, fraction, seed=0)
    if eval_on != "heldout":
        return keep, None
    if fraction >= 1.0:
        raise DataError("--eval-on heldout needs --train-fraction below 1: it evaluates on the training images "
                        "that the fraction leaves out")
    return keep, np.setdiff1d(np.arange(len(labels)), keep)


def resolve_augment(recipe, name):
    """The recipe that `--augment` names for data set `name`, if the loaders implement it there."""
    if recipe == "auto":
        recipe = "cub" if name == "cub200" else "standard"
    allowed = ("standard", "cub", "fastai")
    if name in TENSOR_DATASETS:  # reflect flips, and a mirrored digit is another digit
        allowed = ("standard", "fastai") if name == "digits" else ("standard", "reflect", "fastai")
    if recipe not in allowed:
        raise DataError(f"--augment {recipe} does not apply to {name}; choose auto or one of: {', '.join(allowed)}")
    return recipe


# fastai v1 get_transforms(do_flip=False), seed 004: written once for torch tensors and for DALI graph
# nodes, so that both loaders draw the same distributions. `ops` is `torch` or `nvidia.dali.math`;
# `uniform(low, high)` and `coin(p)` draw one value per image.
def fastai_params(uniform, coin, ops):
    """One image's draws; an op that its p=0.75 coin skips gets its identity value."""
    warp_on, rotate_on, zoom_on, brightness_on, contrast_on = (coin(0.75) for _ in range(5))
    change = uniform(0.4, 0.6)  # brightness(change): adds logit(change) to logit(pixel), so grey 0.5 -> change
    return {
        "warp": [uniform(-0.2, 0.2) * warp_on for _ in range(4)],  # symmetric_warp(magnitude=(-0.2, 0.2))
        "angle": uniform(-10.0, 10.0) * (math.pi / 180) * rotate_on,
        "zoom": 1 + (uniform(1.0, 1.1) - 1) * zoom_on,
        "focus": (uniform(0.0, 1.0), uniform(0.0, 1.0)),  # rand_zoom's col_pct, row_pct
        "shift": (ops.log(change) - ops.log(1 - change)) * brightness_on,
        "contrast": ops.exp(uniform(math.log(0.8), math.log(1.25)) * contrast_on),  # log-uniform(0.8, 1.25)
    }


def fastai_homography(params, ops):
    """Row-major 3x3 map (9 entries) from source to output coordinates in [-1, 1], x right, y down. fastai samples
    the source at rotate(zoom(warp(p))) for output point p; this is the inverse, warp^-1 zoom^-1 rotate^-1."""
    m0, m1, m2, m3 = params["warp"]
    # warp^-1 takes the corners (-1,-1), (1,-1), (1,1), (-1,1) to fastai's targ_pts: Heckbert's square-to-quad map
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = (-1 - m3, -1 - m1), (1 + m3, -1 - m0), (1 + m2, 1 + m0), (-1 - m2, 1 + m1)
    sx, sy = x0 - x1 + x2 - x3, y0 - y1 + y2 - y3
    dx1, dx2, dy1, dy2 = x1 - x2, x3 - x2, y1 - y2, y3 - y2
    den = dx1 * dy2 - dx2 * dy1
    g, h = (sx * dy2 - dx2 * sy) / den, (dx1 * sy - sx * dy1) / den
    a, b, d, e = x1 - x0 + g * x1, x3 - x0 + h * x3, y1 - y0 + g * y1, y3 - y0 + h * y3
    # from [-1, 1] to Heckbert's unit square, u = (x + 1) / 2
    warp = [(a / 2, b / 2, (a + b) / 2 + x0), (d / 2, e / 2, (d + e) / 2 + y0), (g / 2, h / 2, (g + h) / 2 + 1)]
    # zoom^-1 rotate^-1 (affine): rotate back, then scale by k about fastai's focal point
    k, (col, row) = params["zoom"], params["focus"]
    cos, sin = ops.cos(params["angle"]), ops.sin(params["angle"])
    l11, l12, l13 = k * cos, k * sin, (1 - k) * (2 * col - 1)
    l21, l22, l23 = -k * sin, k * cos, (1 - k) * (2 * row - 1)
    return [entry for q1, q2, q3 in warp
            for entry in (q1 * l11 + q2 * l21, q1 * l12 + q2 * l22, q1 * l13 + q2 * l23 + q3)]


def fastai_lighting(images, shift, contrast, ops):
    """fastai's brightness then contrast act on logit(pixel), pixels in [0, 1]: sigmoid((logit + shift) * contrast)."""
    images = ops.clamp(images, 1e-7, 1 - 1e-7)  # fastai's logit clamp
    return 1 / (1 + ops.exp(-(ops.log(images) - ops.log(1 - images) + shift) * contrast))


def torch_draws(n, generator=None, device=None):
    """`uniform` and `coin` for `fastai_params`: n values each, from `generator` (None: torch's global RNG)."""
    rand = partial(torch.rand, n, generator=generator, device=device)
    return (lambda low, high: low + (high - low) * rand()), (lambda p: (rand() < p).float())


def fastai_augment(images, params):
    """Warp, rotate and zoom as one bilinear resampling with reflection padding, then lighting, on float NCHW images
    in [0, 1]; `params` from `fastai_params` with n values each."""
    n, _, height, width = images.shape
    to_output = torch.stack(fastai_homography(params, torch), -1).view(n, 3, 3)
    to_source = torch.linalg.inv_ex(to_output).inverse  # inv_ex skips the singularity check: no host sync
    ys, xs = torch.meshgrid((torch.arange(height, device=images.device) * 2 + 1) / height - 1,
                            (torch.arange(width, device=images.device) * 2 + 1) / width - 1, indexing="ij")
    source = torch.einsum("nij,hwj->nhwi", to_source, torch.stack([xs, ys, torch.ones_like(xs)], -1))
    images = torch.nn.functional.grid_sample(images, source[..., :2] / source[..., 2:], mode="bilinear",
                                             padding_mode="reflection", align_corners=False)
    return fastai_lighting(images, params["shift"].view(-1, 1, 1, 1), params["contrast"].view(-1, 1, 1, 1), torch)


class FastaiTransform:
    """`fastai_augment` as a torchvision transform: one float CHW image, drawn from the worker's torch RNG."""

    def __call__(self, image):
        return fastai_augment(image[None], fastai_params(*torch_draws(1), torch))[0]


def dali_fastai(images, size, params):
    """`fastai_augment` in a DALI graph, on uint8 HWC `size` x `size` images; returns float 0..255."""
    from nvidia.dali import fn
    from nvidia.dali import math as dmath
    half = size / 2  # [-1, 1] -> pixels from the top-left corner: P = D A D^-1, D = [[half, 0, half], [0, half, half]]
    entries = fastai_homography(params, dmath)
    rows = [(r0 / half, r1 / half, r2 - r0 - r1) for r0, r1, r2 in zip(entries[0::3], entries[1::3], entries[2::3])]
    pixels = [half * (top + bottom) for row in rows[:2] for top, bottom in zip(row, rows[2])] + list(rows[2])
    images = fn.experimental.warp_perspective(  # "reflect" repeats the edge pixel, as grid_sample's reflection does
        images, matrix=fn.reshape(fn.stack(*pixels), shape=[3, 3]), inverse_map=False, size=[size, size],
        border_mode="reflect", pixel_origin="corner")
    return fastai_lighting(images * (1 / 255), params["shift"], params["contrast"], dmath) * 255


def dali_draws():
    """`uniform` and `coin` for `fastai_params` in a DALI graph."""
    from nvidia.dali import fn
    return (lambda low, high: fn.random.uniform(range=[low, high])), (lambda p: fn.random.coin_flip(probability=p))


def dali_cub(images):
    """Seed 000's RandomRotation(45) + RandomGrayscale(0.2) + ColorJitter(brightness=0.2, contrast=0.2) in a DALI
    graph, after the random-resized crop; returns float 0..255."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath
    # fill_value: black corners, as torchvision (DALI would otherwise repeat the border)
    images = fn.rotate(images, angle=fn.random.uniform(range=[-45, 45]), keep_size=True, fill_value=0)
    # saturation 0 leaves Y = 0.299 R + 0.587 G + 0.114 B in every channel, as PIL's grayscale
    images = fn.saturation(images, saturation=1.0 - fn.random.coin_flip(probability=0.2))
    images = fn.brightness(images, brightness=fn.random.uniform(range=[0.8, 1.2]))
    # PIL's contrast pivots on the image's mean grey level, not on mid-grey as DALI's contrast does
    channel_means = fn.reductions.mean(images, axis_names="HW", keep_dims=True)
    grey = fn.reductions.sum(channel_means * types.Constant(np.array([0.299, 0.587, 0.114], np.float32)),
                             axis_names="C", keep_dims=True)
    return dmath.clamp(grey + (images - grey) * fn.random.uniform(range=[0.8, 1.2]), 0, 255)


# ---------------------------------------------------------------- in-memory data sets (uint8 NHWC numpy)
def load_digits_arrays():
    """scikit-learn's bundled handwritten digits: 1,797 8x8 images, 10 classes, 80/20 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=3)  # 0..16 -> 0..255, RGB
    x_train, x_val, y_train, y_val = train_test_split(images, digits.target, test_size=0.2, stratify=digits.target,
                                                      random_state=0)
    return (x_train, y_train), (x_val, y_val), 10


CIFAR_LAYOUT = {  # torchvision's on-disk format: python pickles of (N, 3072) uint8 rows
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}


def load_cifar_arrays(name, data_dir, download):
    folder, train_files, val_files, meta_file, label_key, names_key = CIFAR_LAYOUT[name]
    root = os.path.join(data_dir, folder)
    if not os.path.isdir(root):
        if not download:
            raise DataError(f"{name} not found: no {root}; add --download to fetch it, or point --data-dir at "
                            f"the folder that holds {folder}/")
        from torchvision.datasets import CIFAR10, CIFAR100
        try:  # torchvision downloads, checks the MD5 and extracts
            (CIFAR10 if name == "cifar10" else CIFAR100)(data_dir, download=True)
        except OSError as err:  # URLError is an OSError
            raise DataError(f"could not download {name} into {data_dir} ({err}); fetch it on a machine with "
                            "network access and copy the extracted folder there") from None

    def read(files):
        images, labels = [], []
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += batch[label_key]
        return np.concatenate(images), np.array(labels)
    try:
        with open(os.path.join(root, meta_file), "rb") as fh:
            num_classes = len(pickle.load(fh, encoding="bytes")[names_key])
        return read(train_files), read(val_files), num_classes
    except (OSError, KeyError, pickle.UnpicklingError, ValueError) as err:
        raise DataError(f"{root} is not a complete {name} folder ({type(err).__name__}: {err})") from None


def make_fake_arrays(image_size, num_classes, num_train=2048, num_val=512, seed=0):
    rng = np.random.default_rng(seed)
    def split(n):
        return rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8), rng.integers(0, num_classes, n)
    return split(num_train), split(num_val), num_classes


# ---------------------------------------------------------------- image-file layouts: lists of (path, label)
def _class_folder_samples(root):
    if not os.path.isdir(root):
        raise DataError(f"missing folder {root}")
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    samples = [(os.path.join(dirpath, f), index) for index, cls in enumerate(classes)
               for dirpath, _, files in sorted(os.walk(os.path.join(root, cls)))
               for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not samples:
        raise DataError(f"no images found in the class folders of {root}")
    empty = sorted(set(classes) - {classes[label] for _, label in samples})
    if empty:  # a class no image teaches: a dead output, or a top-1 over fewer classes
        raise DataError(f"class folder {os.path.join(root, empty[0])} holds no images ({len(empty)} such); "
                        "remove it or add its images")
    return samples, classes


def class_folder_split(data_dir):
    """`train/<class>/*.jpg` and `val/<class>/*.jpg`: ImageNet, Imagenette and Imagewoof (v1 or v2), any folder."""
    train, classes = _class_folder_samples(os.path.join(data_dir, "train"))
    val, val_classes = _class_folder_samples(os.path.join(data_dir, "val"))
    if val_classes != classes:
        raise DataError(f"{data_dir}: val/ and train/ hold different class folders")
    return train, val, len(classes)


def _csv_samples(path, image_dir):
    """(image path, label) rows of a CSV file's `filename` and `label` columns; others (pandas' index) are ignored."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not {"filename", "label"} <= set(reader.fieldnames or ()):
                raise DataError(f"{path} needs 'filename' and 'label' columns; its header is {reader.fieldnames}")
            return [(os.path.join(image_dir, row["filename"]), row["label"]) for row in reader]
    except (OSError, csv.Error) as err:
        raise DataError(f"cannot read {path} ({err})") from None


def mini_imagenet_split(data_dir):
    """mini-ImageNet in the first layout that `data_dir` holds: seed 003's 100-class split (`images/`, `new_train.csv`
    and `new_val.csv`, label = wnid, and `classes_name.json`: {wnid: [class index, name]}); class folders `train/` and
    `val/`; `images/` with `train.csv` and `val.csv`, if val's classes are train's (not in the few-shot split)."""
    images = os.path.join(data_dir, "images")
    if os.path.isfile(os.path.join(data_dir, "new_train.csv")):
        index_path = os.path.join(data_dir, "classes_name.json")
        try:
            with open(index_path) as f:
                index = {wnid: int(entry[0]) for wnid, entry in json.load(f).items()}
        except (OSError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
            raise DataError(f"cannot read class indices from {index_path} ({type(err).__name__}: {err}); "
                            "it maps each wnid to [index, name]") from None

        def read(name):
            path = os.path.join(data_dir, name)
            samples = _csv_samples(path, images)
            unknown = sorted({label for _, label in samples} - set(index))
            if unknown:
                raise DataError(f"{index_path} has no class index for {', '.join(unknown[:3])} (used in {path})")
            return [(p, index[label]) for p, label in samples]
        return read("new_train.csv"), read("new_val.csv"), max(index.values()) + 1
    if os.path.isdir(os.path.join(data_dir, "train")):
        return class_folder_split(data_dir)
    if not os.path.isfile(os.path.join(data_dir, "train.csv")):
        raise DataError(f"mini-imagenet: {data_dir} holds none of new_train.csv, train/ or train.csv")
    train, val = (_csv_samples(os.path.join(data_dir, f"{split}.csv"), images) for split in ("train", "val"))
    index = {cls: i for i, cls in enumerate(sorted({label for _, label in train}))}
    unknown = sorted({label for _, label in val} - set(index))
    if unknown:
        raise DataError(f"mini-imagenet: val.csv has classes that train.csv lacks ({unknown[:3]}...); "
                        "use a split whose train and val share their classes")
    return [(p, index[c]) for p, c in train], [(p, index[c]) for p, c in val], len(index)


def cub200_split(data_dir):
    """CUB_200_2011: images.txt, image_class_labels.txt (1-based), train_test_split.txt, images/."""
    root = os.path.join(data_dir, "CUB_200_2011") if os.path.isdir(os.path.join(data_dir, "CUB_200_2011")) else data_dir
    def table(name):
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise DataError(f"cub200: missing {path}")
        with open(path) as f:
            rows = [line.split(maxsplit=1) for line in f if line.strip()]
        if any(len(row) != 2 for row in rows):
            raise DataError(f"cub200: {path} has a line that is not '<image id> <value>'")
        return {image_id: value.strip() for image_id, value in rows}
    paths, labels, is_train = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    missing = sorted((set(paths) - set(labels)) | (set(paths) - set(is_train)))
    if missing:
        raise DataError(f"cub200: image id {missing[0]} of images.txt ({len(missing)} such) has no row in "
                        "image_class_labels.txt or train_test_split.txt")
    train, val = [], []
    for image_id, rel in paths.items():
        sample = (os.path.join(root, "images", rel), int(labels[image_id]) - 1)
        (train if is_train[image_id] == "1" else val).append(sample)
    return train, val, len(set(labels.values()))


def file_dataset(name, data_dir):
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir!r} does not exist; {name} must be on disk (see README: Data sets)")
    return {"mini-imagenet": mini_imagenet_split, "cub200": cub200_split}.get(name, class_folder_split)(data_dir)


# ---------------------------------------------------------------- loaders
class TensorLoader:
    """A whole data set as uint8 NCHW on `device`, augmented per batch with tensor ops: a random crop of the image
    padded by `pad` pixels (zeros, or a reflection with `reflect`), a flip with `flip`, fastai's recipe with `fastai`.
    The order and each image's augmentation are functions of (seed, epoch) and of the image's index alone, not of the
    rank, world size or batch size: a resumed run and a run on another number of processes see the same images, and
    a teacher's outputs on them can be computed once (cache_teacher.py). `with_index` adds each image's index."""

    DRAWS = 18  # uniform numbers per image and epoch: 2 crop shifts, 1 flip, 15 for fastai's recipe

    def __init__(self, images, labels, batch_size, device, mean, std, train, pad=0, reflect=False, flip=False,
                 fastai=False, rank=0, world_size=1, seed=0, with_index=False):
        self.images = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(device)
        self.sample_labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.batch_size, self.train, self.pad, self.reflect, self.flip, self.fastai = (
            batch_size, train, pad, reflect, flip, fastai)
        assert not reflect or pad < min(self.images.shape[2:]), "a reflection reaches at most size - 1 pixels"
        self.rank, self.world_size, self.seed, self.with_index = rank, world_size, seed, with_index
        self.epoch, self.draws = 0, None
        # train: every rank the same number of full batches, so DDP ranks step together
        self.num_batches = (len(self.labels) // world_size // batch_size if train
                            else math.ceil(len(range(rank, len(self.labels), world_size)) / batch_size))
        if train and self.num_batches == 0:
            raise DataError(f"the training set ({len(self.labels)} images) is smaller than one global batch "
                            f"({batch_size * world_size}); lower --batch-size")

    def set_epoch(self, epoch):
        self.epoch, self.draws = epoch, None

    def __len__(self):
        return self.num_batches

    def augmented(self, index):
        """Images `index` (a tensor of sample indices) as the model sees them in the current epoch, normalised."""
        images = self.images[index]
        if self.train:
            if self.draws is None:  # every image's numbers for the epoch, drawn on the CPU: the same on any device
                generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch * 7919 + 1)
                self.draws = torch.rand(len(self.labels), self.DRAWS, generator=generator).to(self.images.device)
            images = self._augment(images, self.draws[index])
        return (images.float() - self.mean) / self.std

    def _augment(self, images, draws):
        n, channels, height, width = images.shape
        device = images.device
        if self.pad:  # source pixels of a random window, up to `pad` outside the image, gathered in one go
            shifts = (draws[:, :2] * (2 * self.pad + 1)).long().clamp(max=2 * self.pad)
            rows, cols = (shifts[:, i:i + 1] + torch.arange(size, device=device) - self.pad
                          for i, size in enumerate((height, width)))
            if self.reflect:  # torchvision's Pad(padding_mode="reflect"): -1 -> 1, size -> size - 2
                source, rows, cols = images, _reflect(rows, height), _reflect(cols, width)
            else:
                source, rows, cols = torch.nn.functional.pad(images, (self.pad,) * 4), rows + self.pad, cols + self.pad
            images = source[torch.arange(n, device=device)[:, None, None, None],
                            torch.arange(channels, device=device)[None, :, None, None],
                            rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip:
            images = torch.where((draws[:, 2] < 0.5)[:, None, None, None], images.flip(3), images)
        if self.fastai:
            columns = iter(draws[:, 3:].unbind(1))
            params = fastai_params(lambda low, high: low + (high - low) * next(columns),
                                   lambda p: (next(columns) < p).float(), torch)
            images = fastai_augment(images.float() / 255, params) * 255
        return images

    def indices(self):
        """This rank's sample indices for the current epoch, in order."""
        if not self.train:
            return torch.arange(self.rank, len(self.labels), self.world_size)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.labels), generator=generator)
        return order[self.rank::self.world_size][: self.num_batches * self.batch_size]

    def __iter__(self):
        shard = self.indices().to(self.images.device)
        for start in range(0, len(shard), self.batch_size):
            index = shard[start:start + self.batch_size]
            batch = (self.augmented(index), self.labels[index])
            yield batch + (index,) if self.with_index else batch


def _reflect(index, size):
    """Mirror indices in [-(size - 1), 2 (size - 1)] into the image without repeating the edge."""
    return (size - 1) - ((size - 1) - index.abs()).abs()


class FileListDataset(torch.utils.data.Dataset):
    """Item `(epoch, i)` draws image i's augmentation from a generator seeded by (seed, epoch, i): the same
    images in any worker, and after a resume; item `i` uses the worker's own RNG. `with_index` appends i."""

    def __init__(self, samples, transform, seed=0, with_index=False):
        self.samples, self.transform, self.seed, self.with_index = samples, transform, seed, with_index

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        epoch, i = item if isinstance(item, tuple) else (None, item)
        path, label = self.samples[i]
        try:
            with Image.open(path) as image:
                if image.mode.startswith("I"):  # 16-bit grey: scaled by 1/257 as DALI's decoder does (PIL clips it)
                    image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255)
                                            .astype(np.uint8))
                image = image.convert("RGB")
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        if epoch is None:
            image = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):  # torchvision's transforms draw from torch's global RNG
                torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
                image = self.transform(image)
        return (image, label, i) if self.with_index else (image, label)


class EpochSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler yielding (epoch, index), for `FileListDataset`'s per-image seeds."""

    def __iter__(self):
        return ((self.epoch, i) for i in super().__iter__())


def torchvision_transform(train, image_size, val_resize, mean, std, recipe="standard"):
    """Train: the `recipe`'s augmentation (see `resolve_augment`); val: resize the shorter side, centre crop."""
    from torchvision import transforms as T
    tensor_steps = []
    if not train:
        steps = [T.Resize(val_resize), T.CenterCrop(image_size)]
    elif recipe == "cub":  # seed 000's CUB-200 recipe, in its order
        steps = [T.RandomResizedCrop(image_size, scale=(0.2, 1.0), ratio=(0.8, 1.25)), T.RandomHorizontalFlip(),
                 T.RandomRotation(45, interpolation=T.InterpolationMode.BILINEAR), T.RandomGrayscale(0.2),
                 T.ColorJitter(brightness=0.2, contrast=0.2)]
    elif recipe == "fastai":  # fastai's rand_crop of the resized image, then its tensor transforms
        steps, tensor_steps = [T.Resize(image_size), T.RandomCrop(image_size)], [FastaiTransform()]
    else:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    return T.Compose(steps + [T.ToTensor()] + tensor_steps + [T.Normalize(mean, std)])


class TorchLoader:
    """torchvision DataLoader, `--workers` processes; train sharded by DistributedSampler, val every world_size-th
    image so that no image is counted twice."""

    def __init__(self, samples, batch_size, device, train, image_size, val_resize, mean, std, workers, rank, world_size,
                 seed, recipe="standard", with_index=False):
        transform = torchvision_transform(train, image_size, val_resize, mean, std, recipe)
        dataset = FileListDataset(samples, transform, seed, with_index)
        self.device, self.sampler = device, None
        self.sample_labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        if train:
            self.sampler = EpochSampler(dataset, world_size, rank, shuffle=True, seed=seed, drop_last=True)
        else:
            dataset = torch.utils.data.Subset(dataset, range(rank, len(samples), world_size))
        self.loader = torch.utils.data.DataLoader(dataset, batch_size, sampler=self.sampler, num_workers=workers,
                                                  drop_last=train, pin_memory=device.type == "cuda",
                                                  persistent_workers=workers > 0)

    def set_epoch(self, epoch):
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        try:
            for batch in self.loader:
                yield tuple(tensor.to(self.device, non_blocking=True) for tensor in batch)
        except Exception as err:  # a worker's DataError arrives re-wrapped with its traceback
            if "DataError" in str(err) or isinstance(err, DataError):
                raise DataError(str(err).strip().splitlines()[-1].removeprefix("common.data.DataError: ")) from None
            raise


class DaliLoader:
    """NVIDIA DALI: files sharded by rank, decoded on "mixed" (GPU) or "cpu", the `recipe` (train) or val's crop."""

    def __init__(self, samples, batch_size, device, train, image_size, val_resize, mean, std,
                 workers, rank, world_size, seed, recipe="standard", with_index=False):
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali import math as dmath
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
        on_gpu = device.type == "cuda"
        self.files, self.device, self.with_index = [path for path, _ in samples], device, with_index
        self.sample_labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        self.label_of = self.sample_labels.to(device)

        @pipeline_def
        def pipeline(shuffle_seed):
            # shuffle_after_epoch: each epoch (the first too) a new permutation of the whole set, the same on every
            # rank, each taking its shard (random_shuffle mixes a 1,024-image buffer); padding keeps epochs apart.
            # with_index: the reader's "label" is the sample's index, mapped to its class after the pipeline
            jpegs, labels = fn.readers.file(
                files=self.files, labels=list(range(len(samples))) if with_index else self.sample_labels.tolist(),
                shuffle_after_epoch=train, shuffle_after_epoch_seed=shuffle_seed, shard_id=rank, num_shards=world_size,
                pad_last_batch=True, name="Reader")
            images = fn.decoders.image(jpegs, device="mixed" if on_gpu else "cpu", output_type=types.RGB)
            mirror = False
            if not train:
                images = fn.resize(images, resize_shorter=val_resize)
            elif recipe == "fastai":
                images = fn.crop(fn.resize(images, resize_shorter=image_size), crop=[image_size, image_size],
                                 crop_pos_x=fn.random.uniform(range=[0, 1]), crop_pos_y=fn.random.uniform(range=[0, 1]))
                images = dali_fastai(images, image_size, fastai_params(*dali_draws(), dmath))
            else:
                area, ratio = ((0.2, 1.0), (0.8, 1.25)) if recipe == "cub" else ((0.08, 1.0), (3 / 4, 4 / 3))
                images = fn.random_resized_crop(images, size=[image_size, image_size], random_area=area,
                                                random_aspect_ratio=ratio)
                mirror = fn.random.coin_flip(probability=0.5)  # flipping last = second: rotations are symmetric
                if recipe == "cub":
                    images = dali_cub(images)
            images = fn.crop_mirror_normalize(
                images, dtype=types.FLOAT, output_layout="CHW", crop=(image_size, image_size),
                mean=[m * 255 for m in mean], std=[s * 255 for s in std], mirror=mirror)
            return images, labels.gpu() if on_gpu else labels

        def build(epoch):
            pipe = pipeline(seed * 10_007 + epoch, batch_size=batch_size, num_threads=max(1, workers),
                            seed=((seed * 1000 + rank) * 10_007 + epoch) % 2**31,
                            device_id=(device.index or 0) if on_gpu else None, prefetch_queue_depth=2)
            pipe.build()
            return DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader", auto_reset=True,
                                       prepare_first_batch=False,
                                       last_batch_policy=LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL)
        self.build, self.epoch, self.train = build, 0, train
        self.iterator = build(0)

    def set_epoch(self, epoch):
        """Training reads each epoch from a pipeline seeded by the epoch (order and augmentation), so that a
        resumed run sees what an uninterrupted one does; building one costs well under a second."""
        if self.train and epoch != self.epoch:
            del self.iterator
            self.iterator, self.epoch = self.build(epoch), epoch

    def __len__(self):
        return len(self.iterator)

    def __iter__(self):
        try:
            for batch in self.iterator:
                images = batch[0]["images"].to(self.device, non_blocking=True)
                labels = batch[0]["labels"].view(-1).long().to(self.device, non_blocking=True)
                yield (images, self.label_of[labels], labels) if self.with_index else (images, labels)
        except RuntimeError as err:
            bad = next((p for p in self.files if not _is_readable(p)), None)
            if bad is not None:
                raise DataError(f"cannot decode image {bad}; remove or replace it") from None
            raise DataError(f"DALI failed: {str(err).strip().splitlines()[-1]}") from None


def _is_readable(path):
    """A full decode: PIL's verify() passes truncated and corrupt JPEGs."""
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


def dali_available():
    try:
        import nvidia.dali  # noqa: F401
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------- entry point
def data_seed(args):
    """The seed of the data's order and augmentation: --data-seed, or --seed when it is not given."""
    return args.seed if getattr(args, "data_seed", None) is None else args.data_seed


def check_model_fits(args):
    """A CIFAR network keeps full resolution through its first stage: large images would need tens of GB."""
    if getattr(args, "model", None) in CIFAR_MODELS and args.image_size > 64:
        raise DataError(f"--model {args.model} is a CIFAR network (no downsampling stem): {args.image_size}x"
                        f"{args.image_size} images need tens of GB of activations; use --image-size 64 or less, "
                        "or an ImageNet model (resnet18, sw_resnet18, ...)")


def build_loaders(args, device, rank=0, world_size=1, with_index=False):
    """(train_loader, val_loader, num_classes, image_shape) for `args.dataset` and `args.augment`; `args.eval_on ==
    "heldout"` validates, with the val transform, on the training images that `args.train_fraction` leaves out.
    Order and augmentation follow `data_seed(args)`. `with_index`: the train loader yields (images, labels, indices),
    each image's index into the training set, whose classes it holds in `sample_labels`."""
    name = args.dataset
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; choose one of: {', '.join(DATASETS)}")
    if args.image_size is None:  # what the default models fit on a CPU: CIFAR networks at 32, ImageNet ones at 224
        args.image_size = 32 if name == "fake" else 224
    eval_on = getattr(args, "eval_on", "val")
    if eval_on not in EVAL_SETS:
        raise DataError(f"unknown --eval-on '{eval_on}'; choose one of: {', '.join(EVAL_SETS)}")
    recipe = resolve_augment(getattr(args, "augment", "auto"), name)
    common = dict(batch_size=args.batch_size // world_size, device=device, rank=rank, world_size=world_size,
                  seed=data_seed(args))
    if name == "fake":
        check_model_fits(args)
    if name in TENSOR_DATASETS:
        if args.loader not in ("auto", "tensor"):
            raise DataError(f"{name} is held in memory: use --loader tensor (or auto), not {args.loader}")
        if name == "digits":
            (x_train, y_train), (x_val, y_val), num_classes = load_digits_arrays()
        elif name == "fake":
            (x_train, y_train), (x_val, y_val), num_classes = make_fake_arrays(args.image_size, args.num_classes)
        else:
            (x_train, y_train), (x_val, y_val), num_classes = load_cifar_arrays(name, args.data_dir, args.download)
        if name in CIFAR_STATS:
            mean, std = CIFAR_STATS[name]
        else:  # of the whole train split, so a teacher trained on all of it sees the same inputs
            mean, std = (x_train.mean((0, 1, 2)) / 255).tolist(), (x_train.std((0, 1, 2)) / 255).tolist()
        keep, heldout = split_training_set(y_train, args.train_fraction, eval_on)
        if heldout is not None:
            x_val, y_val = x_train[heldout], y_train[heldout]
        x_train, y_train = x_train[keep], y_train[keep]
        # standard: zero padding of 1 px (digits, not flipped: a mirrored digit is another digit), 0 (fake), 4 (CIFAR)
        standard = dict(pad={"digits": 1, "fake": 0}.get(name, 4), flip=name != "digits")
        augment = {"standard": standard, "reflect": dict(pad=4, reflect=True, flip=True), "fastai": dict(fastai=True)}
        if recipe == "reflect" and min(x_train.shape[1:3]) <= 4:
            raise DataError(f"--augment reflect pads 4 pixels by reflection: it needs images larger than 4x4, "
                            f"not {x_train.shape[1]}x{x_train.shape[2]}")
        train = TensorLoader(x_train, y_train, mean=mean, std=std, train=True, with_index=with_index,
                             **augment[recipe], **common)
        val = TensorLoader(x_val, y_val, mean=mean, std=std, train=False, **common)
        return train, val, num_classes, (3,) + tuple(x_train.shape[1:3])

    train_samples, val_samples, num_classes = file_dataset(name, args.data_dir)
    check_model_fits(args)
    keep, heldout = split_training_set([label for _, label in train_samples], args.train_fraction, eval_on)
    if heldout is not None:
        val_samples = [train_samples[i] for i in heldout]
    train_samples = [train_samples[i] for i in keep]
    loader = args.loader
    if loader == "auto":
        loader = "dali" if dali_available() else "torch"
    if loader == "tensor":
        raise DataError(f"{name} is read from image files: use --loader dali or torch")
    if loader == "dali" and not dali_available():
        raise DataError("--loader dali needs NVIDIA DALI: pip install nvidia-dali-cuda120 (or use --loader torch)")
    make = partial(DaliLoader if loader == "dali" else TorchLoader, image_size=args.image_size, mean=IMAGENET_MEAN,
                   std=IMAGENET_STD, val_resize=args.val_resize, workers=args.workers, recipe=recipe, **common)
    train, val = make(train_samples, train=True, with_index=with_index), make(val_samples, train=False)
    if len(train) == 0:
        raise DataError(f"the training set ({len(train_samples)} images) is smaller than one global batch "
                        f"({args.batch_size}); lower --batch-size")
    return train, val, num_classes, (3, args.image_size, args.image_size)
