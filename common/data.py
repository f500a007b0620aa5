"""Data sets and loaders.

Every loader yields `(images, labels)`: normalised float NCHW images and int64 labels on the
training device, this rank's shard only, and has `set_epoch(epoch)` and `len()`.

- Small data sets (digits, CIFAR, fake) live on the training device as uint8 and are
  augmented a whole batch at a time with tensor ops (`TensorLoader`): no per-image Python.
- Image-file data sets are (path, label) lists read by NVIDIA DALI (`DaliLoader`) or, with
  `--loader torch`, by a torchvision DataLoader (`TorchLoader`).
"""
import csv
import math
import os
import pickle

import numpy as np
import torch
from PIL import Image

from common import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
TENSOR_DATASETS = ("digits", "cifar10", "cifar100", "fake")
FILE_DATASETS = ("imagenet", "imagenette", "imagewoof", "mini-imagenet", "cub200", "imagefolder")
DATASETS = TENSOR_DATASETS + FILE_DATASETS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class DataError(UserError):
    """A problem with the user's data: reported as one line."""


# ---------------------------------------------------------------- subsets
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


# ---------------------------------------------------------------- in-memory data sets (uint8 NHWC numpy)
def load_digits_arrays():
    """scikit-learn's bundled handwritten digits: 1,797 8x8 images, 10 classes, 80/20 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=3)  # 0..16 -> 0..255, RGB
    x_train, x_val, y_train, y_val = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
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
    samples = [(os.path.join(dirpath, f), index)
               for index, cls in enumerate(classes)
               for dirpath, _, files in sorted(os.walk(os.path.join(root, cls)))
               for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not samples:
        raise DataError(f"no images found in the class folders of {root}")
    return samples, classes


def class_folder_split(data_dir):
    """`train/<class>/*.jpg` and `val/<class>/*.jpg` (ImageNet, Imagenette, Imagewoof, any image folder)."""
    train, classes = _class_folder_samples(os.path.join(data_dir, "train"))
    val, val_classes = _class_folder_samples(os.path.join(data_dir, "val"))
    if val_classes != classes:
        raise DataError(f"{data_dir}: val/ and train/ hold different class folders")
    return train, val, len(classes)


def mini_imagenet_split(data_dir):
    """Class folders, or `images/` plus `train.csv` / `val.csv` with filename and label columns."""
    if os.path.isdir(os.path.join(data_dir, "train")):
        return class_folder_split(data_dir)
    def read(split):
        path = os.path.join(data_dir, f"{split}.csv")
        if not os.path.isfile(path):
            raise DataError(f"mini-imagenet: neither {data_dir}/train/ nor {path} exists")
        with open(path, newline="") as f:
            return [(os.path.join(data_dir, "images", row["filename"]), row["label"]) for row in csv.DictReader(f)]
    train, val = read("train"), read("val")
    classes = sorted({label for _, label in train})
    index = {cls: i for i, cls in enumerate(classes)}
    unknown = sorted({label for _, label in val} - set(index))
    if unknown:
        raise DataError(f"mini-imagenet: val.csv has classes that train.csv lacks ({unknown[:3]}...); "
                        "use a split whose train and val share their classes")
    return ([(p, index[c]) for p, c in train], [(p, index[c]) for p, c in val], len(classes))


def cub200_split(data_dir):
    """CUB_200_2011: images.txt, image_class_labels.txt (1-based), train_test_split.txt, images/."""
    root = os.path.join(data_dir, "CUB_200_2011") if os.path.isdir(os.path.join(data_dir, "CUB_200_2011")) else data_dir
    def table(name):
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise DataError(f"cub200: missing {path}")
        with open(path) as f:
            return dict(line.split() for line in f if line.strip())
    paths, labels, is_train = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    train, val = [], []
    for image_id, rel in paths.items():
        (train if is_train[image_id] == "1" else val).append((os.path.join(root, "images", rel), int(labels[image_id]) - 1))
    return train, val, len(set(labels.values()))


def file_dataset(name, data_dir):
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir!r} does not exist; {name} must be on disk (see README: Data sets)")
    split = {"mini-imagenet": mini_imagenet_split, "cub200": cub200_split}.get(name, class_folder_split)
    return split(data_dir)


# ---------------------------------------------------------------- loaders
class TensorLoader:
    """A whole data set as uint8 NCHW on `device`; random crop (zero padding) and flip per batch.

    The order and the augmentation depend only on (seed, epoch), so a resumed run sees the
    same batches, and every rank draws the same permutation and takes its own slice of it.
    """

    def __init__(self, images, labels, batch_size, device, mean, std, train, pad=0, flip=False,
                 rank=0, world_size=1, seed=0):
        self.images = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.batch_size, self.train, self.pad, self.flip = batch_size, train, pad, flip
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        if train:  # every rank the same number of full batches, so DDP ranks step together
            self.num_batches = len(self.labels) // world_size // batch_size
        else:
            self.num_batches = math.ceil(len(range(rank, len(self.labels), world_size)) / batch_size)
        if train and self.num_batches == 0:
            raise DataError(f"the training set ({len(self.labels)} images) is smaller than one global batch "
                            f"({batch_size * world_size}); lower --batch-size")

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_batches

    def _augment(self, images, generator):
        n, _, h, w = images.shape
        if self.pad:
            padded = torch.nn.functional.pad(images, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n, 1), generator=generator, device=images.device)
            dx = torch.randint(0, 2 * self.pad + 1, (n, 1), generator=generator, device=images.device)
            rows = (dy + torch.arange(h, device=images.device))[:, None, :, None]
            cols = (dx + torch.arange(w, device=images.device))[:, None, None, :]
            channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
            images = padded[torch.arange(n, device=images.device)[:, None, None, None], channels, rows, cols]
        if self.flip:
            flip = torch.rand(n, generator=generator, device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return images

    def indices(self):
        """This rank's sample indices for the current epoch, in order."""
        if not self.train:
            return torch.arange(self.rank, len(self.labels), self.world_size)
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return order[self.rank::self.world_size][: self.num_batches * self.batch_size]

    def __iter__(self):
        shard = self.indices().to(self.images.device)
        # augmentation draws on the data's device: no host round trip per batch
        generator = torch.Generator(self.images.device).manual_seed(self.seed * 100_003 + self.epoch * 7919 + self.rank + 1)
        for start in range(0, len(shard), self.batch_size):
            index = shard[start:start + self.batch_size]
            images = self.images[index]
            if self.train:
                images = self._augment(images, generator)
            yield (images.float() - self.mean) / self.std, self.labels[index]


