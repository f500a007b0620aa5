import argparse
import json
import math
import pickle

import numpy as np
import pytest
import torch

from common import UserError
from PIL import Image

from common.data import (IMAGENET_MEAN, IMAGENET_STD, DaliLoader, TensorLoader, TorchLoader, build_loaders,
                         class_folder_split, cub200_split, dali_draws, dali_fastai, fastai_augment, fastai_homography,
                         fastai_params, file_dataset, load_cifar_arrays, mini_imagenet_split, resolve_augment,
                         stratified_subset, torch_draws, torchvision_transform)
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


def test_reflect_crop_is_a_window_of_the_reflection_padded_image():
    image = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="reflect").transpose(2, 0, 1)
    assert padded[0, 2, :].tolist() == [6, 3, 0, 3, 6, 9, 12, 9, 6]  # c b a b c d e d c: the edge is not repeated
    loader = TensorLoader(np.repeat(image[None], 200, 0), np.zeros(200), 200, CPU, (0, 0, 0), (1 / 255,) * 3,
                          train=True, pad=2, reflect=True)
    outputs = next(iter(loader))[0].round().to(torch.uint8).numpy()
    windows = {(dy, dx): padded[:, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)}
    seen = [[offset for offset, window in windows.items() if np.array_equal(out, window)] for out in outputs]
    assert all(len(offsets) == 1 for offsets in seen)  # each output is a window of the padded image
    assert len({offsets[0] for offsets in seen}) == 25  # and every window occurs, corners included


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


