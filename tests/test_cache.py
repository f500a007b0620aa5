"""The teacher cache: in-memory augmentation that is a function of (data seed, epoch, index) alone,
cache_teacher.py's files, and the logit methods replaying them exactly."""
import json
import shutil
from argparse import Namespace

import numpy as np
import pytest
import torch

from cache_teacher import compress
from common.data import build_loaders
from conftest import assert_user_error, only_run, run_script

SHORT = ["--model", "resnet8", "--batch-size", "128", "--log-interval", "2", "--threads", "1"]


def _loader(world_size=1, rank=0, batch_size=64, **flags):
    args = Namespace(**{**dict(dataset="digits", data_dir="data", download=False, train_fraction=1.0, image_size=None,
                                num_classes=10, loader="auto", workers=0, val_resize=256, augment="auto", eval_on="val",
                                seed=0, data_seed=None), **flags, "batch_size": batch_size * world_size})
    return build_loaders(args, torch.device("cpu"), rank, world_size, with_index=True)[0]


def _images_by_index(loaders, epoch):
    seen = {}
    for loader in loaders:
        loader.set_epoch(epoch)
        for images, labels, index in loader:
            for image, i in zip(images, index.tolist()):
                assert i not in seen, "an image twice in one epoch"
                seen[i] = image
    return seen


@pytest.mark.parametrize("augment", ["standard", "fastai"])
def test_an_image_depends_on_data_seed_epoch_and_index_not_on_the_run_layout(augment):
    one = _images_by_index([_loader(augment=augment)], epoch=2)
    two = _images_by_index([_loader(2, rank, 32, augment=augment) for rank in (0, 1)], epoch=2)
    odd = _images_by_index([_loader(batch_size=100, augment=augment)], epoch=2)
    shared = one.keys() & two.keys() & odd.keys()
    assert len(shared) > 1200
    for i in shared:
        assert torch.equal(one[i], two[i]) and torch.equal(one[i], odd[i]), i
    # and the augmentation does change with the epoch and the data seed
    other_epoch = _images_by_index([_loader(augment=augment)], epoch=3)
    other_seed = _images_by_index([_loader(augment=augment, data_seed=5)], epoch=2)
    assert sum(not torch.equal(one[i], other_epoch[i]) for i in shared & other_epoch.keys()) > 300
    assert sum(not torch.equal(one[i], other_seed[i]) for i in shared & other_seed.keys()) > 300


def test_topk_keeps_the_top_probabilities_and_spreads_the_rest():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    values, classes, fill = compress(logits, 2)
    full = fill[:, None].expand(-1, 4).scatter(1, classes, values)
    p, q = logits.softmax(1)[0], full.softmax(1)[0]
    # by hand: softmax([2, 1, 0, -1]) = [0.6439, 0.2369, 0.0871, 0.0321]; the rest 0.1192 split in two halves
    assert torch.allclose(q, torch.tensor([0.6439, 0.2369, 0.0596, 0.0596]), atol=1e-4)
    assert torch.allclose(q[:2], p[:2], atol=1e-6) and torch.isclose(q.sum(), torch.tensor(1.0))


def _last_weights(out_dir):
    run_dir, results = only_run(out_dir)
    return torch.load(run_dir / "last.pt", weights_only=False), results


def _assert_same_weights(plain, cached):
    for key, value in plain["trainable"].items():
        assert torch.allclose(value.float(), cached["trainable"][key].float(), atol=1e-5), key


@pytest.fixture(scope="module")
def cache32(make_teacher, tmp_path_factory):
    teacher = make_teacher("resnet14")
    out = tmp_path_factory.mktemp("cache") / "c32"
    run_script("cache_teacher.py", "--teacher", teacher, "--epochs", "3", "--dtype", "float32", "--batch-size", "200",
               "--threads", "1", "--out", out)
    return teacher, out


