"""Summarise a directory of runs: one row per experiment, mean ± std over seeds.

    python scripts/report.py runs/cifar                    # report.md, report.csv, curves_*.png in runs/cifar
    python scripts/report.py runs/ --out report/ --reference

Reads every results.json under RUNS_DIR (with the args.json and metrics.jsonl beside it). Runs that
differ only in seed, output paths or experiment name form one group; a group is keyed by data set,
student, teacher, method and every other argument (temperature, loss weights, label smoothing, train
fraction, LR schedule, ...), the teacher checkpoint's run (students of two teachers are never seeds of
one row; the teacher's top-1 has a column), the teacher's label smoothing, the experiment an --init-from run came
from and the version of Imagenette/Imagewoof (from the name of --data-dir: imagenette/ is 1,
imagenette2/ is 2). The "setting" column shows the arguments that vary between the groups of
one data set and method. For each group: last-epoch and best-epoch top-1 and top-5 (mean ± sample
std over seeds), the number of seeds, the mean wall time, and the change of top-1 against the
no-teacher baseline (method "baseline", train_teacher.py) of the same student, data set and train
fraction; where several baselines qualify, the one whose arguments differ least, marked † when its
recipe differs. --reference adds the published top-1 beside ours (REFERENCES below), with the epoch
it reports (best or last) and ours at that same epoch.
Plots: validation top-1 against the fraction of training done, zoomed on the last tenth of training,
one PNG per (data set, student, train fraction), one line per group, the legend outside the axes.
"""
import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Arguments that never make two runs different experiments: seed, names, paths, logging, hardware.
# Paths (data_dir, teacher, init_from) are replaced by what they say about the experiment: the data
# set's version, the teacher's label smoothing, the experiment the initial weights come from.
IGNORED_ARGS = {"seed", "exp_name", "out_dir", "data_dir", "teacher", "init_from", "resume", "evaluate", "log_interval",
                "workers", "device", "download", "compile", "channels_last", "loader", "dataset", "model",
                "teacher_model"}
METHOD_ORDER = ["baseline", "logit", "st", "dkd", "fitnet", "at", "at_st", "fsp", "crd", "reviewkd", "simultaneous",
                "stagewise"]


# ---------------------------------------------------------------- published numbers (top-1, %)
# Which epoch a published number is: "best" (the best epoch on the evaluation set, as a checkpoint
# selected on it), "last" (the end of training) or None (the source does not say). Ours is compared
# on the same footing: our best-epoch top-1 with "best", our last-epoch top-1 with "last".
EPOCH_LABELS = {"best": "best epoch", "last": "last epoch", None: "not stated"}


