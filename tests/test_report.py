"""scripts/report.py on a synthetic runs directory: grouping, mean ± std over seeds, the delta to the
matching baseline, the published reference, report.csv and the PNG curves."""
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys

import matplotlib.image
import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
report_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_module)

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
                       "teacher_pretrained": False, "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}, "st", curve,
                      teacher="resnet56")
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
    kd = find(rows, "resnet20", "st", "teacher_label_smoothing=0.0")
    assert kd["reference_top1"] == "70.66" and kd["reference_source"] == "RepDistiller"  # CE 0.1 + KD 0.9, T 4
    # RepDistiller reports the last epoch: ours is our last-epoch mean, and the gap is taken from it
    assert kd["reference_epoch"] == "last epoch"
    assert float(kd["reference_ours"]) == pytest.approx(expected(KD_LS0)["top1_last"][0], abs=0.005)
    assert float(kd["reference_gap"]) == pytest.approx(float(kd["reference_ours"]) - 70.66, abs=0.006)
    assert find(rows, "resnet20", "baseline", "epochs=240")["reference_top1"] == "69.06"
    zoo = find(rows, "resnet20", "baseline", "epochs=200")  # not the 240-epoch recipe: the KD-Zoo baseline
    assert (zoo["reference_top1"], zoo["reference_epoch"], zoo["reference_ours"], zoo["reference_gap"]) == \
        ("68.92", "not stated", "", "")
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


# ---------------------------------------------------------------- the seeds' published numbers
SEED_RUNS = {  # name -> (args, method, teacher model or None); one seed each, best epoch 2, last epoch 3
    "seed001_st": ({"dataset": "cifar10", "model": "resnet20_7x7", "epochs": 200, "ce_weight": 1.0, "kd_weight": 1.0,
                    "temperature": 4.0, "augment": "reflect"}, "st", "resnet20_7x7"),
    "seed001_st_convex": ({"dataset": "cifar10", "model": "resnet20_7x7", "epochs": 200, "ce_weight": 0.1,
                           "kd_weight": 0.9, "temperature": 4.0, "augment": "reflect"}, "st", "resnet20_7x7"),
    "seed004_v1": ({"dataset": "imagenette", "data_dir": "/data/imagenette", "model": "sw_resnet10", "epochs": 100},
                   "baseline", None),
    "seed004_v2": ({"dataset": "imagenette", "data_dir": "/data/imagenette2", "model": "sw_resnet10", "epochs": 100},
                   "baseline", None),
    "seed004_fm4": ({"dataset": "imagenette", "data_dir": "/data/imagenette", "model": "sw_medium", "epochs": 100,
                     "simultaneous": True, "feature_maps": 4}, "simultaneous", "fastai_resnet34"),
    "seed000_torchvision": ({"dataset": "imagenet", "model": "resnet18", "epochs": 200, "teacher_model": "resnet50",
                             "teacher_pretrained": True, "ce_weight": 0.0, "kd_weight": 1.0, "temperature": 1.0},
                            "st", "resnet50"),
    "seed003_kd": ({"dataset": "mini-imagenet", "model": "shufflenet_v2_x1_0", "epochs": 100, "kd_weight": 0.9,
                    "ce_weight": 1 - 0.9, "temperature": 3.0}, "st", "shufflenet_v2_x2_0"),
    "seed003_kd_ce1": ({"dataset": "mini-imagenet", "model": "shufflenet_v2_x1_0", "epochs": 100, "kd_weight": 0.9,
                        "ce_weight": 1.0, "temperature": 3.0}, "st", "shufflenet_v2_x2_0"),
}
SEED_CURVE = [(50.0, 80.0), (93.0, 99.0), (92.5, 98.0)]  # best epoch 2 (93.0), last epoch 3 (92.5)