@pytest.mark.parametrize("script,flags", [("kd_st.py", []), ("kd_dkd.py", []), ("kd_logit.py", [])])
def test_a_cached_run_ends_with_the_weights_of_an_uncached_one(script, flags, cache32, tmp_path):
    teacher, cache = cache32
    common = [*SHORT, "--epochs", "3", *flags, "--teacher", teacher]
    run_script(script, *common, "--out-dir", tmp_path / "plain")
    run_script(script, *common, "--teacher-cache", cache, "--out-dir", tmp_path / "cached")
    (plain, plain_results), (cached, cached_results) = _last_weights(tmp_path / "plain"), _last_weights(tmp_path / "cached")
    _assert_same_weights(plain, cached)
    assert cached_results["teacher_top1"] == plain_results["teacher_top1"]  # the writer's evaluation, replayed


def test_a_cached_two_process_run_ends_with_the_weights_of_an_uncached_one(cache32, tmp_path):
    # each rank must look its images up by their index into the whole training set, not by place in its shard
    teacher, cache = cache32
    common = [*SHORT, "--epochs", "2", "--teacher", teacher]
    run_script("kd_st.py", *common, "--out-dir", tmp_path / "plain", nproc=2)
    run_script("kd_st.py", *common, "--teacher-cache", cache, "--out-dir", tmp_path / "cached", nproc=2)
    _assert_same_weights(_last_weights(tmp_path / "plain")[0], _last_weights(tmp_path / "cached")[0])


def test_a_cached_run_takes_the_teacher_top1_from_the_manifest_only_when_evaluated_alike(cache32, tmp_path):
    teacher, cache = cache32
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["eval_on"] == "val" and manifest["amp"] == "none" and manifest["fold_bn"] is False  # float32
    assert manifest["teacher_top1"] != 12.5
    # the manifest's 12.5 is replayed; one evaluated on another set is not, and the teacher is evaluated anew
    for eval_on, expected in (("val", 12.5), ("heldout", manifest["teacher_top1"])):
        copy = tmp_path / eval_on
        shutil.copytree(cache, copy)
        (copy / "manifest.json").write_text(json.dumps({**manifest, "teacher_top1": 12.5, "eval_on": eval_on}))
        run_script("kd_st.py", *SHORT, "--epochs", "1", "--teacher", teacher, "--teacher-cache", copy,
                   "--out-dir", tmp_path / f"run_{eval_on}")
        assert only_run(tmp_path / f"run_{eval_on}")[1]["teacher_top1"] == expected