def _references():
    """(match, top1, source, epoch): `match` holds dataset, student, teacher (None: no teacher), method
    and optionally argument values (epochs, temperature, kd_weight, ...), teacher_label_smoothing and
    data_version; `epoch` is a key of EPOCH_LABELS."""
    refs = []
    def add(top1, source, epoch, **match):
        if match["method"] == "baseline":  # published baselines use no label smoothing unless said otherwise
            match.setdefault("label_smoothing", 0.0)
        refs.append((match, top1, source, epoch))
    # seed 001: best epoch on the test set (9,984 of its images), mean of 3 runs (of 2 for ST 110 -> 110
    # and AT+ST 110 -> 110 on CIFAR-10). The code's loss forms (docs/reproducing.md): CE at weight 1.
    seed001 = {"baseline": ((92.0, 92.5, 67.6, 71.6), {}),
               "logit": ((92.5, 94.2, 69.2, 71.8), dict(target="features", ce_weight=1.0, kd_weight=1.0)),
               "st": ((92.8, 93.9, 69.9, 74.1), dict(ce_weight=1.0, kd_weight=1.0, temperature=4.0)),
               "at": ((91.9, 93.3, 68.4, 72.6), dict(ce_weight=1.0, at_weight=1000.0, at_mode="code", kd_weight=0.0)),
               "at_st": ((92.6, 93.7, 68.7, 73.7), dict(ce_weight=1.0, at_weight=1000.0, at_mode="code", kd_weight=0.9,
                                                        temperature=4.0)),
               "fsp": ((92.0, 92.7, 68.0, 72.8), dict(fsp_mode="joint", ce_weight=1.0, fsp_weight=1 / 9))}
    cells = [(d, m) for d in ("cifar10", "cifar100") for m in ("resnet20_7x7", "resnet110_7x7")]
    for method, (values, weights) in seed001.items():
        for (dataset, model), top1 in zip(cells, values):
            add(top1, "seed 001 (mean of 3 runs)", "best", dataset=dataset, student=model, method=method, epochs=200,
                teacher=None if method == "baseline" else model, **weights)
    # RepDistiller (CRD, ICLR 2020): last epoch, mean of runs; 240-epoch recipe
    for teacher, student, t_top1, s_top1, kd, at, fsp in [
            ("resnet32x4", "resnet8x4", 79.42, 72.50, 73.33, 73.44, 72.62), ("wrn_40_2", "wrn_16_2", 75.61, 73.26, 74.92, 74.08, 72.91),
            ("resnet56", "resnet20", 72.34, 69.06, 70.66, 70.55, 69.95), ("resnet110", "resnet32", 74.31, 71.14, 73.08, 72.31, 71.89)]:
        source, common = "RepDistiller", dict(dataset="cifar100", epochs=240)
        add(t_top1, source, "last", student=teacher, teacher=None, method="baseline", **common)
        add(s_top1, source, "last", student=student, teacher=None, method="baseline", **common)
        add(kd, source, "last", student=student, teacher=teacher, method="st", ce_weight=0.1, kd_weight=0.9,
            temperature=4.0, **common)
        add(at, source, "last", student=student, teacher=teacher, method="at", at_weight=1000.0, **common)
        add(fsp, source, "last", student=student, teacher=teacher, method="fsp", fsp_mode="two-stage", **common)
    # mdistiller (DKD, CVPR 2022): best epoch, mean of 5 runs; the 240-epoch recipe with its configs/cifar100/dkd/
    # settings: CE 1, alpha 1, T 4, 20 warm-up epochs, beta by pair
    for teacher, student, beta, top1 in (("resnet32x4", "resnet8x4", 8.0, 76.32), ("wrn_40_2", "wrn_16_2", 6.0, 76.23),
                                         ("resnet56", "resnet20", 2.0, 71.97), ("resnet110", "resnet32", 2.0, 74.11)):
        add(top1, "mdistiller (mean of 5 runs)", "best", dataset="cifar100", student=student, teacher=teacher,
            method="dkd", epochs=240, ce_weight=1.0, tckd_weight=1.0, nckd_weight=beta, temperature=4.0,
            dkd_warmup_epochs=20)
    for method, top1 in (("baseline", 68.92), ("logit", 69.78), ("st", 70.06), ("at", 69.28), ("fsp", 69.78)):
        add(top1, "KD-Zoo", None, dataset="cifar100", student="resnet20",
            teacher=None if method == "baseline" else "resnet110", method=method)
    # ImageNet ResNet-34 -> ResNet-18, 100 epochs
    add(69.76, "torchvision weights", None, dataset="imagenet", student="resnet18", teacher=None, method="baseline",
        epochs=100)
    add("71.03 / 71.37", "mdistiller / torchdistill", "best", dataset="imagenet", student="resnet18", teacher="resnet34",
        method="st", ce_weight=0.5, kd_weight=0.5, temperature=1.0, epochs=100)
    add("70.70 / 70.90", "AT paper / torchdistill", None, dataset="imagenet", student="resnet18",
        teacher="resnet34", method="at", at_weight=1000.0, epochs=100)
    add(71.70, "mdistiller", "best", dataset="imagenet", student="resnet18", teacher="resnet34", method="dkd",
        ce_weight=1.0, tckd_weight=1.0, nckd_weight=0.5, temperature=1.0, dkd_warmup_epochs=1, epochs=100)
    # RepDistiller's FitNet column (train_student.py --distill hint -a 0 -b 100 --hint_layer 2: CE + 100 * hint at the
    # second stage, trained jointly, no init stage; mdistiller's configs/cifar100/fitnet.yaml is the same): last epoch
    for teacher, student, top1 in (("resnet32x4", "resnet8x4", 73.50), ("wrn_40_2", "wrn_16_2", 73.58),
                                   ("resnet56", "resnet20", 69.21), ("resnet110", "resnet32", 71.06)):
        add(top1, "RepDistiller", "last", dataset="cifar100", student=student, teacher=teacher, method="fitnet",
            epochs=240, ce_weight=1.0, hint_weight=100.0, hint_stage=2, hint_epochs=0, kd_weight=0.0)
    # RepDistiller's CRD column (last epoch, mean of runs): train_student.py --distill crd -r 1 -a 0 -b 0.8,
    # 128-d embeddings, K = 16384 negatives of other classes, T 0.07, memory momentum 0.5
    crd = dict(method="crd", ce_weight=1.0, crd_weight=0.8, feat_dim=128, nce_k=16384, nce_temperature=0.07,
               nce_momentum=0.5)
    for teacher, student, top1 in (("resnet32x4", "resnet8x4", 75.51), ("wrn_40_2", "wrn_16_2", 75.48),
                                   ("resnet56", "resnet20", 71.16), ("resnet110", "resnet32", 73.48)):
        add(top1, "RepDistiller", "last", dataset="cifar100", student=student, teacher=teacher, epochs=240, **crd)
    add(71.17, "CRD paper", None, dataset="imagenet", student="resnet18", teacher="resnet34", epochs=100, **crd)
    # ReviewKD paper (CVPR 2021; the DKD paper lists the same): the authors' CIFAR-100/script/reviewKD.sh settings,
    # CE 1, 20 warm-up epochs of the review loss, weight by pair; ImageNet as their code, weight 1, no warm-up
    for teacher, student, weight, top1 in (("resnet32x4", "resnet8x4", 5.0, 75.63), ("wrn_40_2", "wrn_16_2", 5.0, 76.12),
                                           ("resnet56", "resnet20", 0.6, 71.89), ("resnet110", "resnet32", 1.0, 73.89)):
        add(top1, "ReviewKD paper", None, dataset="cifar100", student=student, teacher=teacher, method="reviewkd",
            epochs=240, ce_weight=1.0, reviewkd_weight=weight, reviewkd_warmup_epochs=20)
    add(71.61, "ReviewKD paper", None, dataset="imagenet", student="resnet18", teacher="resnet34", method="reviewkd",
        ce_weight=1.0, reviewkd_weight=1.0, reviewkd_warmup_epochs=0, epochs=100)
    # seed 000: best epoch; (label smoothing of the teacher 0.0, 0.1); students trained by pure KD
    seed000 = {("imagenet", "resnet18"): {1: (71.488, 71.666), 2: (71.360, 68.860), 3: (69.674, 67.752), 64: (66.194, 64.362)},
               ("imagenet", "resnet50"): {1: (76.328, 76.896), 2: (76.180, 76.110), 3: (75.488, 75.790), 64: (74.278, 74.566)},
               ("cub200", "resnet18"): {1: (80.169, 80.946), 2: (80.808, 80.428), 3: (80.785, 78.196), 64: (73.611, 67.161)},
               ("cub200", "resnet50"): {1: (82.902, 83.742), 2: (82.534, 83.379), 3: (82.091, 82.142), 64: (79.784, 77.206)},
               ("cub200", "mobilenet_v2"): {1: (81.144, 81.731), 2: (81.895, 80.609), 3: (81.257, 78.961), 64: (75.441, 70.435)}}
    for (dataset, student), grid in seed000.items():
        for temperature, values in grid.items():
            for smoothing, top1 in zip((0.0, 0.1), values):
                add(top1, "seed 000", "best", dataset=dataset, student=student, teacher="resnet50", method="st",
                    temperature=temperature, teacher_label_smoothing=smoothing, ce_weight=0.0, kd_weight=1.0, epochs=200)
    for dataset, values in (("imagenet", (76.132, 76.200)), ("cub200", (81.584, 82.068))):
        for smoothing, top1 in zip((0.0, 0.1), values):
            add(top1, "seed 000", "best", dataset=dataset, student="resnet50", teacher=None, method="baseline",
                label_smoothing=smoothing, epochs=90)
    # seed 003, mini-ImageNet (100 epochs; cosine with 1 warm-up epoch unless said otherwise): best epoch
    # (the only number its code records); the step row has no code (README only)
    for schedule, warmup, top1 in (("step", 0, 76.71), ("cosine", 0, 77.72), ("cosine", 1, 78.84), ("cosine", 3, 77.76)):
        add(top1, "seed 003 (README only: no step-LR code)" if schedule == "step" else "seed 003", "best",
            dataset="mini-imagenet", student="shufflenet_v2_x1_0", teacher=None, method="baseline",
            lr_schedule=schedule, warmup_epochs=warmup)
    for student, top1 in (("shufflenet_v2_x1_5", 79.1), ("shufflenet_v2_x2_0", 80.83), ("resnet18", 79.11),
                          ("resnet34", 81.0), ("resnet50", 81.79)):
        add(top1, "seed 003", "best", dataset="mini-imagenet", student=student, teacher=None, method="baseline")
    for teacher, student, temperature, alpha, top1 in (
            ("shufflenet_v2_x2_0", "shufflenet_v2_x1_0", 1, 0.9, 79.64), ("shufflenet_v2_x2_0", "shufflenet_v2_x1_0", 3, 0.9, 81.10),
            ("shufflenet_v2_x2_0", "shufflenet_v2_x1_0", 5, 0.9, 80.65), ("shufflenet_v2_x2_0", "shufflenet_v2_x1_0", 10, 0.9, 80.875),
            ("shufflenet_v2_x2_0", "shufflenet_v2_x1_0", 3, 0.7, 81.27), ("shufflenet_v2_x2_0", "shufflenet_v2_x1_0", 3, 0.6, 81.28),
            ("shufflenet_v2_x2_0", "shufflenet_v2_x1_0", 3, 0.5, 80.78), ("resnet50", "resnet18", 3, 0.6, 82.45)):
        add(top1, "seed 003", "best", dataset="mini-imagenet", student=student, teacher=teacher, method="st",
            temperature=temperature, kd_weight=alpha, ce_weight=1 - alpha)  # alpha * T^2 * soft + (1 - alpha) * CE
    # seed 004, ResNet-34 teacher, Imagenette/Imagewoof version 1: best epoch on the validation set.
    # (no teacher, simultaneous, stage-wise) on all data, (no teacher, stage-wise) on 1/4
    seed004 = {"imagenette": (99.2, [(91.8, 92.2, 97.4, 84.8, 95.4), (91.2, 93.2, 98.8, 85, 95), (91.4, 92.4, 98.8, 85.4, 95.6),
                                     (91.6, 92.4, 98.8, 85, 95.8), (90.6, 91.8, 99, 83.2, 96)]),
               "imagewoof": (91.4, [(80.2, 79.8, 90.6, 63.2, 85.8), (78.6, 79.6, 92.8, 61.6, 89), (79.2, 81, 92.4, 60.2, 89),
                                    (79.8, 81.4, 92, 60, 87.6), (80.2, 84.2, 93.4, 58.8, 89.8)]),
               "cifar10": (87.51, [(77.88, 77.32, 84.75, 66.35, 81.59), (77.5, 75.98, 84.97, 64.89, 82.55),
                                   (77.35, 76.47, 85.99, 64.66, 83.28), (78.08, 76.79, 86.46, 65.19, 83.24),
                                   (78.3, 76.94, 86.62, 64.09, 83.64)])}
    students = ("sw_resnet10", "sw_resnet14", "sw_resnet18", "sw_resnet20", "sw_resnet26")
    stagewise = dict(frozen_bn="train", phase_start="best")
    for dataset, (teacher_top1, rows) in seed004.items():
        version = {} if dataset == "cifar10" else {"data_version": 1}
        add(teacher_top1, "seed 004", "best", dataset=dataset, student="fastai_resnet34", teacher=None, method="baseline",
            **version)
        for student, values in zip(students, rows):
            cells = [("baseline", 1.0), ("simultaneous", 1.0), ("stagewise", 1.0), ("baseline", 0.25), ("stagewise", 0.25)]
            for (method, fraction), top1 in zip(cells, values):
                add(top1, "seed 004", "best", dataset=dataset, student=student,
                    teacher=None if method == "baseline" else "fastai_resnet34", method=method, train_fraction=fraction,
                    **version, **(stagewise if method == "stagewise" else {}))
    # seed 004's archived tables (Imagenette v1; their teacher scored 93.6 %): best epoch on the
    # validation set, the mean of 5 runs where the table has 5, else the single run
    archived = [("sw_medium", "baseline", 1.0, None, 89.68), ("sw_medium", "stagewise", 1.0, None, 93.92),
                ("sw_medium", "stagewise", 0.25, None, 91.8), ("sw_medium", "baseline", 0.25, None, 82.4),
                ("sw_small", "baseline", 1.0, None, 90.92), ("sw_small", "stagewise", 1.0, None, 91.28),
                ("sw_smallest", "stagewise", 1.0, None, 88.4),
                ("sw_plain5", "baseline", 1.0, None, 86.72), ("sw_plain5", "simultaneous", 1.0, 5, 87.24),
                ("sw_medium", "simultaneous", 1.0, 5, 90.32), ("sw_medium", "simultaneous", 1.0, 4, 89.12),
                ("sw_medium", "simultaneous", 1.0, 3, 89.64),
                ("sw_small", "simultaneous", 1.0, 4, 90.56), ("sw_small", "simultaneous", 1.0, 3, 90.64)]
    for student, method, fraction, maps, top1 in archived:
        extra = {"feature_maps": maps} if maps else stagewise if method == "stagewise" else {}
        add(top1, "seed 004 archived", "best", dataset="imagenette", data_version=1, student=student,
            teacher=None if method == "baseline" else "fastai_resnet34", method=method, train_fraction=fraction, **extra)
    return refs


