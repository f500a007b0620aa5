"""The throughput benchmark and the speed bookkeeping of the scripts. No test asserts a timing:
timings belong to scripts/benchmark.py and docs/performance.md."""
import json
import math
import sys
import time

import pytest
import torch

from conftest import run_script
from common.utils import Throughput, keep_freed_memory

ROWS = ["train_teacher.py", "kd_logit.py", "kd_st.py", "kd_dkd.py", "kd_fitnet.py", "kd_crd.py", "kd_reviewkd.py",
        "kd_st.py --teacher-cache", "kd_logit.py --teacher-cache",
        "kd_dkd.py --teacher-cache", "kd_at.py", "kd_at.py --kd-weight 0.9",
        "kd_fsp.py", "kd_stagewise.py", "kd_stagewise.py --simultaneous"]


def test_benchmark_table_on_a_tiny_setting(tmp_path):
    report_path = tmp_path / "report.json"
    result = run_script("scripts/benchmark.py", "--dataset", "digits", "--teacher", "resnet14", "--model", "resnet8",
                        "--batch-size", "32", "--warmup", "2", "--steps", "4", "--loading", "--jpegs", "48",
                        "--jpeg-size", "64", "--loading-batch-size", "8", "--workers", "1", "--files-row", "kd_st.py",
                        "--work-dir", tmp_path / "work", "--json", report_path)
    report = json.loads(report_path.read_text())
    assert [row["script"] for row in report["rows"]] == ROWS
    # the stage-wise run stays in phase 1, so its bare compute is phase 1's
    # and the cached rows replay the teacher: their bare compute is the student's own step
    assert [row["bare_step"] for row in report["rows"]] == ["student"] + ["kd"] * 6 + ["student"] * 3 + ["kd"] * 3 + [
        "phase1", "kd"]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| script | images/s | bare images/s | ratio (a)/(b) | KD overhead (c)/(b) | data wait |"
    for row, line in zip(report["rows"], table[1:]):
        assert line.startswith(f"| {row['script']} | {row['images_per_sec']:.0f} | {row['bare_images_per_sec']:.0f} | ")
        for key in ("images_per_sec", "bare_images_per_sec", "student_bare_images_per_sec"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["script"], key)
        assert row["ratio"] == pytest.approx(row["images_per_sec"] / row["bare_images_per_sec"])
        assert row["kd_overhead"] == pytest.approx(row["student_bare_images_per_sec"] / row["bare_images_per_sec"])
        assert 0 <= row["data_wait_fraction"] < 1 and row["channels_last"] is True  # the scripts' default
    assert report["rows"][0]["kd_overhead"] == 1  # train_teacher.py's bare compute is the student's

    loaders = {row["loader"].split()[0]: row["images_per_sec"] for row in report["loading"]}
    assert loaders.keys() == {"torch", "dali"} and all(rate > 0 for rate in loaders.values())
    assert len(list((tmp_path / "work" / "jpegs64" / "train").rglob("*.jpg"))) == 48
    assert "| torch (cpu decoding, 1 workers) |" in result.stdout

    files = report["files"]  # kd_st.py on the JPEG folder against fake data of the same size
    assert files["JPEG folder"]["images_per_sec"] > 0 and files["fake data"]["images_per_sec"] > 0
    assert files["ratio"] == pytest.approx(files["JPEG folder"]["images_per_sec"] / files["fake data"]["images_per_sec"])
    assert 0 <= files["JPEG folder"]["data_wait_fraction"] < 1


def test_repeats_keep_the_run_of_median_ratio(tmp_path):
    report_path = tmp_path / "report.json"
    result = run_script("scripts/benchmark.py", "--dataset", "digits", "--teacher", "resnet8", "--model", "resnet8",
                        "--batch-size", "32", "--warmup", "1", "--steps", "2", "--scripts", "train_teacher.py",
                        "--repeats", "3", "--work-dir", tmp_path / "work", "--json", report_path)
    row = json.loads(report_path.read_text())["rows"][0]
    assert len(row["ratios"]) == 3 and row["ratio"] == sorted(row["ratios"])[1]
    assert f"| {', '.join(f'{ratio:.2f}' for ratio in row['ratios'])} |" in result.stdout  # the runs' column
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 3  # three real runs of the script


