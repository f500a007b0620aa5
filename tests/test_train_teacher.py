import json
import textwrap

import pytest
import torch

from conftest import QUICK, assert_speed_logged, assert_user_error, only_run, run_dirs, run_script

OUTPUTS = ["args.json", "metrics.jsonl", "results.json", "last.pt", "best.pt"]


def check_run(out_dir, epochs, script_args=None):
    run_dir, results = only_run(out_dir)
    for name in OUTPUTS:
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    assert results["epochs"] == epochs and results["top1"] == metrics[-1]["top1"]
    assert results["best_top1"] == max(m["top1"] for m in metrics)
    assert results["wall_time_s"] > 0
    assert_speed_logged(run_dir, results, metrics)
    checkpoint = torch.load(run_dir / "last.pt", weights_only=False)
    assert {"model", "model_name", "num_classes", "dataset", "args", "epoch", "best_top1", "optimizer",
            "scheduler", "scaler", "rng"} <= checkpoint.keys()
    return run_dir, results, metrics


def test_end_to_end_on_digits(tmp_path):
    result = run_script("train_teacher.py", "--model", "resnet8", "--epochs", "2", "--out-dir", tmp_path,
                        "--label-smoothing", "0.1")
    run_dir, results, _ = check_run(tmp_path, 2)
    assert results["top1"] > 25  # two epochs of a tiny ResNet are well above chance (10%)
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"FINAL top1={results['top1']:.2f} top5={results['top5']:.2f} best_top1={results['best_top1']:.2f}"
    assert json.loads((run_dir / "args.json").read_text())["label_smoothing"] == 0.1

    evaluated = run_script("train_teacher.py", "--model", "resnet8", "--resume", run_dir / "last.pt", "--evaluate")
    assert evaluated.stdout.strip().splitlines()[-1].startswith(f"FINAL top1={results['top1']:.2f}")
    assert len(run_dirs(tmp_path)) == 1  # --evaluate writes no new run


def test_resume_continues_exactly(tmp_path):
    common = ["--model", "resnet8", "--epochs", "3", "--batch-size", "128", "--lr-schedule", "multistep",
              "--milestones", "1", "2"]
    run_script("train_teacher.py", *common, "--out-dir", tmp_path / "straight")
    steps_per_epoch = 1437 // 128  # digits' train split, drop_last
    run_script("train_teacher.py", *common, "--out-dir", tmp_path / "split", "--max-steps", steps_per_epoch)
    stopped, results = only_run(tmp_path / "split")
    assert results["epochs"] == 1
    run_script("train_teacher.py", *common, "--out-dir", tmp_path / "split", "--resume", "auto",
               "--exp-name", "train_teacher")
    straight = torch.load(only_run(tmp_path / "straight")[0] / "last.pt", weights_only=False)
    resumed = torch.load(stopped / "last.pt", weights_only=False)
    assert resumed["epoch"] == 3
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


PROBE = textwrap.dedent("""
    import argparse, json, sys
    from common.data import build_loaders
    from common.utils import setup_distributed
    dist = setup_distributed("cpu", 64)
    args = argparse.Namespace(dataset="digits", data_dir="", download=False, train_fraction=1.0, image_size=8,
                              val_resize=8, num_classes=10, loader="auto", workers=0, batch_size=64, seed=0)
    train, val, _, _ = build_loaders(args, dist.device, dist.rank, dist.world_size)
    json.dump({"train": train.indices().tolist(), "val": val.indices().tolist(), "steps": len(train)},
              open(sys.argv[1] + f"/rank{dist.rank}.json", "w"))
""")


