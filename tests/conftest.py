"""Shared test helpers: run a script in a subprocess (plain or under a 2-process torchrun) and
make small teacher checkpoints on digits once per session."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests import common/ and the scripts' loss functions


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(script, *args, nproc=1, check=True, timeout=600, env=None):
    """Run `script` with `args` from the repository root; nproc > 1 uses torchrun (gloo on CPU)."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={_free_port()}", script, *map(str, args)]
    else:
        cmd = [sys.executable, script, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if nproc > 1 else os.environ.get("OMP_NUM_THREADS", "2"),
           "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_dirs(out_dir):
    return sorted(p for p in Path(out_dir).iterdir() if p.is_dir())


def only_run(out_dir):
    """The single run directory under `out_dir`, with its results.json loaded."""
    dirs = run_dirs(out_dir)
    assert len(dirs) == 1, dirs
    return dirs[0], json.loads((dirs[0] / "results.json").read_text())


def assert_user_error(result, *words):
    """One clear line on stderr, a non-zero exit, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) >= 1 and lines[-1].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[-1], (word, lines[-1])


def tensorboard_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return set(events.Tags()["scalars"])


def assert_speed_logged(run_dir, results, metrics):
    """images/s and the data-wait fraction are in results.json, metrics.jsonl and TensorBoard."""
    assert results["images_per_sec"] > 0 and 0 <= results["data_wait_fraction"] < 1
    assert all(0 <= m["data_wait_fraction"] < 1 for m in metrics)
    assert {"charts/images_per_sec", "charts/data_wait_fraction"} <= tensorboard_tags(run_dir)


def assert_run_outputs(result, out_dir, teacher_path, method, model="resnet8"):
    """Every output file is there and consistent; returns (run_dir, results, metrics lines)."""
    from common.models import create_model
    run_dir, results = only_run(out_dir)
    for name in ("args.json", "metrics.jsonl", "results.json", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert json.loads((run_dir / "args.json").read_text())["model"] == model
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, results["epochs"] + 1))
    assert results["method"] == method and results["model"] == model
    assert_speed_logged(run_dir, results, metrics)
    teacher = torch.load(teacher_path, weights_only=False)
    assert results["teacher"] == teacher["model_name"]
    assert results["teacher_top1"] == pytest.approx(teacher["top1"])  # the teacher was evaluated as it was saved
    last = torch.load(run_dir / "last.pt", weights_only=False)
    assert last["model_name"] == model and last["epoch"] == results["epochs"]
    assert last["model"].keys() == create_model(model, 10).state_dict().keys()  # the plain model, not the wrapper
    final = result.stdout.strip().splitlines()[-1]
    assert final.startswith(f"FINAL top1={results['top1']:.2f} ") and f"best_top1={results['best_top1']:.2f}" in final
    return run_dir, results, metrics


def feature_kd_step(feature_loss, lr=0.1):
    """One SGD step of resnet8 (student) against resnet14 (inert teacher) on a feature loss alone,
    `feature_loss(student_features, teacher_features)`; checks that the teacher came out untouched
    (no gradients, BatchNorm running stats included) and returns the plain student model."""
    from common.models import create_model, with_stages
    torch.manual_seed(0)
    student_model, teacher_model = create_model("resnet8", 10), create_model("resnet14", 10)
    student, teacher = with_stages(student_model, "resnet8"), with_stages(teacher_model.eval().requires_grad_(False), "resnet14")
    teacher_before = {k: v.clone() for k, v in teacher_model.state_dict().items()}
    stem_before = student_model.conv1.weight.detach().clone()
    optimizer = torch.optim.SGD(student_model.parameters(), lr=lr)
    images = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        _, teacher_features = teacher(images)
    _, features = student(images)
    feature_loss(features, teacher_features).backward()
    optimizer.step()
    assert not torch.equal(student_model.conv1.weight, stem_before)  # the student moved
    assert all(p.grad is None for p in teacher_model.parameters())
    for key, value in teacher_model.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    return student_model


QUICK = ["--epochs", "1", "--batch-size", "64", "--log-interval", "5"]


def resume_at_phase_boundary(script, args, teacher, uninterrupted_out, out):
    """A two-phase run of `script` stopped after its first epoch (phase 1), then resumed, against the
    uninterrupted run in `uninterrupted_out`: (checkpoint after phase 1, resumed last.pt, uninterrupted last.pt).
    Both runs end with the same top-1 and in the same folder they started."""
    uninterrupted_dir, uninterrupted = only_run(uninterrupted_out)
    steps_per_epoch = json.loads((uninterrupted_dir / "metrics.jsonl").read_text().splitlines()[0])["step"]
    run_script(script, *args, "--teacher", teacher, "--out-dir", out, "--max-steps", steps_per_epoch)
    run_dir, _ = only_run(out)
    after_phase1 = torch.load(run_dir / "last.pt", weights_only=False)
    assert after_phase1["phase"] == 1  # stopped at the end of phase 1
    run_script(script, *args, "--teacher", teacher, "--out-dir", out, "--resume", run_dir / "last.pt")
    resumed_dir, resumed = only_run(out)
    assert resumed_dir == run_dir and resumed["epochs"] == 2 and resumed["top1"] == uninterrupted["top1"]
    assert resumed["teacher_top1"] == uninterrupted["teacher_top1"]
    return (after_phase1, torch.load(run_dir / "last.pt", weights_only=False),
            torch.load(uninterrupted_dir / "last.pt", weights_only=False))


@pytest.fixture(scope="session")
def make_teacher(tmp_path_factory):
    """make_teacher(model, *extra_args) -> path of best.pt of a short train_teacher.py run on digits (cached)."""
    cache = {}

    def make(model="resnet14", *extra):
        key = (model, *extra)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"teacher_{model}")
            run_script("train_teacher.py", "--model", model, "--epochs", "3", "--out-dir", out, *extra)
            cache[key] = only_run(out)[0] / "best.pt"
        return cache[key]
    return make


def write_jpegs(folder, count, size=(40, 48), seed=0):
    """`count` random RGB JPEGs in `folder`; returns their paths."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path):
    """A tiny `train/` + `val/` class-folder data set: 3 classes, 8 train and 3 val JPEGs each."""
    root = tmp_path / "folder"
    for index, cls in enumerate(["cat", "dog", "fox"]):
        write_jpegs(root / "train" / cls, 8, seed=index)
        write_jpegs(root / "val" / cls, 3, seed=10 + index)
    return root