REFERENCES = _references()


def reference_for(group):
    """(top1, source, epoch) of the most specific published number whose fields all match the group, or None."""
    fields = {**group["args"], "dataset": group["dataset"], "student": group["student"],
              "teacher": group["teacher"], "method": group["method"]}
    matches = [(len(match), top1, source, epoch) for match, top1, source, epoch in REFERENCES
               if all(_same(fields.get(key, "<absent>"), value) for key, value in match.items())]
    return max(matches, key=lambda m: m[0])[1:] if matches else None


def _same(ours, theirs):
    if isinstance(theirs, (int, float)) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        return math.isclose(ours, theirs, rel_tol=1e-6)
    return ours == theirs


# ---------------------------------------------------------------- loading and grouping
def load_runs(runs_dir):
    # run directory name -> args: finds a teacher run whose recorded path was relative to another directory
    args_by_name = {p.parent.name: json.loads(p.read_text()) for p in Path(runs_dir).rglob("args.json")}
    runs = []
    for results_path in sorted(Path(runs_dir).rglob("results.json")):
        run_dir = results_path.parent
        if not (run_dir / "args.json").exists():
            print(f"skipping {run_dir}: no args.json", file=sys.stderr)
            continue
        args = json.loads((run_dir / "args.json").read_text())
        results = json.loads(results_path.read_text())
        metrics_path = run_dir / "metrics.jsonl"
        metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] \
            if metrics_path.exists() else []
        setting = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if k not in IGNORED_ARGS}
        if args.get("teacher"):
            teacher_run = Path(args["teacher"]).parent
            setting["teacher_run"] = teacher_run.name  # students of two teachers are two experiments, not two seeds
            teacher_args = json.loads((teacher_run / "args.json").read_text()) if (teacher_run / "args.json").exists() \
                else args_by_name.get(teacher_run.name)
            if teacher_args is not None:  # the teacher's own label smoothing tells seed 000's two teachers apart
                setting["teacher_label_smoothing"] = teacher_args.get("label_smoothing", 0.0)
        elif args.get("teacher_model") and args.get("teacher_pretrained"):
            setting["teacher_label_smoothing"] = 0.0  # torchvision's ImageNet weights (V1) were trained without it
        if args.get("init_from"):  # the experiment of the run whose weights this one started from
            setting["init_from"] = Path(args["init_from"]).parent.name.split("__")[0]
        version = _data_version(args.get("dataset"), args.get("data_dir"))
        if version is not None:
            setting["data_version"] = version
        runs.append({"dataset": results.get("dataset", args.get("dataset")), "student": results.get("model", args.get("model")),
                     "teacher": results.get("teacher"), "method": results.get("method", "baseline"),
                     "args": setting, "seed": args.get("seed"), "finished": results_path.stat().st_mtime,
                     "results": results, "metrics": metrics, "dir": run_dir})
    return runs