@pytest.fixture(scope="module")
def seed_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed_runs")
    teachers = {}
    for dataset, model in (("cifar10", "resnet20_7x7"), ("imagenette", "fastai_resnet34"),
                           ("mini-imagenet", "shufflenet_v2_x2_0")):
        teachers[model] = write_run(root, f"teacher__{dataset}__{model}__seed0__1",
                                    {"dataset": dataset, "model": model, "seed": 0}, "baseline", SEED_CURVE) / "best.pt"
    for name, (args, method, teacher) in SEED_RUNS.items():
        teacher_args = {"teacher": str(teachers[teacher])} if teacher in teachers else {}
        write_run(root / "students", f"{name}__{args['dataset']}__{args['model']}__seed0__1",
                  {"seed": 0, "exp_marker": name, **teacher_args, **args}, method, SEED_CURVE, teacher=teacher)
    groups = report_module.group_runs(report_module.load_runs(root / "students"))
    assert len(groups) == len(SEED_RUNS)
    return {g["args"]["exp_marker"]: {**report_module.reference_cells(g), "top1_last": g["top1_last"]} for g in groups}


@pytest.mark.parametrize("name,published,source", [
    ("seed001_st", "92.8", "seed 001 (mean of 3 runs)"),  # CE + 1 * T^2 KL, as the seed's code
    ("seed004_v1", "91.8", "seed 004"),
    ("seed004_fm4", "89.12", "seed 004 archived"),
    ("seed000_torchvision", "71.488", "seed 000"),  # torchvision's ResNet-50 stands for the LS 0.0 teacher
    ("seed003_kd", "81.1", "seed 003"),             # alpha 0.9: kd_weight 0.9, ce_weight 1 - 0.9
])
def test_seed_numbers_are_best_epoch_and_compared_with_our_best(seed_rows, name, published, source):
    row = seed_rows[name]
    assert (row["reference_top1"], row["reference_source"], row["reference_epoch"]) == (published, source, "best epoch")
    assert row["reference_ours"] == "93.00" and row["top1_last"] == 92.5  # the best epoch, not the last
    assert float(row["reference_gap"]) == pytest.approx(93.0 - float(published), abs=0.006)


@pytest.mark.parametrize("name", ["seed001_st_convex", "seed004_v2", "seed003_kd_ce1"])
def test_other_loss_weights_or_data_version_find_no_seed_number(seed_rows, name):
    """Seed 001's ST with the convex 0.1/0.9 weights, Imagenette version 2, seed 003's KD with CE
    weight 1 instead of 1 - alpha: not the seeds' experiments, so no published number beside them."""
    row = seed_rows[name]
    assert row["reference_top1"] == row["reference_epoch"] == row["reference_ours"] == row["reference_gap"] == ""


def test_students_of_different_teachers_are_different_rows(tmp_path):
    """Two teacher checkpoints of one architecture (a 99.4 % and an 89.2 % one): not one row with the seed twice."""
    for name, top1 in (("teacher__digits__resnet56__seed0__1", 99.4), ("teacher__digits__resnet56__seed0__2", 89.2)):
        teacher = write_run(tmp_path, name, {"model": "resnet56", "seed": 0, "dataset": "digits"}, "baseline",
                            [(top1, 100.0)]) / "best.pt"
        run = write_run(tmp_path, f"kd_st__digits__resnet20__seed0__{name[-1]}",
                        {"model": "resnet20", "seed": 0, "dataset": "digits", "teacher": str(teacher)}, "st",
                        [(90.0, 99.0)], teacher="resnet56")
        results = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**results, "teacher_top1": top1}))
    groups = report_module.group_runs(report_module.load_runs(tmp_path))
    students = [g for g in groups if g["method"] == "st"]
    assert sorted(g["teacher_top1"] for g in students) == [89.2, 99.4] and all(g["seeds"] == 1 for g in students)
    report_module.attach_baselines(groups)
    report_module.describe_settings(groups)
    table = report_module.compact_markdown(groups)
    assert "| teacher top-1 |" in table and "| 89.20 |" in table and "| 99.40 |" in table
    assert "teacher_run" not in table  # the run's name stays out of the setting column


def test_plot_axis_zooms_on_the_end_of_training():
    assert report_module.zoomed_ylim([92.0, 96.5, 95.0]) == (91.5, 97.0)  # not 0-100: the differences show
    assert report_module.zoomed_ylim([99.8]) == (99.3, 100.0) and report_module.zoomed_ylim([]) == (0.0, 100.0)
    assert len(report_module.LINE_STYLES) > 1  # past 10 lines the colours repeat, the line style does not


# ---------------------------------------------------------------- DKD (mdistiller)
DKD_CIFAR = {"ce_weight": 1.0, "tckd_weight": 1.0, "temperature": 4.0, "dkd_warmup_epochs": 20}


