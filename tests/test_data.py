import argparse
import pickle

import numpy as np
import pytest
import torch

from common import UserError
from common.data import (IMAGENET_MEAN, IMAGENET_STD, DaliLoader, TensorLoader, TorchLoader, build_loaders,
                         cub200_split, file_dataset, load_cifar_arrays, mini_imagenet_split, stratified_subset,
                         torchvision_transform)
from conftest import write_jpegs

CPU = torch.device("cpu")


def loader_args(**overrides):
    args = dict(dataset="digits", data_dir="data", download=False, train_fraction=1.0, image_size=32, val_resize=36,
                num_classes=10, loader="auto", workers=1, batch_size=8, seed=0)
    return argparse.Namespace(**{**args, **overrides})


def check_batch(images, labels, batch, size, classes):
    assert images.shape == (batch, 3, size, size) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(classes))
    assert -3.0 < images.min() < 0 < images.max() < 3.0  # normalised, not 0..255 nor 0..1


def test_digits_split_is_fixed_stratified_and_normalised():
    train, val, num_classes, shape = build_loaders(loader_args(batch_size=64), CPU)
    assert (num_classes, shape) == (10, (3, 8, 8))
    assert len(train.labels) + len(val.labels) == 1797 and len(val.labels) == 360
    assert torch.bincount(val.labels).min() >= 35  # every class in val, stratified
    images = torch.cat([x for x, _ in val])
    assert abs(images.mean()) < 0.1 and abs(images.std() - 1) < 0.1
    again = build_loaders(loader_args(batch_size=64), CPU)[1]
    assert torch.equal(val.labels, again.labels)  # the split is fixed


def test_tensor_loader_crop_and_flip_act_on_whole_batches():
    images = np.arange(4 * 6 * 6 * 3, dtype=np.uint8).reshape(4, 6, 6, 3)
    loader = TensorLoader(images, np.zeros(4), 4, CPU, (0, 0, 0), (1 / 255,) * 3, train=True, pad=2, flip=True)
    seen = [x for x, _ in loader]
    assert seen[0].shape == (4, 3, 6, 6)
    originals = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    # every output is a shifted (zero-padded) and maybe mirrored copy of one input: its pixels come from it
    for out in seen[0]:
        assert any(set(out.unique().tolist()) - {0.0} <= set(o.unique().tolist()) for o in originals)
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], seen[0])  # a new epoch draws new crops


def test_tensor_loader_ranks_see_disjoint_shards():
    labels = np.arange(100)
    make = lambda rank, train: TensorLoader(np.zeros((100, 2, 2, 3), np.uint8), labels, 10, CPU, (0,) * 3, (1,) * 3,
                                            train=train, rank=rank, world_size=2)
    for train in (True, False):
        shard0, shard1 = make(0, train).indices(), make(1, train).indices()
        assert not set(shard0.tolist()) & set(shard1.tolist())
        assert len(shard0) == len(shard1) == 50
    assert torch.equal(make(0, True).indices(), make(0, True).indices())  # same seed, same epoch: same order


def test_train_fraction_keeps_the_right_count_per_class():
    labels = np.repeat(np.arange(5), [40, 40, 20, 8, 4])
    keep = stratified_subset(labels, 0.25, seed=0)
    assert np.bincount(labels[keep]).tolist() == [10, 10, 5, 2, 1]
    assert np.array_equal(keep, stratified_subset(labels, 0.25, seed=0))
    train, _, _, _ = build_loaders(loader_args(train_fraction=0.25, batch_size=32), CPU)
    full, _, _, _ = build_loaders(loader_args(batch_size=32), CPU)
    for cls in range(10):
        assert (train.labels == cls).sum() == round((full.labels == cls).sum().item() * 0.25)


def write_cifar(root, name, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    folder, files, meta = ({"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                                        ("batches.meta", b"label_names", 10, b"labels")),
                            "cifar100": ("cifar-100-python", ["train", "test"],
                                         ("meta", b"fine_label_names", 100, b"fine_labels"))})[name]
    (root / folder).mkdir(parents=True)
    meta_file, names_key, classes, label_key = meta
    for f in files:
        n = n_test if "test" in f else n_train
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: rng.integers(0, classes, n).tolist()}
        pickle.dump(batch, open(root / folder / f, "wb"))
    pickle.dump({names_key: [b"c%d" % i for i in range(classes)]}, open(root / folder / meta_file, "wb"))


@pytest.mark.parametrize("name,classes,n_train", [("cifar10", 10, 100), ("cifar100", 100, 20)])
def test_cifar_python_batches(tmp_path, name, classes, n_train):
    write_cifar(tmp_path, name)
    (x_train, y_train), (x_val, y_val), num_classes = load_cifar_arrays(name, str(tmp_path), download=False)
    assert x_train.shape == (n_train, 32, 32, 3) and x_val.shape == (10, 32, 32, 3) and num_classes == classes
    train, val, _, shape = build_loaders(loader_args(dataset=name, data_dir=str(tmp_path), batch_size=4), CPU)
    assert shape == (3, 32, 32)
    check_batch(*next(iter(train)), 4, 32, classes)
    with pytest.raises(UserError, match="add --download"):
        load_cifar_arrays(name, str(tmp_path / "nowhere"), download=False)