def test_unknown_benchmark_row_is_one_clear_line(tmp_path):
    result = run_script("scripts/benchmark.py", "--scripts", "kd_nope.py", "--work-dir", tmp_path, check=False)
    assert result.returncode == 2 and "unknown script row 'kd_nope.py'" in result.stderr.splitlines()[-1]
    assert not list(tmp_path.iterdir())


def test_data_wait_fraction_counts_only_the_wait_for_batches():
    """A loader that takes 20 ms per batch and a step of 20 ms: the host waits half the time,
    and the warm-up step's wait is left out along with its time."""
    def slow_loader(batches):
        for _ in range(batches):
            time.sleep(0.02)
            yield torch.zeros(4)

    throughput = Throughput(torch.device("cpu"), planned_steps=4)  # warm-up: the first step
    throughput.start()
    for batch in throughput.timed(slow_loader(9)):
        time.sleep(0.02)
        throughput.step(len(batch))
    throughput.stop()
    assert throughput.epoch_images == 8 * 4
    assert 0.3 < throughput.epoch_wait_fraction < 0.7
    assert throughput.wait_fraction == throughput.epoch_wait_fraction


def test_a_fast_loader_waits_almost_never():
    throughput = Throughput(torch.device("cpu"), planned_steps=40)
    throughput.start()
    for batch in throughput.timed([torch.zeros(2)] * 40):
        time.sleep(0.002)
        throughput.step(len(batch))
    throughput.stop()
    assert throughput.epoch_wait_fraction < 0.1


def test_freed_memory_is_kept_on_glibc():
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True


def test_gpu_check_without_a_gpu_says_so_and_its_smoke_run_writes_every_table(tmp_path):
    import os
    import subprocess

    from conftest import ROOT
    env = {**os.environ, "OUT": str(tmp_path / "none.md"), "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "no GPU" in result.stdout
    assert "nothing was measured" in (tmp_path / "none.md").read_text()
    env.update(OUT=str(tmp_path / "smoke.md"), CPU_SMOKE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "smoke.md").read_text()
    assert text.count("\n## ") == 4 and "| kd_st.py --teacher-cache |" in text and "| dali (cpu decoding" in text
    assert "JPEG folder / fake data" in text


def test_cache_grid_runs_seven_cells_both_ways_and_passes_cache_flags(tmp_path):
    import os
    import subprocess

    from conftest import ROOT
    from common.models import create_model
    teacher = tmp_path / "resnet20.pt"  # a random teacher: the script times and tabulates, accuracy is not its point
    torch.save({"model": create_model("resnet20", 10).state_dict(), "model_name": "resnet20", "num_classes": 10,
                "top1": 0.0}, teacher)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "EPOCHS": "1",
           "TEACHER": str(teacher), "TEACHER_MODEL": "resnet20", "STUDENT": "resnet8", "OUT_DIR": str(tmp_path / "g"),
           "CACHE_FLAGS": "--dtype float32", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "scripts/cache_grid.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cache float16 --dtype float32," in result.stdout  # the flags reach cache_teacher.py, which takes the last
    assert json.loads((tmp_path / "g/cache/manifest.json").read_text())["dtype"] == "float32"
    rows = [line for line in result.stdout.splitlines() if line.startswith("| T=")]
    assert [row.split(" | ")[0] for row in rows] == [f"| T={t} alpha={a}" for t, a in
                                                       [(1, 0.9), (3, 0.9), (5, 0.9), (10, 0.9), (3, 0.7), (3, 0.6), (3, 0.5)]]
    assert all(float(v) >= 0 for row in rows for v in row.strip("| ").split(" | ")[1:])
    speedup = next(line for line in result.stdout.splitlines() if line.startswith("| speed-up |"))
    assert float(speedup.split("|")[2].strip().rstrip("x")) > 0
    for name, cache in [("plain", None), ("cached", str(tmp_path / "g/cache"))]:
        runs = sorted((tmp_path / "g" / name).glob("*/args.json"))
        assert len(runs) == 7 and all(json.loads(r.read_text())["teacher_cache"] == cache for r in runs)