@pytest.mark.parametrize("args,teacher,published,epoch", [
    ({"model": "resnet20", "nckd_weight": 2.0, **DKD_CIFAR}, "resnet56", "71.97", "best epoch"),
    ({"model": "wrn_16_2", "nckd_weight": 6.0, **DKD_CIFAR}, "wrn_40_2", "76.23", "best epoch"),
    ({"model": "resnet20", "nckd_weight": 8.0, **DKD_CIFAR}, "resnet56", "", ""),  # not this pair's beta
    ({"model": "resnet20", "nckd_weight": 2.0, **DKD_CIFAR, "dkd_warmup_epochs": 1}, "resnet56", "", ""),
    ({"dataset": "imagenet", "model": "resnet18", "epochs": 100, "teacher_model": "resnet34", "teacher_pretrained": True,
      "ce_weight": 1.0, "tckd_weight": 1.0, "nckd_weight": 0.5, "temperature": 1.0, "dkd_warmup_epochs": 1},
     "resnet34", "71.7", "best epoch"),
])
def test_dkd_finds_mdistillers_number_only_with_its_settings(tmp_path, args, teacher, published, epoch):
    write_run(tmp_path, f"dkd__{args.get('dataset', 'cifar100')}__{args['model']}__seed0__1", {"seed": 0, **args}, "dkd",
              SEED_CURVE, teacher=teacher)
    (group,) = report_module.group_runs(report_module.load_runs(tmp_path))
    cells = report_module.reference_cells(group)
    assert (cells["reference_top1"], cells["reference_epoch"]) == (published, epoch)
    if published:
        assert cells["reference_source"].startswith("mdistiller") and cells["reference_ours"] == "93.00"


def test_dkd_rows_sit_beside_the_kd_rows(tmp_path):
    for method in ("at", "dkd", "st", "baseline"):
        write_run(tmp_path, f"{method}__cifar100__resnet20__seed0__1", {"model": "resnet20", "seed": 0}, method,
                  SEED_CURVE, teacher=None if method == "baseline" else "resnet56")
    groups = report_module.group_runs(report_module.load_runs(tmp_path))
    assert [g["method"] for g in groups] == ["baseline", "st", "dkd", "at"]


# ---------------------------------------------------------------- FitNet, CRD, ReviewKD (RepDistiller, the ReviewKD paper)
CRD = {"ce_weight": 1.0, "crd_weight": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_temperature": 0.07, "nce_momentum": 0.5}
FITNET = {"ce_weight": 1.0, "hint_weight": 100.0, "hint_stage": 2, "hint_epochs": 0, "kd_weight": 0.0}


@pytest.mark.parametrize("method,args,teacher,published,epoch", [
    ("fitnet", {"model": "resnet20", **FITNET}, "resnet56", "69.21", "last epoch"),
    ("fitnet", {"model": "resnet20", **FITNET, "hint_epochs": 10}, "resnet56", "", ""),  # the two-stage variant
    ("crd", {"model": "resnet8x4", **CRD}, "resnet32x4", "75.51", "last epoch"),
    ("crd", {"model": "resnet8x4", **CRD, "nce_k": 4096}, "resnet32x4", "", ""),
    ("reviewkd", {"model": "resnet20", "ce_weight": 1.0, "reviewkd_weight": 0.6, "reviewkd_warmup_epochs": 20},
     "resnet56", "71.89", "not stated"),
    ("reviewkd", {"model": "resnet20", "ce_weight": 1.0, "reviewkd_weight": 5.0, "reviewkd_warmup_epochs": 20},
     "resnet56", "", ""),  # another pair's weight
    ("crd", {"dataset": "imagenet", "model": "resnet18", "epochs": 100, "teacher_model": "resnet34",
             "teacher_pretrained": True, **CRD}, "resnet34", "71.17", "not stated"),
])
def test_new_methods_find_their_published_numbers_only_with_their_settings(tmp_path, method, args, teacher, published,
                                                                           epoch):
    write_run(tmp_path, f"{method}__{args.get('dataset', 'cifar100')}__{args['model']}__seed0__1", {"seed": 0, **args},
              method, SEED_CURVE, teacher=teacher)
    (group,) = report_module.group_runs(report_module.load_runs(tmp_path))
    cells = report_module.reference_cells(group)
    assert (cells["reference_top1"], cells["reference_epoch"]) == (published, epoch)