def test_mini_imagenet_seed_003_layout(tmp_path, image_folder):
    write_jpegs(tmp_path / "images", 6)
    for name, entries in {"new_train": ["img0.jpg,n02", "img1.jpg,n01", "img2.jpg,n02", "img3.jpg,n01"],
                          "new_val": ["img4.jpg,n01", "img5.jpg,n02"]}.items():  # as pandas' to_csv writes them
        lines = [",filename,label"] + [f"{i},{row}" for i, row in enumerate(entries)]
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    index = {"n01": [1, "house finch"], "n02": [0, "robin"], "n03": [2, "toucan"]}
    (tmp_path / "classes_name.json").write_text(json.dumps(index))
    (tmp_path / "train.csv").write_text("filename,label\nimg0.jpg,n77\n")  # the few-shot files: not read
    (tmp_path / "val.csv").write_text("filename,label\nimg4.jpg,n99\n")
    train, val, num_classes = mini_imagenet_split(str(tmp_path))
    assert num_classes == 3  # the json's indices, not only the classes in use
    assert [label for _, label in train] == [0, 1, 0, 1] and [label for _, label in val] == [1, 0]
    assert train[0][0] == str(tmp_path / "images" / "img0.jpg")
    args = loader_args(dataset="mini-imagenet", data_dir=str(tmp_path), loader="torch", workers=0, batch_size=2)
    check_batch(*next(iter(build_loaders(args, CPU)[0])), 2, 32, 3)

    del index["n01"]
    (tmp_path / "classes_name.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"classes_name.json has no class index for n01 \(used in .*new_train.csv\)"):
        mini_imagenet_split(str(tmp_path))
    (tmp_path / "new_val.csv").write_text(",file,class\n0,img4.jpg,n01\n")
    (tmp_path / "classes_name.json").write_text(json.dumps({"n01": [0, "a"], "n02": [1, "b"]}))
    with pytest.raises(UserError, match="new_val.csv needs 'filename' and 'label' columns"):
        mini_imagenet_split(str(tmp_path))
    (tmp_path / "classes_name.json").write_text('["n01", "n02"]')
    with pytest.raises(UserError, match="cannot read class indices from .*classes_name.json"):
        mini_imagenet_split(str(tmp_path))
    assert mini_imagenet_split(str(image_folder)) == class_folder_split(str(image_folder))  # train/ and val/


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
    torch_images = next(iter(TorchLoader(samples, train=False, image_size=32, val_resize=36, mean=IMAGENET_MEAN,
                                         std=IMAGENET_STD, **{**common, "workers": 0})))[0]
    assert (dali - torch_images).abs().mean() < 0.15  # resize filters differ slightly


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_corrupt_image_is_named(image_folder, loader):
    (image_folder / "train" / "dog" / "broken.jpg").write_bytes(b"this is not a jpeg" * 10)
    args = loader_args(dataset="imagefolder", data_dir=str(image_folder), loader=loader, batch_size=25, workers=0)
    train = build_loaders(args, CPU)[0]
    with pytest.raises(UserError, match="broken.jpg"):
        list(train)


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_truncated_jpeg_is_named(image_folder, loader):
    """PIL's verify() passes a truncated JPEG; only a full decode finds it."""
    good = (image_folder / "train" / "dog" / "img0.jpg").read_bytes()
    (image_folder / "train" / "dog" / "img0.jpg").write_bytes(good[: len(good) // 2])
    args = loader_args(dataset="imagefolder", data_dir=str(image_folder), loader=loader, batch_size=24, workers=0)
    with pytest.raises(UserError, match="img0.jpg"):
        for _ in range(2):
            list(build_loaders(args, CPU)[0])


def test_16_bit_png_is_decoded_alike_by_both_loaders(tmp_path):
    """PIL's convert("RGB") clips 16-bit grey to white; both loaders scale it by 1/257."""
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                ramp = (np.arange(32 * 32).reshape(32, 32) * 60 + 100 * i).astype(np.uint16)
                Image.fromarray(ramp).save(folder / f"grey{i}.png")
    samples = file_dataset("imagefolder", str(tmp_path))[1]
    common = dict(batch_size=4, device=CPU, train=False, image_size=32, val_resize=32, mean=(0, 0, 0),
                  std=(1, 1, 1), rank=0, world_size=1, seed=0)
    dali = next(iter(DaliLoader(samples, workers=1, **common)))[0]
    torch_images = next(iter(TorchLoader(samples, workers=0, **common)))[0]
    assert 0.4 < torch_images.mean() < 0.6  # a grey ramp, not white
    assert (dali - torch_images).abs().max() < 1.5 / 255


def test_empty_class_folder_and_broken_cub_tables_are_one_line(image_folder, tmp_path):
    (image_folder / "train" / "emu").mkdir()
    (image_folder / "val" / "emu").mkdir()
    with pytest.raises(UserError, match="emu holds no images"):
        file_dataset("imagefolder", str(image_folder))
    root = tmp_path / "CUB_200_2011"
    root.mkdir()
    (root / "images.txt").write_text("1 001.Bird/a.jpg\n2 001.Bird/b.jpg\n")
    (root / "image_class_labels.txt").write_text("1 1\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n")
    with pytest.raises(UserError, match="image id 2 of images.txt"):
        cub200_split(str(tmp_path))
    (root / "image_class_labels.txt").write_text("1 1\n2\n")
    with pytest.raises(UserError, match="not '<image id> <value>'"):
        cub200_split(str(tmp_path))


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


# ---------------------------------------------------------------- fastai recipe (seed 004)
FASTAI_VALUES = dict(warp=[0.15, -0.1, 0.05, -0.2], angle=0.12, zoom=1.07, focus=(0.3, 0.8), shift=0.3, contrast=1.2)


def fastai_constants(const, values=FASTAI_VALUES):
    """`fastai_params`-shaped dict with each value passed through `const` (a tensor or DALI node maker)."""
    return {key: type(value)(map(const, value)) if isinstance(value, (list, tuple)) else const(value)
            for key, value in values.items()}


def test_fastai_homography_is_fastais_rotate_zoom_warp():
    """fastai v1 samples the source at R Z H p, H solved from its symmetric_warp corner equations."""
    m0, m1, m2, m3 = FASTAI_VALUES["warp"]
    orig = [[-1, -1], [-1, 1], [1, -1], [1, 1]]
    targ = [[-1 - m3, -1 - m1], [-1 - m2, 1 + m1], [1 + m3, -1 - m0], [1 + m2, 1 + m0]]
    rows = []
    for (tx, ty), (ox, oy) in zip(targ, orig):  # fastai's _find_coeffs: H(targ) = orig
        rows += [[tx, ty, 1, 0, 0, 0, -ox * tx, -ox * ty], [0, 0, 0, tx, ty, 1, -oy * tx, -oy * ty]]
    warp = np.append(np.linalg.solve(np.array(rows), np.array(orig, float).ravel()), 1).reshape(3, 3)
    angle, k, (col, row) = FASTAI_VALUES["angle"], FASTAI_VALUES["zoom"], FASTAI_VALUES["focus"]
    rotate = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    zoom = np.array([[1 / k, 0, (1 - 1 / k) * (2 * col - 1)], [0, 1 / k, (1 - 1 / k) * (2 * row - 1)], [0, 0, 1]])
    expected = rotate @ zoom @ warp
    params = fastai_constants(lambda v: torch.tensor(v, dtype=torch.float64))
    ours = np.linalg.inv(torch.stack(fastai_homography(params, torch)).view(3, 3).numpy())
    assert np.allclose(ours / ours[2, 2], expected / expected[2, 2], atol=1e-9)


def test_fastai_augment_resamples_at_pixel_centres_and_shifts_logits():
    images = torch.rand(2, 3, 6, 6)
    identity = dict(warp=[0.0] * 4, angle=0.0, zoom=1.0, focus=(0.5, 0.5), shift=0.0, contrast=1.0)
    params = lambda **changes: fastai_constants(lambda v: torch.full((2,), float(v)), {**identity, **changes})
    assert torch.allclose(fastai_augment(images, params()), images, atol=1e-5)
    quarter_turn = fastai_augment(images, params(angle=math.pi / 2))
    assert torch.allclose(quarter_turn, images.rot90(1, (2, 3)), atol=1e-5)
    # equal corner offsets make the warp a plain zoom: the same image as zooming by 1 + offset
    assert torch.allclose(fastai_augment(images, params(warp=[0.1] * 4)), fastai_augment(images, params(zoom=1.1)),
                          atol=1e-5)
    grey = torch.full((2, 3, 4, 4), 0.5)
    brighter = fastai_augment(grey, params(shift=math.log(0.6 / 0.4)))  # brightness(change=0.6): grey 0.5 -> 0.6
    assert torch.allclose(brighter, torch.full_like(grey, 0.6), atol=1e-6)
    contrast = fastai_augment(torch.full((2, 3, 4, 4), 0.25), params(contrast=2.0))  # logit(0.25) doubled
    assert torch.allclose(contrast, torch.full_like(contrast, 0.1), atol=1e-6)  # sigmoid(2 logit(1/4)) = 1/10


def draw_fastai_params(backend, n):
    """`fastai_params` for n images, drawn by torch or by a DALI pipeline, as torch tensors."""
    if backend == "torch":
        return fastai_params(*torch_draws(n, torch.Generator().manual_seed(0)), torch)
    from nvidia.dali import math as dmath
    from nvidia.dali import pipeline_def

    @pipeline_def
    def pipeline():
        params = fastai_params(*dali_draws(), dmath)
        return (*params["warp"], params["angle"], params["zoom"], *params["focus"], params["shift"], params["contrast"])
    pipe = pipeline(batch_size=n, num_threads=1, device_id=None, seed=0)
    pipe.build()
    values = [torch.as_tensor(output.as_array()).view(-1) for output in pipe.run()]
    return dict(warp=values[:4], angle=values[4], zoom=values[5], focus=tuple(values[6:8]), shift=values[8],
                contrast=values[9])


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_fastai_draws_apply_each_op_with_probability_three_quarters(backend):
    n = 400
    params = draw_fastai_params(backend, n)
    unchanged = {"warp": (torch.stack(params["warp"]) == 0).all(0), "rotate": params["angle"] == 0,
                 "zoom": params["zoom"] == 1, "brightness": params["shift"] == 0, "contrast": params["contrast"] == 1}
    for op, skipped in unchanged.items():
        assert 0.25 * n - 35 < skipped.sum() < 0.25 * n + 35, op  # binomial sd 8.7
    assert params["angle"].abs().max() <= math.radians(10) and torch.stack(params["warp"]).abs().max() <= 0.2
    assert params["zoom"].min() >= 1 and params["zoom"].max() <= 1.1
    assert 0.8 <= params["contrast"].min() and params["contrast"].max() <= 1.25
    change = torch.sigmoid(params["shift"])
    assert 0.4 <= change.min() and change.max() <= 0.6


def test_fastai_tensor_loader_depends_only_on_seed_and_epoch():
    images = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    make = lambda: TensorLoader(images, np.zeros(64), 64, CPU, (0, 0, 0), (1 / 255,) * 3, train=True, fastai=True,
                                seed=3)
    first, again, later = make(), make(), make()
    later.set_epoch(1)
    batch = next(iter(first))[0]
    assert torch.equal(batch, next(iter(again))[0])
    assert not torch.equal(batch, next(iter(later))[0])
    originals = torch.as_tensor(images).permute(0, 3, 1, 2).float()[first.indices()]
    changed = (batch - originals).abs().flatten(1).mean(1) > 1
    assert changed.float().mean() > 0.9  # all five ops skipped: 1 image in 1,024


def test_fastai_dali_pipeline_equals_the_tensor_version(tmp_path):
    from nvidia.dali import fn, pipeline_def
    paths = write_jpegs(tmp_path, 3, size=(32, 32))

    @pipeline_def
    def pipeline():
        jpegs, _ = fn.readers.file(files=[str(p) for p in paths])
        images = fn.decoders.image(jpegs, device="cpu")
        return images, dali_fastai(images, 32, fastai_constants(lambda v: fn.random.uniform(values=[float(v)])))
    pipe = pipeline(batch_size=3, num_threads=1, device_id=None, seed=0)
    pipe.build()
    decoded, augmented = (torch.stack([torch.as_tensor(np.array(t[i])) for i in range(3)]).permute(0, 3, 1, 2)
                          for t in pipe.run())
    expected = fastai_augment(decoded.float() / 255, fastai_constants(lambda v: torch.full((3,), float(v)))) * 255
    assert (augmented - decoded).abs().mean() > 20  # it did transform
    assert (augmented - expected).abs().max() < 1.5 and (augmented - expected).abs().mean() < 0.5  # out of 255


# ---------------------------------------------------------------- cub recipe (seed 000)
def is_grey(images, tolerance=4 / 255):
    """Per image (NCHW, 0..1): are its three channels equal?"""
    return ((images.amax(1) - images.amin(1)) <= tolerance).flatten(1).all(1)


def unique_label_samples(image_folder):
    """The folder's 24 training images, each labelled with its own index: labels name the images."""
    return [(path, index) for index, (path, _) in enumerate(file_dataset("imagefolder", str(image_folder))[0])]


def test_cub_recipe_in_dali(image_folder):
    samples = unique_label_samples(image_folder)
    common = dict(batch_size=24, device=CPU, image_size=32, val_resize=32, mean=(0, 0, 0), std=(1, 1, 1),
                  workers=1, rank=0, world_size=1, seed=0)
    plain_images, plain_labels = next(iter(DaliLoader(samples, train=False, **common)))
    plain = plain_images[plain_labels.argsort()]
    train = DaliLoader(samples, train=True, recipe="cub", **common)
    grey = []
    for epoch in range(8):
        images, labels = next(iter(train))
        assert images.shape == (24, 3, 32, 32)
        assert ((images - plain[labels]).abs().flatten(1).mean(1) > 0.05).all()  # every image augmented
        grey.append(is_grey(images))
    assert 0.1 < torch.cat(grey).float().mean() < 0.3  # RandomGrayscale(p=0.2)


def test_cub_recipe_in_torchvision(image_folder):
    image = Image.open(file_dataset("imagefolder", str(image_folder))[0][0][0]).convert("RGB")
    train = torchvision_transform(True, 32, 32, (0, 0, 0), (1, 1, 1), "cub")
    plain = torchvision_transform(False, 32, 32, (0, 0, 0), (1, 1, 1))(image)
    torch.manual_seed(0)
    images = torch.stack([train(image) for _ in range(200)])
    assert images.shape == (200, 3, 32, 32)
    assert ((images - plain).abs().flatten(1).mean(1) > 0.05).all()
    assert 0.1 < is_grey(images).float().mean() < 0.3


# ---------------------------------------------------------------- DALI shuffling
def epoch_orders(loader, epochs=2):
    orders = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        orders.append(torch.cat([labels for _, labels in loader]).tolist())
    return orders


def test_dali_reshuffles_the_whole_data_set_every_epoch(image_folder):
    samples = unique_label_samples(image_folder)
    common = dict(batch_size=4, device=CPU, train=True, image_size=32, val_resize=32, mean=IMAGENET_MEAN,
                  std=IMAGENET_STD, workers=1, seed=0)
    first, second = epoch_orders(DaliLoader(samples, rank=0, world_size=1, **common))
    assert sorted(first) == sorted(second) == list(range(24))  # every image once per epoch
    assert first != list(range(24)) and first != second  # the first epoch is shuffled too, and the next anew
    other_seed = epoch_orders(DaliLoader(samples, rank=0, world_size=1, **{**common, "seed": 1}), epochs=1)[0]
    assert other_seed != first
    # 12 images a shard in batches of 5: the 2 left over each epoch must not spill into the next one
    shards = [epoch_orders(DaliLoader(samples, rank=rank, world_size=2, **{**common, "batch_size": 5}), epochs=3)
              for rank in (0, 1)]
    for rank0, rank1 in zip(*shards):
        assert len(rank0) == len(rank1) == 10 and len(set(rank0 + rank1)) == 20  # disjoint, no repeats
    assert shards[0][0] != shards[0][1]


# ---------------------------------------------------------------- recipes and evaluation sets
def test_augment_recipes_apply_where_they_are_implemented(image_folder):
    assert resolve_augment("auto", "cub200") == "cub" and resolve_augment("auto", "cifar10") == "standard"
    for dataset, recipe in [("digits", "cub"), ("digits", "reflect"), ("cifar10", "cub"), ("imagefolder", "reflect"),
                            ("imagenet", "autoaugment")]:
        with pytest.raises(UserError, match=f"--augment {recipe} does not apply to {dataset}; choose auto or one of"):
            build_loaders(loader_args(dataset=dataset, data_dir=str(image_folder), augment=recipe), CPU)
    with pytest.raises(UserError, match="needs images larger than 4x4"):
        build_loaders(loader_args(dataset="fake", image_size=4, augment="reflect"), CPU)


@pytest.mark.parametrize("recipe", ["reflect", "fastai"])
def test_in_memory_recipes_through_build_loaders(recipe):
    train = build_loaders(loader_args(dataset="fake", image_size=16, augment=recipe, batch_size=16), CPU)[0]
    assert train.fastai == (recipe == "fastai") and train.reflect == (recipe == "reflect")
    check_batch(*next(iter(train)), 16, 16, 10)


@pytest.mark.parametrize("loader", ["dali", "torch"])
@pytest.mark.parametrize("recipe", ["cub", "fastai"])
def test_file_recipes_through_build_loaders(image_folder, loader, recipe):
    args = loader_args(dataset="imagefolder", data_dir=str(image_folder), loader=loader, augment=recipe, workers=0,
                       batch_size=12)
    train, val, _, _ = build_loaders(args, CPU)
    images, labels = next(iter(train))
    check_batch(images, labels, 12, 32, 3)
    check_batch(*next(iter(val)), 9, 32, 3)


def loader_files(loader):
    """The image paths that a DALI or torch loader reads."""
    if isinstance(loader, DaliLoader):
        return set(loader.files)
    dataset = loader.loader.dataset
    if isinstance(dataset, torch.utils.data.Subset):
        return {dataset.dataset.samples[i][0] for i in dataset.indices}
    return {path for path, _ in dataset.samples}


def test_heldout_evaluates_on_the_images_training_leaves_out(image_folder):
    args = loader_args(dataset="fake", image_size=8, train_fraction=0.25, eval_on="heldout", batch_size=64)
    train, val, _, _ = build_loaders(args, CPU)
    assert len(train.labels) + len(val.labels) == 2048 and abs(len(train.labels) - 512) < 5  # a quarter per class
    train_images = {bytes(image.numpy()) for image in train.images}
    assert len(train_images) == len(train.labels) and not train_images & {bytes(image.numpy()) for image in val.images}
    assert sum(len(labels) for _, labels in val) == len(val.labels)  # every held-out image once
    for loader in ("dali", "torch"):
        args = loader_args(dataset="imagefolder", data_dir=str(image_folder), loader=loader, train_fraction=0.25,
                           eval_on="heldout", batch_size=2, workers=0)
        train, val, _, _ = build_loaders(args, CPU)
        train_files, val_files = loader_files(train), loader_files(val)
        assert len(train_files) == 6 and len(val_files) == 18 and not train_files & val_files
        assert train_files | val_files == {p for p, _ in file_dataset("imagefolder", str(image_folder))[0]}
        passes = [list(val) for _ in range(2)]
        assert sorted(torch.cat([labels for _, labels in passes[0]]).tolist()) == [0] * 6 + [1] * 6 + [2] * 6
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(*passes))  # the val transform: no augmentation
    with pytest.raises(UserError, match="--eval-on heldout needs --train-fraction below 1"):
        build_loaders(loader_args(eval_on="heldout"), CPU)
