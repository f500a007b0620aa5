"""scripts/report.py on a synthetic runs directory: grouping, mean ± std over seeds, the delta to the
matching baseline, the published reference, report.csv and the PNG curves."""
import csv
import json
import os
import statistics
import subprocess
import sys

import matplotlib.image
import pytest

from conftest import ROOT

BASE_ARGS = {"dataset": "cifar100", "data_dir": "data", "train_fraction": 1.0, "epochs": 240, "batch_size": 64,
             "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "label_smoothing": 0.0, "lr_schedule": "multistep",
             "milestones": [150, 180, 210], "warmup_epochs": 0, "amp": "none", "device": "cpu", "max_steps": 0}


def write_run(root, name, args, method, curve, teacher=None, wall_time=100.0):
    """A run directory as the scripts write it; `curve` is [(top1, top5)] per epoch."""
    run = root / name
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({**BASE_ARGS, "exp_name": name.split("__")[0], "out_dir": str(root), **args}))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "top1": top1, "top5": top5, "train_loss": 1.0 / e}) + "\n"
        for e, (top1, top5) in enumerate(curve, start=1)))
    best_epoch = max(range(len(curve)), key=lambda i: (curve[i][0], -i)) + 1  # the first epoch of the best top-1
    results = {"top1": curve[-1][0], "top5": curve[-1][1], "best_top1": curve[best_epoch - 1][0], "best_epoch": best_epoch,
               "epochs": len(curve), "wall_time_s": wall_time, "images_per_sec": 1000.0, "model": args["model"],
               "dataset": args.get("dataset", "cifar100"), "method": method}
    if teacher:
        results.update(teacher=teacher, teacher_top1=72.0)
    (run / "results.json").write_text(json.dumps(results))
    return run


# seed -> curve of (top1, top5) per epoch
BASELINE = {0: [(50.0, 80.0), (69.2, 90.1), (69.0, 90.0)], 1: [(51.0, 81.0), (69.8, 90.6), (69.5, 90.2)],
            2: [(52.0, 82.0), (69.9, 90.3), (70.1, 90.9)]}
KD_LS0 = {0: [(55.0, 85.0), (71.0, 91.0), (70.5, 91.2)], 1: [(56.0, 85.5), (70.8, 91.4), (70.9, 91.5)],
          2: [(54.0, 84.0), (71.3, 91.1), (70.7, 91.3)]}