def test_the_cache_files_and_manifest(cache32):
    _, cache = cache32
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["epochs"] == 3 and manifest["dtype"] == "float32" and manifest["num_samples"] == 1437
    logits = np.load(cache / "logits.npy", mmap_mode="r")
    assert logits.shape == (3, 1437, 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert not np.array_equal(logits[0], logits[1])  # each epoch's own augmentation


def test_two_processes_write_the_same_cache_as_one(cache32, tmp_path):
    teacher, cache = cache32
    run_script("cache_teacher.py", "--teacher", teacher, "--epochs", "3", "--dtype", "float32", "--batch-size", "64",
               "--out", tmp_path / "two", nproc=2)
    np.testing.assert_allclose(np.load(tmp_path / "two" / "logits.npy"), np.load(cache / "logits.npy"), atol=1e-5)


def test_a_compiled_writer_writes_the_same_cache(cache32, tmp_path):
    # 1437 images in batches of 256: the last 157 are padded to the compiled shape, and only their own rows kept
    teacher, cache = cache32
    run_script("cache_teacher.py", "--teacher", teacher, "--epochs", "1", "--dtype", "float32", "--compile",
               "--threads", "1", "--out", tmp_path / "compiled")
    assert json.loads((tmp_path / "compiled" / "manifest.json").read_text())["compile"] is True
    np.testing.assert_allclose(np.load(tmp_path / "compiled" / "logits.npy")[0], np.load(cache / "logits.npy")[0],
                               atol=1e-5)


def test_float16_and_topk_caches_replay_close_to_the_teacher(cache32, tmp_path):
    teacher, cache = cache32
    for flags in (["--dtype", "float16"], ["--topk", "3"]):
        out = tmp_path / flags[-1]
        run_script("cache_teacher.py", "--teacher", teacher, "--epochs", "1", *flags, "--threads", "1", "--out", out)
        run_script("kd_st.py", *SHORT, "--epochs", "1", "--teacher", teacher, "--teacher-cache", out,
                   "--out-dir", tmp_path / f"run_{flags[-1]}")
    exact = np.load(cache / "logits.npy")[0]
    assert json.loads((tmp_path / "float16" / "manifest.json").read_text())["fold_bn"]  # BatchNorm folded: float16
    assert np.abs(np.load(tmp_path / "float16" / "logits.npy")[0] - exact).max() < 0.05
    # top-k: the k largest logits of each image and their classes, and a fill that keeps the rest's probability mass
    values, classes, fill = (np.load(tmp_path / "3" / f"{name}.npy")[0] for name in ("values", "classes", "fill"))
    top = np.argsort(-exact, axis=1)[:, :3]
    assert (classes == top).mean() > 0.99  # float16 may swap near-equal logits
    np.testing.assert_allclose(values.astype(np.float32), np.take_along_axis(exact, top, 1), atol=0.05)
    probabilities = torch.tensor(exact).softmax(1)
    rest = 1 - probabilities.gather(1, torch.tensor(top)).sum(1)
    log_z = torch.logsumexp(torch.tensor(exact), 1)
    kept = rest > 1e-4  # where the rest's mass is not lost to float32 rounding
    assert kept.sum() > 100
    assert torch.allclose(torch.tensor(fill)[kept], (torch.log(rest / 7) + log_z)[kept], atol=0.05)


def test_a_cache_of_another_run_is_refused_with_the_field(cache32, make_teacher, tmp_path):
    teacher, cache = cache32
    run = ["kd_st.py", *SHORT, "--epochs", "2", "--out-dir", tmp_path / "runs", "--teacher-cache", cache]
    cases = [(["--teacher", make_teacher("resnet8")], "teacher"), (["--teacher", teacher, "--data-seed", "1"], "data_seed"),
             (["--teacher", teacher, "--train-fraction", "0.5"], "train_fraction"),
             (["--teacher", teacher, "--augment", "fastai"], "augment")]
    for flags, field in cases:
        assert_user_error(run_script(*run, *flags, check=False), f"written for {field}")
    more = run_script(*run[:-4], "--epochs", "5", "--out-dir", tmp_path / "runs", "--teacher-cache", cache,
                      "--teacher", teacher, check=False)
    assert_user_error(more, "holds 3 epochs")
    features = run_script("kd_logit.py", *run[1:], "--teacher", teacher, "--target", "features", check=False)
    assert_user_error(features, "--target logits")
    assert_user_error(run_script(*run[:-1], tmp_path, "--teacher", teacher, check=False), "no manifest.json")
    assert not (tmp_path / "runs").exists()  # nothing written
    again = run_script("cache_teacher.py", "--teacher", teacher, "--out", cache, check=False)
    assert_user_error(again, "never overwritten")


def test_a_cached_run_resumes_exactly(cache32, tmp_path):
    teacher, cache = cache32
    common = [*SHORT, "--epochs", "3", "--teacher", teacher, "--teacher-cache", cache]
    run_script("kd_st.py", *common, "--out-dir", tmp_path / "straight")
    run_script("kd_st.py", *common, "--out-dir", tmp_path / "split", "--max-steps", 1437 // 128)
    run_script("kd_st.py", *common, "--out-dir", tmp_path / "split", "--resume", "auto")
    (straight, _), (resumed, results) = _last_weights(tmp_path / "straight"), _last_weights(tmp_path / "split")
    assert results["epochs"] == 3
    for key, value in straight["trainable"].items():
        assert torch.equal(value, resumed["trainable"][key]), key