def _data_version(dataset, data_dir):
    """Imagenette and Imagewoof come in version 1 (imagenette/, the seeds' numbers) and version 2
    (imagenette2/, other splits): the version is in the name of the data directory."""
    if dataset not in ("imagenette", "imagewoof") or not data_dir:
        return None
    match = re.fullmatch(rf"{dataset}(2)?(-\d+)?", Path(data_dir).name)
    return None if match is None else 2 if match.group(1) else 1


def group_runs(runs):
    """Groups of runs that differ only in seed; a seed run twice counts once (its newest run)."""
    groups = defaultdict(dict)
    for run in sorted(runs, key=lambda r: r["finished"]):
        key = (run["dataset"], run["student"], run["teacher"] or "", run["method"], tuple(sorted(run["args"].items())))
        if run["seed"] in groups[key]:
            print(f"seed {run['seed']} twice: using {run['dir']}, not {groups[key][run['seed']]['dir']}", file=sys.stderr)
        groups[key][run["seed"]] = run
    return [summarise(list(by_seed.values())) for _, by_seed in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))]


def _sort_key(key):
    dataset, student, teacher, method, args = key
    return dataset, student, METHOD_ORDER.index(method) if method in METHOD_ORDER else 99, teacher, str(args)


def _mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _top5_at_best(run):
    best_epoch = run["results"].get("best_epoch")
    return next((m["top5"] for m in run["metrics"] if m.get("epoch") == best_epoch), math.nan)