def _read_rgb(path):
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


class FileListDataset(torch.utils.data.Dataset):
    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(_read_rgb(path)), label


def torchvision_transform(train, image_size, val_resize, mean, std, fine_grained=False):
    from torchvision import transforms as T
    if train:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
        if fine_grained:  # seed 000's CUB-200 recipe
            steps += [T.RandomRotation(15), T.RandomGrayscale(0.1), T.ColorJitter(0.4, 0.4, 0.4)]
    else:
        steps = [T.Resize(val_resize), T.CenterCrop(image_size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


class TorchLoader:
    """torchvision DataLoader with `--workers` processes; train shards via DistributedSampler,
    val takes every world_size-th image so that no image is counted twice."""

    def __init__(self, samples, batch_size, device, transform, train, workers, rank, world_size, seed):
        dataset = FileListDataset(samples, transform)
        self.device, self.sampler = device, None
        if train:
            self.sampler = torch.utils.data.DistributedSampler(
                dataset, world_size, rank, shuffle=True, seed=seed, drop_last=True)
        else:
            dataset = torch.utils.data.Subset(dataset, range(rank, len(samples), world_size))
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size, sampler=self.sampler, num_workers=workers, drop_last=train,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)

    def set_epoch(self, epoch):
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        try:
            for images, labels in self.loader:
                yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        except Exception as err:  # a worker's DataError arrives re-wrapped with its traceback
            if "DataError" in str(err) or isinstance(err, DataError):
                raise DataError(str(err).strip().splitlines()[-1].removeprefix("common.data.DataError: ")) from None
            raise


class DaliLoader:
    """NVIDIA DALI: `readers.file` sharded by rank, `decoders.image` on "mixed" (GPU) or "cpu",
    random-resized crop and flip (train) or resize + centre crop (val), normalise to float CHW."""

    def __init__(self, samples, batch_size, device, train, image_size, val_resize, mean, std,
                 workers, rank, world_size, seed, fine_grained=False):
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
        on_gpu = device.type == "cuda"
        if train:  # a fixed shuffle, the same on every rank, so that no shard is a run of a few classes
            samples = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))]
        self.files = [path for path, _ in samples]
        self.device = device

        @pipeline_def
        def pipeline():
            jpegs, labels = fn.readers.file(
                files=self.files, labels=[label for _, label in samples], random_shuffle=train,
                shard_id=rank, num_shards=world_size, pad_last_batch=not train, name="Reader")
            images = fn.decoders.image(jpegs, device="mixed" if on_gpu else "cpu", output_type=types.RGB)
            mirror = False
            if train:
                images = fn.random_resized_crop(images, size=[image_size, image_size])
                mirror = fn.random.coin_flip(probability=0.5)
                if fine_grained:
                    images = fn.rotate(images, angle=fn.random.uniform(range=(-15, 15)), keep_size=True)
                    images = fn.color_twist(
                        images, brightness=fn.random.uniform(range=(0.6, 1.4)),
                        contrast=fn.random.uniform(range=(0.6, 1.4)),
                        saturation=fn.random.uniform(range=(0.6, 1.4)) * fn.random.coin_flip(probability=0.9))
            else:
                images = fn.resize(images, resize_shorter=val_resize)
            images = fn.crop_mirror_normalize(
                images, dtype=types.FLOAT, output_layout="CHW", crop=(image_size, image_size),
                mean=[m * 255 for m in mean], std=[s * 255 for s in std], mirror=mirror)
            return images, labels.gpu() if on_gpu else labels

        pipe = pipeline(batch_size=batch_size, num_threads=max(1, workers), seed=seed * 1000 + rank,
                        device_id=(device.index or 0) if on_gpu else None, prefetch_queue_depth=2)
        pipe.build()
        self.iterator = DALIGenericIterator(
            pipe, ["images", "labels"], reader_name="Reader", auto_reset=True, prepare_first_batch=False,
            last_batch_policy=LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL)

    def set_epoch(self, epoch):
        pass  # DALI reshuffles on its own each epoch

    def __len__(self):
        return len(self.iterator)

    def __iter__(self):
        try:
            for batch in self.iterator:
                yield (batch[0]["images"].to(self.device, non_blocking=True),
                       batch[0]["labels"].view(-1).long().to(self.device, non_blocking=True))
        except RuntimeError as err:
            bad = next((p for p in self.files if not _is_readable(p)), None)
            if bad is not None:
                raise DataError(f"cannot decode image {bad}; remove or replace it") from None
            raise DataError(f"DALI failed: {str(err).strip().splitlines()[-1]}") from None