KD_LS1 = {0: [(53.0, 83.0), (70.0, 90.0), (69.9, 90.2)], 1: [(54.0, 84.0), (70.4, 90.5), (70.2, 90.4)]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    teachers = {}
    for smoothing in (0.0, 0.1):
        teachers[smoothing] = write_run(root, f"teacher_ls{smoothing}__cifar100__resnet56__seed0__1",
                                        {"model": "resnet56", "seed": 0, "label_smoothing": smoothing}, "baseline",
                                        [(60.0, 85.0), (72.0, 92.0)]) / "best.pt"
    # an older run of seed 0 of the same experiment: the newer one replaces it
    stale = write_run(root, "vanilla__cifar100__resnet20__seed0__0", {"model": "resnet20", "seed": 0}, "baseline",
                      [(10.0, 50.0), (11.0, 51.0), (12.0, 52.0)])
    os.utime(stale / "results.json", (1, 1))
    for seed, curve in BASELINE.items():
        write_run(root, f"vanilla__cifar100__resnet20__seed{seed}__1", {"model": "resnet20", "seed": seed}, "baseline",
                  curve, wall_time=100.0 + seed)
    # a baseline of another recipe: the KD rows must not be compared with it
    write_run(root, "other__cifar100__resnet20__seed0__1", {"model": "resnet20", "seed": 0, "epochs": 200}, "baseline",
              [(40.0, 70.0), (60.0, 80.0)])
    # the LS 0.1 students recorded their teacher relative to another directory: found by its run name
    teacher_paths = {0.0: str(teachers[0.0]), 0.1: f"elsewhere/{teachers[0.1].parent.name}/best.pt"}
    for smoothing, table in ((0.0, KD_LS0), (0.1, KD_LS1)):
        for seed, curve in table.items():
            write_run(root / "nested", f"kd__cifar100__resnet20__seed{seed}__{smoothing}",
                      {"model": "resnet20", "seed": seed, "teacher": teacher_paths[smoothing], "teacher_model": None,
                       "teacher_pretrained": False, "temperature": 4.0, "alpha": 0.9}, "st", curve, teacher="resnet56")
    out = root / "report"
    result = subprocess.run([sys.executable, "scripts/report.py", str(root), "--out", str(out), "--reference"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out, rows, result.stdout


def find(rows, student, method, setting_part):
    matches = [r for r in rows if r["student"] == student and r["method"] == method and setting_part in r["setting"]]
    assert len(matches) == 1, (setting_part, [r["setting"] for r in rows])
    return matches[0]


def expected(table):
    last = [curve[-1][0] for curve in table.values()]
    best_epochs = [max(range(len(c)), key=lambda i: (c[i][0], -i)) for c in table.values()]
    best = [c[i][0] for c, i in zip(table.values(), best_epochs)]
    top5_best = [c[i][1] for c, i in zip(table.values(), best_epochs)]
    top5_last = [curve[-1][1] for curve in table.values()]
    return {name: (statistics.fmean(v), statistics.stdev(v)) for name, v in
            (("top1_last", last), ("top1_best", best), ("top5_last", top5_last), ("top5_best", top5_best))}


def test_one_row_per_group(report):
    _, rows, _ = report
    # resnet56 teachers (2 label smoothings), resnet20 baselines (2 recipes), KD from each teacher
    assert len(rows) == 6
    assert sorted(r["seeds"] for r in rows) == ["1", "1", "1", "2", "3", "3"]


@pytest.mark.parametrize("table,setting", [(BASELINE, "epochs=240"), (KD_LS0, "teacher_label_smoothing=0.0"),
                                           (KD_LS1, "teacher_label_smoothing=0.1")])
def test_mean_and_std_over_seeds(report, table, setting):
    _, rows, _ = report
    row = find(rows, "resnet20", "baseline" if table is BASELINE else "st", setting)
    assert int(row["seeds"]) == len(table)
    for name, (mean, std) in expected(table).items():
        assert float(row[name]) == pytest.approx(mean, abs=1e-9), name
        assert float(row[f"{name}_std"]) == pytest.approx(std, abs=1e-9), name


def test_delta_against_the_baseline_of_the_same_recipe(report):
    _, rows, _ = report
    base = expected(BASELINE)
    for table, setting in ((KD_LS0, "teacher_label_smoothing=0.0"), (KD_LS1, "teacher_label_smoothing=0.1")):
        row, ours = find(rows, "resnet20", "st", setting), expected(table)
        assert float(row["delta_last"]) == pytest.approx(ours["top1_last"][0] - base["top1_last"][0], abs=1e-9)
        assert float(row["delta_best"]) == pytest.approx(ours["top1_best"][0] - base["top1_best"][0], abs=1e-9)
        assert row["baseline_differs"] == ""
    baseline = find(rows, "resnet20", "baseline", "epochs=240")
    assert baseline["delta_last"] == "" and float(baseline["wall_time_s"]) == pytest.approx(101.0)


def test_published_reference_beside_ours(report):
    _, rows, _ = report
    assert find(rows, "resnet20", "st", "teacher_label_smoothing=0.0")["reference_top1"] == "70.66"  # RepDistiller KD
    assert find(rows, "resnet20", "baseline", "epochs=240")["reference_top1"] == "69.06"
    assert find(rows, "resnet20", "baseline", "epochs=200")["reference_top1"] == "67.6"  # seed 001, 200 epochs
    assert find(rows, "resnet56", "baseline", "label_smoothing=0.0")["reference_top1"] == "72.34"
    assert find(rows, "resnet56", "baseline", "label_smoothing=0.1")["reference_top1"] == ""  # RepDistiller used none


def test_markdown_printed_and_written(report):
    out, rows, stdout = report
    markdown = (out / "report.md").read_text()
    assert markdown.strip() in stdout
    table_lines = [line for line in markdown.splitlines() if line.startswith("| cifar100")]
    assert len(table_lines) == len(rows)
    kd = find(rows, "resnet20", "st", "teacher_label_smoothing=0.0")
    mean, std = expected(KD_LS0)["top1_last"]
    assert any(f"{mean:.2f} ± {std:.2f}" in line and "teacher_label_smoothing=0.0" in line for line in table_lines), kd


def test_curves_png_per_student(report):
    out, _, _ = report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["curves_cifar100_resnet20_frac1.0.png", "curves_cifar100_resnet56_frac1.0.png"]
    png = out / "curves_cifar100_resnet20_frac1.0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01  # not a blank canvas