def summarise(runs):
    first = runs[0]
    stats = {"top1_last": [r["results"]["top1"] for r in runs], "top1_best": [r["results"]["best_top1"] for r in runs],
             "top5_last": [r["results"]["top5"] for r in runs], "top5_best": [_top5_at_best(r) for r in runs]}
    group = {key: first[key] for key in ("dataset", "student", "teacher", "method", "args")}
    for name, values in stats.items():
        group[name], group[name + "_std"] = _mean_std(values)
    group["seeds"] = len(runs)
    group["teacher_top1"] = _mean_std([r["results"].get("teacher_top1", math.nan) for r in runs])[0]
    group["wall_time_s"] = statistics.fmean(r["results"].get("wall_time_s", math.nan) for r in runs)
    group["curves"] = [[(m["epoch"], m["top1"]) for m in r["metrics"]] for r in runs]
    return group


def attach_baselines(groups):
    """Δ top-1 against the closest no-teacher baseline of the same data set, student and train fraction."""
    for group in groups:
        group["delta_last"] = group["delta_best"] = math.nan
        group["baseline_differs"] = ""
        if group["method"] == "baseline":
            continue
        candidates = [b for b in groups if b["method"] == "baseline" and (b["dataset"], b["student"]) ==
                      (group["dataset"], group["student"]) and
                      b["args"].get("train_fraction", 1.0) == group["args"].get("train_fraction", 1.0)]
        if not candidates:
            continue
        def differs(baseline):
            shared = baseline["args"].keys() & group["args"].keys()
            return sorted(k for k in shared if baseline["args"][k] != group["args"][k])
        baseline = min(candidates, key=lambda b: len(differs(b)))
        group["delta_last"] = group["top1_last"] - baseline["top1_last"]
        group["delta_best"] = group["top1_best"] - baseline["top1_best"]
        group["baseline_differs"] = " ".join(differs(baseline))