def _is_readable(path):
    try:
        with Image.open(path) as image:
            image.verify()
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
def build_loaders(args, device, rank=0, world_size=1):
    """Returns (train_loader, val_loader, num_classes, image_shape) for `args.dataset`."""
    per_rank = args.batch_size // world_size
    name = args.dataset
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; choose one of: {', '.join(DATASETS)}")
    if name in TENSOR_DATASETS:
        if args.loader not in ("auto", "tensor"):
            raise DataError(f"{name} is held in memory: use --loader tensor (or auto), not {args.loader}")
        if name == "digits":
            (x_train, y_train), (x_val, y_val), num_classes = load_digits_arrays()
            pad, flip = 1, False  # a mirrored digit is another digit
        elif name == "fake":
            (x_train, y_train), (x_val, y_val), num_classes = make_fake_arrays(args.image_size, args.num_classes)
            pad, flip = 0, True
        else:
            (x_train, y_train), (x_val, y_val), num_classes = load_cifar_arrays(name, args.data_dir, args.download)
            pad, flip = 4, True
        if name in CIFAR_STATS:
            mean, std = CIFAR_STATS[name]
        else:  # of the whole train split, so a teacher trained on all of it sees the same inputs
            mean, std = (x_train.mean((0, 1, 2)) / 255).tolist(), (x_train.std((0, 1, 2)) / 255).tolist()
        keep = stratified_subset(y_train, args.train_fraction, seed=0)
        x_train, y_train = x_train[keep], y_train[keep]
        common = dict(batch_size=per_rank, device=device, mean=mean, std=std, rank=rank, world_size=world_size,
                      seed=args.seed)
        train = TensorLoader(x_train, y_train, train=True, pad=pad, flip=flip, **common)
        val = TensorLoader(x_val, y_val, train=False, **common)
        return train, val, num_classes, (3,) + tuple(x_train.shape[1:3])

    train_samples, val_samples, num_classes = file_dataset(name, args.data_dir)
    keep = stratified_subset([label for _, label in train_samples], args.train_fraction, seed=0)
    train_samples = [train_samples[i] for i in keep]
    loader = args.loader
    if loader == "auto":
        loader = "dali" if dali_available() else "torch"
    if loader == "tensor":
        raise DataError(f"{name} is read from image files: use --loader dali or torch")
    if loader == "dali" and not dali_available():
        raise DataError("--loader dali needs NVIDIA DALI: pip install nvidia-dali-cuda120 (or use --loader torch)")
    fine_grained = name == "cub200"
    if loader == "dali":
        common = dict(batch_size=per_rank, device=device, image_size=args.image_size, val_resize=args.val_resize,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, workers=args.workers, rank=rank,
                      world_size=world_size, seed=args.seed, fine_grained=fine_grained)
        train, val = DaliLoader(train_samples, train=True, **common), DaliLoader(val_samples, train=False, **common)
    else:
        common = dict(batch_size=per_rank, device=device, workers=args.workers, rank=rank, world_size=world_size,
                      seed=args.seed)
        train = TorchLoader(train_samples, train=True, transform=torchvision_transform(
            True, args.image_size, args.val_resize, IMAGENET_MEAN, IMAGENET_STD, fine_grained), **common)
        val = TorchLoader(val_samples, train=False, transform=torchvision_transform(
            False, args.image_size, args.val_resize, IMAGENET_MEAN, IMAGENET_STD), **common)
    if len(train) == 0:
        raise DataError(f"the training set ({len(train_samples)} images) is smaller than one global batch "
                        f"({args.batch_size}); lower --batch-size")
    return train, val, num_classes, (3, args.image_size, args.image_size)
