"""Summarise a directory of runs: one row per experiment, mean ± std over seeds.

    python scripts/report.py runs/cifar                    # report.md, report.csv, curves_*.png in runs/cifar
    python scripts/report.py runs/ --out report/ --reference

Reads every results.json under RUNS_DIR (with the args.json and metrics.jsonl beside it). Runs that
differ only in seed, output paths or experiment name form one group; a group is keyed by data set,
student, teacher, method and every other argument (temperature, alpha, beta, label smoothing, train
fraction, LR schedule, ...). The "setting" column shows the arguments that vary between the groups of
one data set and method. For each group: last-epoch and best-epoch top-1 and top-5 (mean ± sample
std over seeds), the number of seeds, the mean wall time, and the change of top-1 against the
no-teacher baseline (method "baseline", train_teacher.py) of the same student, data set and train
fraction; where several baselines qualify, the one whose arguments differ least, marked † when its
recipe differs. --reference adds the published top-1 beside ours (REFERENCES below).
Plots: validation top-1 per epoch, one PNG per (data set, student, train fraction), one line per group.
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
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Arguments that never make two runs different experiments: seed, names, paths, logging, hardware.
IGNORED_ARGS = {"seed", "exp_name", "out_dir", "data_dir", "teacher", "resume", "evaluate", "log_interval",
                "workers", "device", "download", "compile", "channels_last", "loader", "dataset", "model",
                "teacher_model"}
METHOD_ORDER = ["baseline", "logit", "st", "at", "at_st", "fsp", "simultaneous", "stagewise"]


# ---------------------------------------------------------------- published numbers (top-1, %)
def _references():
    """(match, top1, source): `match` holds dataset, student, teacher (None: no teacher), method and
    optionally argument values (epochs, temperature, ...) and teacher_label_smoothing."""
    refs = []
    def add(top1, source, **match):
        if match["method"] == "baseline":  # published baselines use no label smoothing unless said otherwise
            match.setdefault("label_smoothing", 0.0)
        refs.append((match, top1, source))
    # seed 001: best epoch, mean of 3 runs (* in the seed: 2 runs)
    seed001 = {"baseline": (92.0, 92.5, 67.6, 71.6), "logit": (92.5, 94.2, 69.2, 71.8),
               "st": (92.8, 93.9, 69.9, 74.1), "at": (91.9, 93.3, 68.4, 72.6),
               "at_st": (92.6, 93.7, 68.7, 73.7), "fsp": (92.0, 92.7, 68.0, 72.8)}
    for method, values in seed001.items():
        for (dataset, model), top1 in zip([(d, m) for d in ("cifar10", "cifar100") for m in ("resnet20", "resnet110")], values):
            add(top1, "seed 001 (best epoch, 3 runs)", dataset=dataset, student=model, method=method, epochs=200,
                teacher=None if method == "baseline" else model)
    # RepDistiller (CRD, ICLR 2020): last epoch, mean of runs; 240-epoch recipe
    for teacher, student, t_top1, s_top1, kd, at, fsp in [
            ("resnet32x4", "resnet8x4", 79.42, 72.50, 73.33, 73.44, 72.62), ("wrn_40_2", "wrn_16_2", 75.61, 73.26, 74.92, 74.08, 72.91),
            ("resnet56", "resnet20", 72.34, 69.06, 70.66, 70.55, 69.95), ("resnet110", "resnet32", 74.31, 71.14, 73.08, 72.31, 71.89)]:
        source, common = "RepDistiller (last epoch)", dict(dataset="cifar100", epochs=240)
        add(t_top1, source, student=teacher, teacher=None, method="baseline", **common)
        add(s_top1, source, student=student, teacher=None, method="baseline", **common)
        for method, top1 in (("st", kd), ("at", at), ("fsp", fsp)):
            add(top1, source, student=student, teacher=teacher, method=method, **common)
    for method, top1 in (("baseline", 68.92), ("logit", 69.78), ("st", 70.06), ("at", 69.28), ("fsp", 69.78)):
        add(top1, "KD-Zoo", dataset="cifar100", student="resnet20", teacher=None if method == "baseline" else "resnet110",
            method=method)
    # ImageNet ResNet-34 -> ResNet-18, 100 epochs
    add(69.76, "torchvision weights", dataset="imagenet", student="resnet18", teacher=None, method="baseline", epochs=100)
    add("71.03 / 71.37", "mdistiller / torchdistill", dataset="imagenet", student="resnet18", teacher="resnet34", method="st")
    add("70.70 / 70.90", "AT paper / torchdistill", dataset="imagenet", student="resnet18", teacher="resnet34", method="at")
    # seed 000: (label smoothing of the teacher 0.0, 0.1); students trained by pure KD (alpha 1)
    seed000 = {("imagenet", "resnet18"): {1: (71.488, 71.666), 2: (71.360, 68.860), 3: (69.674, 67.752), 64: (66.194, 64.362)},
               ("imagenet", "resnet50"): {1: (76.328, 76.896), 2: (76.180, 76.110), 3: (75.488, 75.790), 64: (74.278, 74.566)},
               ("cub200", "resnet18"): {1: (80.169, 80.946), 2: (80.808, 80.428), 3: (80.785, 78.196), 64: (73.611, 67.161)},
               ("cub200", "resnet50"): {1: (82.902, 83.742), 2: (82.534, 83.379), 3: (82.091, 82.142), 64: (79.784, 77.206)},
               ("cub200", "mobilenet_v2"): {1: (81.144, 81.731), 2: (81.895, 80.609), 3: (81.257, 78.961), 64: (75.441, 70.435)}}
    for (dataset, student), grid in seed000.items():
        for temperature, values in grid.items():
            for smoothing, top1 in zip((0.0, 0.1), values):
                add(top1, "seed 000", dataset=dataset, student=student, teacher="resnet50", method="st",
                    temperature=temperature, teacher_label_smoothing=smoothing)
    for dataset, values in (("imagenet", (76.132, 76.200)), ("cub200", (81.584, 82.068))):
        for smoothing, top1 in zip((0.0, 0.1), values):
            add(top1, "seed 000", dataset=dataset, student="resnet50", teacher=None, method="baseline",
                label_smoothing=smoothing, epochs=90)
    # seed 003, mini-ImageNet (100 epochs; cosine with 1 warm-up epoch unless said otherwise)
    for schedule, warmup, top1 in (("step", 0, 76.71), ("cosine", 0, 77.72), ("cosine", 1, 78.84), ("cosine", 3, 77.76)):
        add(top1, "seed 003", dataset="mini-imagenet", student="shufflenet_v2_x1_0", teacher=None, method="baseline",
            lr_schedule=schedule, warmup_epochs=warmup)
    for student, top1 in (("shufflenet_v2_x1_5", 79.1), ("shufflenet_v2_x2_0", 80.83), ("resnet18", 79.11),
                          ("resnet34", 81.0), ("resnet50", 81.79)):
        add(top1, "seed 003", dataset="mini-imagenet", student=student, teacher=None, method="baseline")
    for temperature, alpha, top1 in ((1, 0.9, 79.64), (3, 0.9, 81.10), (5, 0.9, 80.65), (10, 0.9, 80.875),
                                     (3, 0.7, 81.27), (3, 0.6, 81.28), (3, 0.5, 80.78)):
        add(top1, "seed 003", dataset="mini-imagenet", student="shufflenet_v2_x1_0", teacher="shufflenet_v2_x2_0",
            method="st", temperature=temperature, alpha=alpha)
    add(82.45, "seed 003", dataset="mini-imagenet", student="resnet18", teacher="resnet50", method="st", temperature=3, alpha=0.6)
    # seed 004, ResNet-34 teacher: (no teacher, simultaneous, stage-wise) on all data, (no teacher, stage-wise) on 1/4
    seed004 = {"imagenette": (99.2, [(91.8, 92.2, 97.4, 84.8, 95.4), (91.2, 93.2, 98.8, 85, 95), (91.4, 92.4, 98.8, 85.4, 95.6),
                                     (91.6, 92.4, 98.8, 85, 95.8), (90.6, 91.8, 99, 83.2, 96)]),
               "imagewoof": (91.4, [(80.2, 79.8, 90.6, 63.2, 85.8), (78.6, 79.6, 92.8, 61.6, 89), (79.2, 81, 92.4, 60.2, 89),
                                    (79.8, 81.4, 92, 60, 87.6), (80.2, 84.2, 93.4, 58.8, 89.8)]),
               "cifar10": (87.51, [(77.88, 77.32, 84.75, 66.35, 81.59), (77.5, 75.98, 84.97, 64.89, 82.55),
                                   (77.35, 76.47, 85.99, 64.66, 83.28), (78.08, 76.79, 86.46, 65.19, 83.24),
                                   (78.3, 76.94, 86.62, 64.09, 83.64)])}
    students = ("resnet10", "resnet14_imagenet", "resnet18", "resnet20_imagenet", "resnet26")
    for dataset, (teacher_top1, rows) in seed004.items():
        add(teacher_top1, "seed 004", dataset=dataset, student="resnet34", teacher=None, method="baseline")
        for student, values in zip(students, rows):
            cells = [("baseline", 1.0), ("simultaneous", 1.0), ("stagewise", 1.0), ("baseline", 0.25), ("stagewise", 0.25)]
            for (method, fraction), top1 in zip(cells, values):
                add(top1, "seed 004", dataset=dataset, student=student, teacher=None if method == "baseline" else "resnet34",
                    method=method, train_fraction=fraction)
    return refs


REFERENCES = _references()


def reference_for(group):
    """The most specific published number whose fields all match the group, or None."""
    fields = {**group["args"], "dataset": group["dataset"], "student": group["student"],
              "teacher": group["teacher"], "method": group["method"]}
    matches = [(len(match), top1, source) for match, top1, source in REFERENCES
               if all(_same(fields.get(key, "<absent>"), value) for key, value in match.items())]
    return max(matches, key=lambda m: m[0])[1:] if matches else None


def _same(ours, theirs):
    if isinstance(theirs, (int, float)) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        return math.isclose(ours, theirs)
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
        if args.get("teacher"):  # the teacher's own label smoothing tells seed 000's two teachers apart
            teacher_run = Path(args["teacher"]).parent
            teacher_args = json.loads((teacher_run / "args.json").read_text()) if (teacher_run / "args.json").exists() \
                else args_by_name.get(teacher_run.name)
            if teacher_args is not None:
                setting["teacher_label_smoothing"] = teacher_args.get("label_smoothing", 0.0)
            else:  # teacher run not found: its experiment name still separates different teachers
                setting["teacher_exp"] = teacher_run.name.split("__")[0]
        runs.append({"dataset": results.get("dataset", args.get("dataset")), "student": results.get("model", args.get("model")),
                     "teacher": results.get("teacher"), "method": results.get("method", "baseline"),
                     "args": setting, "seed": args.get("seed"), "finished": results_path.stat().st_mtime,
                     "results": results, "metrics": metrics, "dir": run_dir})
    return runs


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
        varying = [k for k in keys if len({repr(g["args"].get(k)) for g in block}) > 1]
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
    header = ["data set", "train fraction", "student", "teacher", "method", "setting", "top-1", "Δ vs baseline",
              "wall time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [g["dataset"], f"{g['args'].get('train_fraction', 1.0):g}", g["student"], g["teacher"] or "–",
                 g["method"], g["setting"] or "–", _pm(g["top1_last"], g["top1_last_std"]),
                 _delta(g["delta_last"], bool(g["baseline_differs"])), _duration(g["wall_time_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "top-1: val accuracy (%) at the last epoch; Δ: against the no-teacher baseline of the same "
              "student and train fraction."]
    return "\n".join(lines) + "\n"


def _reference_text(group):
    ref = reference_for(group)
    return ("", "") if ref is None else (str(ref[0]), ref[1])


def markdown(groups, with_reference):
    header = ["data set", "student", "teacher", "method", "setting", "seeds", "top-1 last", "top-1 best",
              "top-5 last", "top-5 best", "Δ top-1 last", "Δ top-1 best", "wall time"]
    if with_reference:
        header += ["published top-1", "source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        dagger = bool(g["baseline_differs"])
        cells = [g["dataset"], g["student"], g["teacher"] or "–", g["method"], g["setting"] or "–", str(g["seeds"]),
                 _pm(g["top1_last"], g["top1_last_std"]), _pm(g["top1_best"], g["top1_best_std"]),
                 _pm(g["top5_last"], g["top5_last_std"]), _pm(g["top5_best"], g["top5_best_std"]),
                 _delta(g["delta_last"], dagger), _delta(g["delta_best"], dagger), _duration(g["wall_time_s"])]
        if with_reference:
            cells += list(_reference_text(g))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Top-1/top-5 in %, mean ± sample std over seeds; 'last' is the last epoch, 'best' the best "
              "epoch (top-5 at the epoch of best top-1). Δ: against the no-teacher baseline of the same student, "
              "data set and train fraction; † that baseline's recipe differs (see baseline_differs in report.csv)."]
    return "\n".join(lines) + "\n"


def write_csv(groups, path, with_reference):
    fields = ["dataset", "student", "teacher", "method", "setting", "seeds"] + \
             [f"{name}{suffix}" for name in ("top1_last", "top1_best", "top5_last", "top5_best") for suffix in ("", "_std")] + \
             ["delta_last", "delta_best", "baseline_differs", "wall_time_s"]
    if with_reference:
        fields += ["reference_top1", "reference_source"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        for g in groups:
            row = {**g, "teacher": g["teacher"] or ""}
            if with_reference:
                row["reference_top1"], row["reference_source"] = _reference_text(g)
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


def plot_curves(groups, out_dir):
    """One PNG per (data set, student, train fraction); one line per group, the mean over its seeds."""
    panels = defaultdict(list)
    for g in groups:
        panels[g["dataset"], g["student"], g["args"].get("train_fraction", 1.0)].append(g)
    paths = []
    for (dataset, student, fraction), members in panels.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for g in members:
            per_epoch = defaultdict(list)
            for curve in g["curves"]:
                for epoch, top1 in curve:
                    per_epoch[epoch].append(top1)
            if per_epoch:
                epochs = sorted(per_epoch)
                label = " ".join(filter(None, [g["method"], f"({g['teacher']})" if g["teacher"] else "", g["setting"]]))
                ax.plot(epochs, [statistics.fmean(per_epoch[e]) for e in epochs], label=label)
        ax.set(xlabel="epoch", ylabel="val top-1 (%)", title=f"{dataset}, {student}, train fraction {fraction}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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