def describe_settings(groups):
    """The arguments that vary between the groups of one data set and method, as `key=value`."""
    by_block = defaultdict(list)
    for group in groups:
        by_block[group["dataset"], group["method"]].append(group)
    for block in by_block.values():
        keys = sorted({k for g in block for k in g["args"]})
        # the teacher run's name is long and says little; its top-1 has a column of its own
        varying = [k for k in keys if k != "teacher_run" and len({repr(g["args"].get(k)) for g in block}) > 1]
        for group in block:
            group["setting"] = " ".join(f"{k}={_short(group['args'][k])}" for k in varying if k in group["args"])


def _short(value):
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


# ---------------------------------------------------------------- output
def _pm(mean, std):
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _delta(value, dagger):
    return "–" if math.isnan(value) else f"{value:+.2f}{' †' if dagger else ''}"


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min" if seconds < 36000 else f"{seconds / 3600:.1f} h"


def compact_markdown(groups):
    """The quick start's table: one line per method, top-1 of the last epoch and its change."""
    header = ["data set", "train fraction", "student", "teacher", "teacher top-1", "method", "setting", "top-1",
              "Δ vs baseline", "wall time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [g["dataset"], f"{g['args'].get('train_fraction', 1.0):g}", g["student"], g["teacher"] or "–",
                 _pm(g["teacher_top1"], math.nan), g["method"], g["setting"] or "–", _pm(g["top1_last"], g["top1_last_std"]),
                 _delta(g["delta_last"], bool(g["baseline_differs"])), _duration(g["wall_time_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "top-1: val accuracy (%) at the last epoch; Δ: against the no-teacher baseline of the same "
              "student and train fraction."]
    return "\n".join(lines) + "\n"


REFERENCE_FIELDS = ["reference_top1", "reference_epoch", "reference_ours", "reference_gap", "reference_source"]


def reference_cells(group):
    """The published top-1, which epoch it is, ours at that epoch (mean over seeds), ours minus theirs
    and the source; empty strings without a published number. Where the source does not say which
    epoch it reports, neither ours nor the gap is given: both of ours are in the table."""
    ref = reference_for(group)
    if ref is None:
        return dict.fromkeys(REFERENCE_FIELDS, "")
    top1, source, epoch = ref
    ours = {"best": group["top1_best"], "last": group["top1_last"]}.get(epoch, math.nan)
    gap = ours - top1 if isinstance(top1, (int, float)) else math.nan
    return {"reference_top1": str(top1), "reference_epoch": EPOCH_LABELS[epoch],
            "reference_ours": "" if math.isnan(ours) else f"{ours:.2f}",
            "reference_gap": "" if math.isnan(gap) else f"{gap:+.2f}", "reference_source": source}


def markdown(groups, with_reference):
    header = ["data set", "student", "teacher", "teacher top-1", "method", "setting", "seeds", "top-1 last", "top-1 best",
              "top-5 last", "top-5 best", "Δ top-1 last", "Δ top-1 best", "wall time"]
    if with_reference:
        header += ["published top-1", "published epoch", "ours, same epoch", "ours - published", "source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        dagger = bool(g["baseline_differs"])
        cells = [g["dataset"], g["student"], g["teacher"] or "–", _pm(g["teacher_top1"], math.nan), g["method"],
                 g["setting"] or "–", str(g["seeds"]),
                 _pm(g["top1_last"], g["top1_last_std"]), _pm(g["top1_best"], g["top1_best_std"]),
                 _pm(g["top5_last"], g["top5_last_std"]), _pm(g["top5_best"], g["top5_best_std"]),
                 _delta(g["delta_last"], dagger), _delta(g["delta_best"], dagger), _duration(g["wall_time_s"])]
        if with_reference:
            cells += [v or "–" for v in reference_cells(g).values()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Top-1/top-5 in %, mean ± sample std over seeds; 'last' is the last epoch, 'best' the best "
              "epoch (top-5 at the epoch of best top-1). Δ: against the no-teacher baseline of the same student, "
              "data set and train fraction; † that baseline's recipe differs (see baseline_differs in report.csv)."]
    if with_reference:
        lines += ["", "Published top-1: the epoch it reports (best or last, as its source selects it) decides which "
                  "of ours it is compared with ('ours, same epoch': our best-epoch top-1 against a best-epoch number, "
                  "our last-epoch top-1 against a last-epoch number; none where the source does not say)."]
    return "\n".join(lines) + "\n"


def write_csv(groups, path, with_reference):
    fields = ["dataset", "student", "teacher", "teacher_top1", "method", "setting", "seeds"] + \
             [f"{name}{suffix}" for name in ("top1_last", "top1_best", "top5_last", "top5_best") for suffix in ("", "_std")] + \
             ["delta_last", "delta_best", "baseline_differs", "wall_time_s"]
    if with_reference:
        fields += REFERENCE_FIELDS
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        for g in groups:
            row = {**g, "teacher": g["teacher"] or ""}
            if with_reference:
                row.update(reference_cells(g))
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


LINE_STYLES = ["-", "--", ":", "-."]


def zoomed_ylim(values, margin=0.5):
    """Top-1 limits that show the differences: from the lowest value of the last tenth of training
    (earlier epochs, or a stage-wise run's feature phases, would stretch the axis to 0-100) to the
    highest, plus a margin."""
    if not values:
        return 0.0, 100.0
    return max(0.0, min(values) - margin), min(100.0, max(values) + margin)


def plot_curves(groups, out_dir):
    """One PNG per (data set, student, train fraction); one line per group, the mean over its seeds,
    against the fraction of training done (runs of different lengths share the x-axis). Colours
    cycle through 10, line styles change every 10 lines; the legend sits outside the axes."""
    panels = defaultdict(list)
    for g in groups:
        panels[g["dataset"], g["student"], g["args"].get("train_fraction", 1.0)].append(g)
    paths = []
    for (dataset, student, fraction), members in panels.items():
        fig, ax = plt.subplots(figsize=(10, 4.5))
        later = []  # top-1 of the last tenth of each curve: what the y-axis zooms on
        for index, g in enumerate(members):
            per_epoch = defaultdict(list)
            for curve in g["curves"]:
                for epoch, top1 in curve:
                    per_epoch[epoch].append(top1)
            if per_epoch:
                epochs = sorted(per_epoch)
                top1 = [statistics.fmean(per_epoch[e]) for e in epochs]
                later += top1[-max(1, len(top1) // 10):]
                label = " ".join(filter(None, [g["method"], f"({g['teacher']})" if g["teacher"] else "", g["setting"]]))
                ax.plot([e / epochs[-1] for e in epochs], top1, label=label, color=f"C{index % 10}",
                        linestyle=LINE_STYLES[index // 10 % len(LINE_STYLES)])
        ax.set(xlabel="fraction of training", ylabel="val top-1 (%)", ylim=zoomed_ylim(later), xlim=(0, 1),
               title=f"{dataset}, {student}, train fraction {fraction}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        path = Path(out_dir) / re.sub(r"[^\w.-]", "_", f"curves_{dataset}_{student}_frac{fraction}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", help="directory searched recursively for results.json")
    parser.add_argument("--out", default=None, help="where report.md, report.csv and the PNGs go (default: RUNS_DIR)")
    parser.add_argument("--reference", action="store_true", help="add the published top-1 beside ours")
    parser.add_argument("--compact", action="store_true",
                        help="print the short table of the quick start (report.md keeps every column)")
    args = parser.parse_args()
    if not Path(args.runs_dir).is_dir():
        sys.exit(f"error: {args.runs_dir} is not a directory")
    runs = load_runs(args.runs_dir)
    if not runs:
        sys.exit(f"error: no results.json under {args.runs_dir}; point it at an OUT_DIR of the launchers")
    groups = group_runs(runs)
    attach_baselines(groups)
    describe_settings(groups)
    out_dir = Path(args.out or args.runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(groups, args.reference)
    (out_dir / "report.md").write_text(table)
    write_csv(groups, out_dir / "report.csv", args.reference)
    plots = plot_curves(groups, out_dir)
    print(compact_markdown(groups) if args.compact else table)
    print(f"wrote {out_dir / 'report.md'}, {out_dir / 'report.csv'} and {len(plots)} plot(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