def test_torchrun_two_processes(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    run_script(probe, tmp_path, nproc=2)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for split in ("train", "val"):
        assert not set(rank0[split]) & set(rank1[split]), split  # disjoint shards
    assert len(set(rank0["val"]) | set(rank1["val"])) == 360  # together the whole val split
    assert rank0["steps"] == rank1["steps"] == 1437 // 64  # 32 images per rank per step

    out = tmp_path / "runs"
    result = run_script("train_teacher.py", "--model", "resnet8", "--epochs", "1", "--batch-size", "64",
                        "--out-dir", out, nproc=2)
    _, results, metrics = check_run(out, 1)
    assert results["world_size"] == 2 and metrics[0]["step"] == 1437 // 64
    assert result.stdout.count("FINAL") == 1  # only rank 0 logs


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_imagefolder_trains_with_each_loader(tmp_path, image_folder, loader):
    run_script("train_teacher.py", "--dataset", "imagefolder", "--data-dir", image_folder, "--loader", loader,
               "--model", "resnet8", "--image-size", "32", "--val-resize", "36", "--batch-size", "8",
               "--epochs", "2", "--workers", "1", "--out-dir", tmp_path / "runs")
    check_run(tmp_path / "runs", 2)


def test_fake_data_with_amp_and_channels_last(tmp_path):
    run_script("train_teacher.py", "--dataset", "fake", "--image-size", "32", "--num-classes", "5",
               "--model", "resnet8", "--amp", "bf16", "--channels-last", "--max-steps", "3", *QUICK,
               "--out-dir", tmp_path)
    _, results, _ = check_run(tmp_path, 1)
    assert results["steps"] == 3


@pytest.mark.parametrize("args,env,words", [
    (["--dataset", "imagenet", "--data-dir", "/no/such/dir"], {}, ["/no/such/dir", "does not exist"]),
    (["--model", "resnet9000"], {}, ["unknown model 'resnet9000'"]),
    (["--dataset", "mnist"], {}, ["unknown data set 'mnist'"]),
    (["--batch-size", "63"], {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, ["--batch-size 63", "world size 2"]),
    (["--resume", "/no/such/last.pt"], {}, ["/no/such/last.pt does not exist"]),
    (["--evaluate"], {}, ["--resume"]),
    (["--dataset", "fake", "--image-size", "224"], {}, ["resnet8 is a CIFAR network", "--image-size 64"]),
    (["--threads", "-1"], {}, ["--threads -1"]),
])
def test_bad_input_is_one_clear_line(tmp_path, args, env, words):
    existing = tmp_path / "train_teacher__digits__resnet8__seed0__earlier"
    existing.mkdir()
    (existing / "results.json").write_text('{"top1": 99}')
    result = run_script("train_teacher.py", "--model", "resnet8", *QUICK, "--out-dir", tmp_path, *args,
                        check=False, env=env)
    assert_user_error(result, *words)
    assert run_dirs(tmp_path) == [existing] and (existing / "results.json").read_text() == '{"top1": 99}'


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_corrupt_image_file_is_one_clear_line(tmp_path, image_folder, loader):
    (image_folder / "train" / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    result = run_script("train_teacher.py", "--dataset", "imagefolder", "--data-dir", image_folder, "--loader", loader,
                        "--model", "resnet8", "--image-size", "32", "--batch-size", "25", "--workers", "1",
                        "--out-dir", tmp_path / "runs", check=False)
    assert_user_error(result, "corrupt.jpg")


def test_init_from_copies_the_body_and_keeps_a_fresh_classifier(tmp_path, make_teacher):
    """Seed 000 starts its CUB teachers from its own ImageNet teachers: --init-from with a new class count."""
    from common import UserError
    from common.models import create_model
    from common.utils import init_from
    source = torch.load(make_teacher("resnet8"), weights_only=False)["model"]  # 10 digits classes
    model = create_model("resnet8", 7)
    fresh = init_from(model, "resnet8", make_teacher("resnet8"))
    assert fresh == ["fc.bias", "fc.weight"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, source[key]) != key.startswith("fc."), key
    with pytest.raises(UserError, match="holds resnet8, not --model resnet14"):
        init_from(create_model("resnet14", 7), "resnet14", make_teacher("resnet8"))
    # the script wiring: with lr 0 the saved convolutions are the source's
    run_script("train_teacher.py", "--model", "resnet8", "--dataset", "fake", "--num-classes", "7", "--image-size", "8",
               "--init-from", make_teacher("resnet8"), "--lr", "0", "--epochs", "1", "--max-steps", "1",
               "--batch-size", "32", "--out-dir", tmp_path)
    saved = torch.load(only_run(tmp_path)[0] / "last.pt", weights_only=False)["model"]
    assert torch.equal(saved["layer2.0.conv1.weight"], source["layer2.0.conv1.weight"])
    assert saved["fc.weight"].shape == (7, 64)


def test_zero_init_residual_is_a_flag_off_by_default():
    from common import UserError
    from common.models import create_model
    plain, zeroed = create_model("resnet20", 10), create_model("resnet20", 10, zero_init_residual=True)
    assert plain.layer1[0].bn2.weight.eq(1).all() and zeroed.layer1[0].bn2.weight.eq(0).all()
    assert create_model("resnet18", 10, zero_init_residual=True).layer1[0].bn2.weight.eq(0).all()
    with pytest.raises(UserError, match="ResNets only"):
        create_model("wrn_16_2", 10, zero_init_residual=True)


def test_evaluate_takes_the_network_from_the_checkpoint_and_needs_no_teacher(tmp_path, make_teacher):
    checkpoint = make_teacher("resnet8")
    expected = f"top1={torch.load(checkpoint, weights_only=False)['top1']:.2f} "
    # --model stays at its default (resnet56 / resnet20) and kd_st.py gets no --teacher
    for script in ("train_teacher.py", "kd_st.py"):
        result = run_script(script, "--resume", checkpoint, "--evaluate", "--out-dir", tmp_path)
        assert result.stdout.strip().splitlines()[-1].startswith(f"FINAL {expected}"), (script, result.stdout)
        assert "teacher" not in result.stdout
    assert run_dirs(tmp_path) == []


def test_fake_data_defaults_fit_the_default_model(tmp_path):
    result = run_script("train_teacher.py", "--dataset", "fake", "--model", "resnet8", "--epochs", "1", "--max-steps", "2",
                        "--out-dir", tmp_path)
    run_dir, _ = only_run(tmp_path)
    assert json.loads((run_dir / "args.json").read_text())["image_size"] == 32 and "FINAL" in result.stdout


def test_threads_and_a_plain_log_when_stdout_is_not_a_terminal(tmp_path):
    result = run_script("train_teacher.py", "--model", "resnet8", "--threads", "1", "--log-interval", "5", *QUICK[:4],
                        "--out-dir", tmp_path)
    assert "1 CPU thread(s) each" in result.stdout
    assert "\r" not in result.stdout + result.stderr  # no progress bar in a captured log
    assert "epoch 1 step 5  ce " in result.stdout  # one line per log interval instead, with every loss term


def test_free_cpu_threads_leaves_busy_cores_alone(monkeypatch):
    import os
    import subprocess
    import sys
    from common.utils import free_cpu_threads
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert free_cpu_threads() == 3  # the user's (or torchrun's) choice wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    cpus = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        assert free_cpu_threads(interval=0.5) == 1  # every core busy: one thread, never zero
    finally:
        for spinner in spinners:
            spinner.kill()