def test_jpeg_class_folders(image_folder):
    train, val, num_classes = file_dataset("imagefolder", str(image_folder))
    assert (len(train), len(val), num_classes) == (24, 9, 3)
    assert sorted({label for _, label in train}) == [0, 1, 2]
    assert train[0][0].endswith("cat/img0.jpg") and train[-1][0].endswith("fox/img7.jpg")


def test_cub_layout(tmp_path):
    root = tmp_path / "CUB_200_2011"
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    image_id = 0
    for cls in (1, 2):
        for path in write_jpegs(root / "images" / f"00{cls}.Bird", 3, seed=cls):
            image_id += 1
            lines["images.txt"].append(f"{image_id} 00{cls}.Bird/{path.name}")
            lines["image_class_labels.txt"].append(f"{image_id} {cls}")
            lines["train_test_split.txt"].append(f"{image_id} {int(path.name != 'img2.jpg')}")
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    train, val, num_classes = cub200_split(str(tmp_path))  # finds CUB_200_2011/ inside --data-dir
    assert (len(train), len(val), num_classes) == (4, 2, 2)
    assert sorted(label for _, label in val) == [0, 1]  # 1-based class ids become 0-based
    assert all(path.endswith("img2.jpg") for path, _ in val)


def test_mini_imagenet_csv_layout(tmp_path):
    write_jpegs(tmp_path / "images", 6)
    rows = {"train": [("img0.jpg", "n02"), ("img1.jpg", "n01"), ("img2.jpg", "n02"), ("img3.jpg", "n01")],
            "val": [("img4.jpg", "n01"), ("img5.jpg", "n02")], "test": [("img5.jpg", "n01")]}
    for split, entries in rows.items():
        (tmp_path / f"{split}.csv").write_text("filename,label\n" + "".join(f"{f},{c}\n" for f, c in entries))
    train, val, num_classes = mini_imagenet_split(str(tmp_path))
    assert num_classes == 2
    assert [label for _, label in train] == [1, 0, 1, 0] and [label for _, label in val] == [0, 1]
    assert train[0][0] == str(tmp_path / "images" / "img0.jpg")
    (tmp_path / "val.csv").write_text("filename,label\nimg4.jpg,n99\n")
    with pytest.raises(UserError, match="val.csv has classes that train.csv lacks"):
        mini_imagenet_split(str(tmp_path))


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_image_file_loaders(image_folder, loader):
    args = loader_args(dataset="imagefolder", data_dir=str(image_folder), loader=loader, batch_size=4)
    train, val, num_classes, shape = build_loaders(args, CPU)
    assert isinstance(train, DaliLoader if loader == "dali" else TorchLoader)
    assert len(train) == 6  # 24 images, drop_last
    for epoch in range(2):
        train.set_epoch(epoch)
        batches = list(train)
        assert len(batches) == 6
        for images, labels in batches:
            check_batch(images, labels, 4, 32, 3)
    seen = torch.cat([labels for _, labels in val])
    assert sorted(seen.tolist()) == [0] * 3 + [1] * 3 + [2] * 3  # val: every image exactly once


def test_dali_and_torch_val_pipelines_agree(image_folder):
    """Both resize the shorter side then centre-crop, and normalise with the same statistics."""
    common = dict(batch_size=9, device=CPU, workers=1, rank=0, world_size=1, seed=0)
    samples = file_dataset("imagefolder", str(image_folder))[1]
    dali = next(iter(DaliLoader(samples, train=False, image_size=32, val_resize=36, mean=IMAGENET_MEAN,
                                std=IMAGENET_STD, **common)))[0]
    torch_images = next(iter(TorchLoader(samples, train=False, transform=torchvision_transform(
        False, 32, 36, IMAGENET_MEAN, IMAGENET_STD), **{**common, "workers": 0})))[0]
    assert (dali - torch_images).abs().mean() < 0.15  # resize filters differ slightly


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_corrupt_image_is_named(image_folder, loader):
    (image_folder / "train" / "dog" / "broken.jpg").write_bytes(b"this is not a jpeg" * 10)
    args = loader_args(dataset="imagefolder", data_dir=str(image_folder), loader=loader, batch_size=25, workers=0)
    train = build_loaders(args, CPU)[0]
    with pytest.raises(UserError, match="broken.jpg"):
        list(train)


def test_fake_data_uses_the_tensor_loader():
    train, val, num_classes, shape = build_loaders(loader_args(dataset="fake", image_size=24, num_classes=7,
                                                               batch_size=16), CPU)
    assert isinstance(train, TensorLoader) and (num_classes, shape) == (7, (3, 24, 24))
    check_batch(*next(iter(train)), 16, 24, 7)


def test_bad_data_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown data set 'mnist'"):
        build_loaders(loader_args(dataset="mnist"), CPU)
    with pytest.raises(UserError, match="does not exist"):
        build_loaders(loader_args(dataset="imagenet", data_dir=str(tmp_path / "missing")), CPU)
    with pytest.raises(UserError, match="use --loader tensor"):
        build_loaders(loader_args(loader="dali"), CPU)
