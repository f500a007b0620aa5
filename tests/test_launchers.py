"""The launchers in scripts/*/: DRY_RUN prints one command per row of the seed's table, every row
parses with its script's own flags, carries the settings of the seed's code (row by row, per seed)
and finds its published number in scripts/report.py; SMOKE runs each command shape for 2 steps on
CPU (and, with a stand-in torchrun, plans those runs and the checkpoints they read without training)."""
import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from common.data import DATASETS
from common.models import MODEL_NAMES

# launcher -> (rows per seed, rows run once whatever SEEDS is, number of seeds by default)
LAUNCHERS = {
    "scripts/cifar/methods.sh": (2 * 2 * 6, 0, 3),          # data sets x pairs x methods
    "scripts/cifar100_benchmark/teachers.sh": (0, 4, 3),
    "scripts/cifar100_benchmark/students.sh": (4 * 8, 0, 3),  # pairs x (baseline, KD, FitNet, AT, FSP, CRD, DKD, ReviewKD)
    "scripts/imagenet/teachers.sh": (0, 2, 1),                # label smoothing 0.0 and 0.1
    "scripts/imagenet/students.sh": (2 * 2 * 4, 0, 1),        # teachers x students x T
    "scripts/imagenet/resnet34_resnet18.sh": (6, 0, 1),       # baseline, KD, AT, DKD, CRD, ReviewKD
    "scripts/cub/teachers.sh": (0, 2, 1),
    "scripts/cub/students.sh": (2 * 3 * 4, 0, 1),
    "scripts/mini_imagenet/baselines.sh": (4 + 5, 0, 1),      # 4 schedules + 5 architectures
    "scripts/mini_imagenet/kd.sh": (7 + 1, 0, 1),             # the T x alpha cells + ResNet-50 -> ResNet-18
    "scripts/stagewise/teachers.sh": (0, 3, 1),
    "scripts/stagewise/students.sh": (3 * 5 * (3 + 2), 0, 1),  # data sets x students x (3 full + 2 quarter)
    # medium (no teacher, stage-wise, 3 simultaneous) + small (2 + 2 simultaneous) + 5fm (2) x 5 runs; once:
    # smallest stage-wise, medium on a quarter (stage-wise, no teacher, each evaluated on the held-out 3/4)
    "scripts/stagewise/archived.sh": (5 + 4 + 2, 1 + 2 + 2, 5),
}
SOURCED_ONLY = {"recipe.sh"}  # settings shared by the launchers of one directory

# directory -> (its launchers in the order they must run, the methods of its smoke runs, the number of
# smoke runs: one per command shape (script + method flags), plus teachers made on demand)
SMOKE = {
    "cifar": (["methods.sh"], {"baseline", "logit", "st", "at", "at_st", "fsp"}, 6),
    "cifar100_benchmark": (["teachers.sh", "students.sh"],
                           {"baseline", "st", "fitnet", "at", "fsp", "crd", "dkd", "reviewkd"}, 8),
    "imagenet": (["teachers.sh", "students.sh", "resnet34_resnet18.sh"],
                 {"baseline", "st", "at", "dkd", "crd", "reviewkd"}, 6 + 1),  # + ResNet-34
    "cub": (["teachers.sh", "students.sh"], {"baseline", "st"}, 2 + 1),  # + the ImageNet teacher --init-from reads
    "mini_imagenet": (["baselines.sh", "kd.sh"], {"baseline", "st"}, 2 + 1),  # + the x2.0 teacher
    # + archived.sh's simultaneous run on the first N maps and the (on demand) run its evaluation row reads
    "stagewise": (["teachers.sh", "students.sh", "archived.sh"], {"baseline", "simultaneous", "stagewise"}, 3 + 2),
}


def bash(script, **env):
    """Run a bash script (or `-c` command) with `env` on top of ours and the venv's torchrun first on PATH."""
    launcher_vars = ("SEEDS", "OUT_DIR", "NPROC", "DATA_DIR", "TEACHER_SEED", "TORCHRUN", "DRY_RUN", "SMOKE",
                     "TORCHVISION_TEACHER", "IMAGENET_OUT_DIR", "IMAGENET_TEACHER_SEED", "DATA_VERSION")
    full_env = {key: value for key, value in os.environ.items() if key not in launcher_vars}
    full_env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT), **env)
    cmd = ["bash", "-c", script] if script.startswith("source ") else ["bash", script]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def dry_run(launcher, **env):
    result = bash(launcher, DRY_RUN="1", NPROC="4", OUT_DIR="/runs/x", **env)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def test_every_launcher_is_listed():
    on_disk = {str(p.relative_to(ROOT)) for p in ROOT.glob("scripts/*/*.sh") if p.name not in SOURCED_ONLY}
    assert on_disk == set(LAUNCHERS)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_dry_run_prints_every_row(launcher):
    per_seed, once, default_seeds = LAUNCHERS[launcher]
    commands = dry_run(launcher)
    assert len(commands) == per_seed * default_seeds + once
    assert len({" ".join(c) for c in commands}) == len(commands), "a row is printed twice"
    commands = dry_run(launcher, SEEDS="7 8 9")
    assert len(commands) == 3 * per_seed + once
    seeds = [c[c.index("--seed") + 1] for c in commands]
    for seed in "789":
        assert seeds.count(seed) == per_seed + (once if seed == "7" else 0)  # teachers use the first seed


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_dry_run_rows_parse_with_their_script(launcher):
    for command in dry_run(launcher):
        assert command[:3] == ["torchrun", "--standalone", "--nproc_per_node=4"], command
        script, argv = command[3], command[4:]
        args = importlib.import_module(script.removesuffix(".py")).parse_args(argv)  # exits on an unknown flag
        assert args.dataset in DATASETS and args.model in MODEL_NAMES, command
        assert args.out_dir == "/runs/x"
        if script != "train_teacher.py":
            if args.teacher_model:
                assert args.teacher_model in MODEL_NAMES and args.teacher_pretrained, command
            else:  # a teacher run of this table, found by name when the row runs
                assert args.teacher.startswith("/runs/x/") and args.teacher.endswith("__*/best.pt"), command
                teacher_model = Path(args.teacher).parent.name.split("__")[2]
                assert teacher_model in MODEL_NAMES, command


def test_dry_run_runs_nothing(tmp_path):
    result = bash("scripts/cifar/methods.sh", DRY_RUN="1", OUT_DIR=str(tmp_path / "runs"))
    assert result.returncode == 0 and not (tmp_path / "runs").exists()


def test_checkpoint_lookup_takes_the_newest_run_and_fails_clearly(tmp_path):
    for name, mtime in (("t__cifar10__resnet20__seed0__1", 1000), ("t__cifar10__resnet20__seed0__2", 2000),
                        ("t__cifar10__resnet20__seed1__3", 3000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_text("")
        os.utime(tmp_path / name / "best.pt", (mtime, mtime))
    lookup = f'source scripts/lib.sh; OUT_DIR={tmp_path}; resolve_ckpt "$(run_ckpt t cifar10 resnet20 {{}})" --teacher'
    found = bash(lookup.format(0))
    assert found.returncode == 0 and found.stdout.strip() == str(tmp_path / "t__cifar10__resnet20__seed0__2" / "best.pt")
    missing = bash(lookup.format(5))
    assert missing.returncode != 0 and "no checkpoint for --teacher matches" in missing.stderr
    elsewhere = bash(f'source scripts/lib.sh; OUT_DIR=/nowhere; run_ckpt t cifar10 resnet20 0 {tmp_path}')
    assert elsewhere.stdout.strip() == f"{tmp_path}/t__cifar10__resnet20__seed0__*/best.pt"  # another launcher's OUT_DIR


def test_launch_resolves_teacher_init_from_and_resume_patterns(tmp_path):
    for name in ("t__cifar10__resnet20__seed0__1", "i__imagenet__resnet50__seed0__1", "r__cifar10__resnet20__seed0__1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_text("")
    fake_torchrun = tmp_path / "torchrun"
    fake_torchrun.write_text("#!/bin/sh\nshift\necho \"$@\"\n")  # drops --nproc_per_node, prints the rest
    fake_torchrun.chmod(0o755)
    row = (f'source scripts/lib.sh; OUT_DIR={tmp_path}; NPROC=1; launch x.py --teacher "$(run_ckpt t cifar10 resnet20 0)" '
           f'--init-from "$(run_ckpt i imagenet resnet50 0)" --resume "$(run_ckpt r cifar10 resnet20 0)" --evaluate')
    result = bash(row, TORCHRUN=str(fake_torchrun))
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()[-1].split()
    assert printed == ["x.py", "--teacher", f"{tmp_path}/t__cifar10__resnet20__seed0__1/best.pt",
                       "--init-from", f"{tmp_path}/i__imagenet__resnet50__seed0__1/best.pt",
                       "--resume", f"{tmp_path}/r__cifar10__resnet20__seed0__1/best.pt", "--evaluate"]
    auto = bash(f"source scripts/lib.sh; OUT_DIR={tmp_path}; NPROC=1; launch x.py --resume auto",
                TORCHRUN=str(fake_torchrun))
    assert auto.returncode == 0 and auto.stdout.split()[-2:] == ["--resume", "auto"]  # the scripts' own lookup


FAKE_TORCHRUN = """#!/usr/bin/env python3
import os, sys
args = sys.argv[2:]  # after --nproc_per_node
def get(flag):
    return args[args.index(flag) + 1] if flag in args else None
for flag in ("--teacher", "--init-from", "--resume"):  # a checkpoint a row reads exists when it starts
    assert get(flag) in (None, "auto") or os.path.isfile(get(flag)), (flag, get(flag))
print("RAN", " ".join(args))
if "--evaluate" not in args:  # the run directory a training run writes
    run = os.path.join(get("--out-dir"), f"{get('--exp-name')}__{get('--dataset')}__{get('--model')}__seed{get('--seed')}__1")
    os.makedirs(run)
    open(os.path.join(run, "best.pt"), "w").close()
"""


@pytest.mark.parametrize("directory", SMOKE)
def test_smoke_plan_without_training(directory, tmp_path):
    """SMOKE with a torchrun that only writes the run directory: one run per command shape, and every
    checkpoint another row reads (teacher, --init-from, --resume) made on demand before that row."""
    torchrun = tmp_path / "torchrun"
    torchrun.write_text(FAKE_TORCHRUN)
    torchrun.chmod(0o755)
    out = tmp_path / "runs"
    launchers, _, expected_runs = SMOKE[directory]
    ran = []
    for launcher in launchers:
        result = bash(f"scripts/{directory}/{launcher}", SMOKE="1", OUT_DIR=str(out), TORCHRUN=str(torchrun))
        assert result.returncode == 0, f"{launcher}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        ran += [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("RAN ")]
    assert len([p for p in out.iterdir() if p.is_dir()]) == expected_runs
    for command in ran:
        assert command[command.index("--device") + 1] == "cpu" and "--pretrained" not in command, command
        assert command[command.index("--dataset") + 1] in ("digits", "fake"), command


@pytest.mark.parametrize("directory", SMOKE)
def test_smoke_runs_each_command_shape(directory, tmp_path):
    launchers, methods, expected_runs = SMOKE[directory]
    for launcher in launchers:
        result = bash(f"scripts/{directory}/{launcher}", SMOKE="1", OUT_DIR=str(tmp_path))
        assert result.returncode == 0, f"{launcher}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        for last in tmp_path.glob("*/last.pt"):  # the launchers read best.pt; ImageNet networks are 45-180 MB each
            last.unlink()
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = [json.loads((run / "results.json").read_text()) for run in runs if (run / "results.json").exists()]
    assert len(results) == len(runs), "a smoke run left no results.json"
    assert len(runs) == expected_runs, sorted(r.name for r in runs)
    assert {r["method"] for r in results} == methods
    for run in runs:
        args = json.loads((run / "args.json").read_text())
        assert args["device"] == "cpu" and args["dataset"] in ("digits", "fake") and args["epochs"] <= 6


# ---------------------------------------------------------------- the seeds' settings, row by row
def flags(command):
    """The flags of a DRY_RUN command: flag -> its values (a list; [] for a switch)."""
    parsed, current = {}, None
    for token in command[4:]:
        if token.startswith("--"):
            current = parsed.setdefault(token, [])
        else:
            current.append(token)
    return parsed


def value(row, flag):
    assert len(row.get(flag, [])) == 1, (flag, row)
    return row[flag][0]


def number(row, flag):
    return float(value(row, flag))


def assert_recipe(row, **expected):
    """Each keyword is a flag without its dashes (underscores for dashes) and the value it must have."""
    for name, want in expected.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(want, (int, float)) and not isinstance(want, bool):
            assert number(row, flag) == pytest.approx(want, rel=1e-9), (flag, row)
        elif isinstance(want, list):
            assert row.get(flag) == want, (flag, row)
        else:
            assert value(row, flag) == want, (flag, row)


def teacher_of(row):
    """(experiment, data set, model) of the teacher run a row's --teacher pattern names."""
    return tuple(Path(value(row, "--teacher")).parent.name.split("__")[:3])


def rows_of(launcher, **env):
    return [(command[3], flags(command)) for command in dry_run(launcher, **env)]


def test_dry_run_seed001_cifar_settings():
    rows = rows_of("scripts/cifar/methods.sh")
    for script, row in rows:
        assert_recipe(row, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, lr_schedule="multistep",
                      milestones=["100", "150"], gamma=0.1, epochs=200, batch_size=128, warmup_epochs=0,
                      augment="reflect", amp="none")
        assert value(row, "--model") in ("resnet20_7x7", "resnet110_7x7") and "--zero-init-residual" not in row
        if script != "train_teacher.py":  # self-distillation from the baseline of the same network
            assert teacher_of(row) == ("cifar_baseline", value(row, "--dataset"), value(row, "--model"))
    by_exp = {}
    for script, row in rows:
        by_exp.setdefault(value(row, "--exp-name"), []).append((script, row))
    expected = {  # the loss forms of the seed's code: CE always at weight 1
        "cifar_st": ("kd_st.py", dict(ce_weight=1, kd_weight=1, temperature=4)),
        "cifar_logit": ("kd_logit.py", dict(target="features", ce_weight=1, kd_weight=1)),
        "cifar_at": ("kd_at.py", dict(ce_weight=1, at_weight=1000, at_mode="code")),
        "cifar_at_st": ("kd_at.py", dict(ce_weight=1, at_weight=1000, at_mode="code", kd_weight=0.9, temperature=4)),
        "cifar_fsp": ("kd_fsp.py", dict(fsp_mode="joint", ce_weight=1, fsp_weight=1 / 9)),
    }
    assert sorted(by_exp) == sorted(["cifar_baseline", *expected])
    for exp, (script, weights) in expected.items():
        assert len(by_exp[exp]) == 2 * 2 * 3
        for row_script, row in by_exp[exp]:
            assert row_script == script
            assert_recipe(row, **weights)
        if exp == "cifar_at":
            assert all("--kd-weight" not in row for _, row in by_exp[exp])  # AT alone: the soft term's weight is 0


def test_dry_run_seed000_imagenet_settings():
    teachers = rows_of("scripts/imagenet/teachers.sh")
    for script, row in teachers:
        assert script == "train_teacher.py" and "--pretrained" not in row and "--init-from" not in row
        assert_recipe(row, model="resnet50", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                      lr_schedule="step", lr_step=30, gamma=0.1, epochs=90, batch_size=2048, warmup_epochs=0,
                      augment="standard", image_size=224, val_resize=256)
    assert sorted(value(row, "--label-smoothing") for _, row in teachers) == ["0.0", "0.1"]
    students = rows_of("scripts/imagenet/students.sh")
    for script, row in students:
        assert script == "kd_st.py" and "--pretrained" not in row
        assert_recipe(row, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, lr_schedule="step", lr_step=80,
                      gamma=0.1, epochs=200, batch_size=2048, warmup_epochs=5, ce_weight=0, kd_weight=1,
                      augment="standard")
        smoothing = value(row, "--exp-name").split("_")[2]
        assert teacher_of(row) == (f"imagenet_teacher_{smoothing}", "imagenet", "resnet50")
    assert {(value(r, "--model"), value(r, "--temperature")) for _, r in students} == \
        {(m, t) for m in ("resnet18", "resnet50") for t in ("1", "2", "3", "64")}
    # TORCHVISION_TEACHER=1: torchvision's ResNet-50 V1 is the label-smoothing-0 teacher, not trained here
    teachers = rows_of("scripts/imagenet/teachers.sh", TORCHVISION_TEACHER="1")
    assert [value(row, "--label-smoothing") for _, row in teachers] == ["0.1"]
    for _, row in rows_of("scripts/imagenet/students.sh", TORCHVISION_TEACHER="1"):
        if "_ls0.0_" in value(row, "--exp-name"):
            assert value(row, "--teacher-model") == "resnet50" and row["--teacher-pretrained"] == [] and "--teacher" not in row
        else:
            assert teacher_of(row) == ("imagenet_teacher_ls0.1", "imagenet", "resnet50")


def test_dry_run_seed000_cub_settings():
    teachers = rows_of("scripts/cub/teachers.sh", IMAGENET_OUT_DIR="/runs/imagenet")
    for script, row in teachers:
        assert script == "train_teacher.py" and "--pretrained" not in row
        assert_recipe(row, model="resnet50", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4,
                      lr_schedule="step", lr_step=30, gamma=0.1, epochs=90, batch_size=256, warmup_epochs=0,
                      augment="cub")
        # from the seed's own ImageNet teacher with the same label smoothing
        smoothing = value(row, "--label-smoothing")
        assert value(row, "--init-from") == f"/runs/imagenet/imagenet_teacher_ls{smoothing}__imagenet__resnet50__seed0__*/best.pt"
    assert sorted(value(row, "--label-smoothing") for _, row in teachers) == ["0.0", "0.1"]
    for _, row in rows_of("scripts/cub/teachers.sh", TORCHVISION_TEACHER="1"):
        if value(row, "--label-smoothing") == "0.0":
            assert row["--pretrained"] == [] and "--init-from" not in row
        else:
            assert "--pretrained" not in row and "imagenet_teacher_ls0.1__" in value(row, "--init-from")
    students = rows_of("scripts/cub/students.sh")
    for script, row in students:
        assert script == "kd_st.py" and row["--pretrained"] == []
        assert_recipe(row, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3, lr_schedule="step", lr_step=80,
                      gamma=0.1, epochs=200, batch_size=256, warmup_epochs=0, ce_weight=0, kd_weight=1, augment="cub")
        assert teacher_of(row)[1:] == ("cub200", "resnet50")
    assert {(value(r, "--model"), value(r, "--temperature"), teacher_of(r)[0]) for _, r in students} == \
        {(m, t, f"cub_teacher_ls{ls}") for m in ("resnet18", "resnet50", "mobilenet_v2") for t in ("1", "2", "3", "64")
         for ls in ("0.0", "0.1")}


def test_dry_run_seed003_mini_imagenet_settings():
    baselines = rows_of("scripts/mini_imagenet/baselines.sh")
    students = rows_of("scripts/mini_imagenet/kd.sh")
    for _, row in baselines + students:
        assert_recipe(row, dataset="mini-imagenet", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                      epochs=100, batch_size=64, amp="fp16", augment="standard")
        assert "--pretrained" not in row
    schedules = [(value(r, "--lr-schedule"), value(r, "--warmup-epochs")) for _, r in baselines
                 if value(r, "--model") == "shufflenet_v2_x1_0"]
    assert schedules == [("step", "0"), ("cosine", "0"), ("cosine", "1"), ("cosine", "3")]
    assert value(baselines[0][1], "--lr-step") == "30"
    for _, row in students:
        assert_recipe(row, lr_schedule="cosine", warmup_epochs=1)
        # alpha * T^2 * soft + (1 - alpha) * CE, 1 - alpha written out exactly
        alpha = value(row, "--kd-weight")
        assert value(row, "--ce-weight") == {"0.9": "0.1", "0.7": "0.3", "0.6": "0.4", "0.5": "0.5"}[alpha]
    cells = {(value(r, "--model"), teacher_of(r)[2], value(r, "--temperature"), value(r, "--kd-weight")) for _, r in students}
    assert cells == {("shufflenet_v2_x1_0", "shufflenet_v2_x2_0", t, a) for t, a in
                     (("1", "0.9"), ("3", "0.9"), ("5", "0.9"), ("10", "0.9"), ("3", "0.7"), ("3", "0.6"), ("3", "0.5"))} | \
        {("resnet18", "resnet50", "3", "0.6")}


SEED004_STUDENT_RECIPE = dict(optimizer="adam", lr=1e-4, weight_decay=0, lr_schedule="step", gamma=1.0,
                              warmup_epochs=0, batch_size=64, augment="fastai", amp="none")
STAGEWISE = dict(stage_epochs=100, classifier_epochs=100, frozen_bn="train", phase_start="best")


def assert_seed004_data(row):
    dataset = value(row, "--dataset")
    if dataset == "cifar10":
        assert "--image-size" not in row and "--val-resize" not in row  # CIFAR-10 at its own 32x32
    else:  # version 1, short side to 224 then crop, for train and val
        assert_recipe(row, data_dir=f"data/{dataset}", image_size=224, val_resize=224)


def assert_seed004_student(script, row):
    assert_seed004_data(row)
    assert_recipe(row, **SEED004_STUDENT_RECIPE)
    if script == "train_teacher.py":
        assert_recipe(row, epochs=100)
    elif "--simultaneous" in row:
        assert_recipe(row, epochs=100)
        assert teacher_of(row)[2] == "fastai_resnet34"
    else:  # 5 feature phases + the classifier, 100 epochs each; the length follows from them
        assert script == "kd_stagewise.py" and "--epochs" not in row
        assert_recipe(row, **STAGEWISE)
        assert teacher_of(row)[2] == "fastai_resnet34"


def test_dry_run_seed004_stagewise_settings():
    teachers = rows_of("scripts/stagewise/teachers.sh", DATA_DIR="data")
    assert [value(r, "--dataset") for _, r in teachers] == ["imagenette", "imagewoof", "cifar10"]
    for _, row in teachers:  # fastai's fit_one_cycle(50, max_lr) with AdamW, wd 1e-2
        assert_seed004_data(row)
        assert row["--pretrained"] == []
        assert_recipe(row, model="fastai_resnet34", optimizer="adamw", weight_decay=1e-2, lr_schedule="cosine",
                      warmup_epochs=15, epochs=50, batch_size=64, augment="fastai",
                      lr={"imagewoof": 5e-4}.get(value(row, "--dataset"), 1e-4))
    students = rows_of("scripts/stagewise/students.sh", DATA_DIR="data")
    for script, row in students:
        assert_seed004_student(script, row)
    kinds = {}
    for script, row in students:
        kind = "baseline" if script == "train_teacher.py" else "simultaneous" if "--simultaneous" in row else "stagewise"
        kinds.setdefault((kind, value(row, "--train-fraction")), set()).add((value(row, "--dataset"), value(row, "--model")))
    every = {(d, m) for d in ("imagenette", "imagewoof", "cifar10")
             for m in ("sw_resnet10", "sw_resnet14", "sw_resnet18", "sw_resnet20", "sw_resnet26")}
    assert kinds == {(k, f): every for k, f in [("baseline", "1.0"), ("simultaneous", "1.0"), ("stagewise", "1.0"),
                                                ("baseline", "0.25"), ("stagewise", "0.25")]}
    version2 = rows_of("scripts/stagewise/teachers.sh", DATA_DIR="data", DATA_VERSION="2")
    assert [value(r, "--data-dir") for _, r in version2] == ["data/imagenette2", "data/imagewoof2", "data"]


def test_dry_run_seed004_archived_settings():
    rows = rows_of("scripts/stagewise/archived.sh", DATA_DIR="data")
    trained, evaluated = [], []
    for script, row in rows:
        assert value(row, "--dataset") == "imagenette"
        (evaluated if "--evaluate" in row else trained).append((script, row))
    kinds = {}
    for script, row in trained:
        assert_seed004_student(script, row)
        kind = "baseline" if script == "train_teacher.py" else "simultaneous" if "--simultaneous" in row else "stagewise"
        key = (value(row, "--model"), kind, value(row, "--train-fraction"), row.get("--feature-maps", ["all"])[0])
        kinds[key] = kinds.get(key, 0) + 1
    five, once = 5, 1
    assert kinds == {("sw_medium", "baseline", "1.0", "all"): five, ("sw_medium", "stagewise", "1.0", "all"): five,
                     ("sw_medium", "simultaneous", "1.0", "5"): five, ("sw_medium", "simultaneous", "1.0", "4"): five,
                     ("sw_medium", "simultaneous", "1.0", "3"): five,
                     ("sw_small", "baseline", "1.0", "all"): five, ("sw_small", "stagewise", "1.0", "all"): five,
                     ("sw_small", "simultaneous", "1.0", "4"): five, ("sw_small", "simultaneous", "1.0", "3"): five,
                     ("sw_plain5", "baseline", "1.0", "all"): five, ("sw_plain5", "simultaneous", "1.0", "5"): five,
                     ("sw_smallest", "stagewise", "1.0", "all"): once,
                     ("sw_medium", "stagewise", "0.25", "all"): once, ("sw_medium", "baseline", "0.25", "all"): once}
    # the quarter-data runs select their best epoch on the validation set; that checkpoint is then
    # evaluated on the held-out 3/4 of the training images (the tables' "test acc")
    quarter_runs = {value(r, "--exp-name") for _, r in trained if value(r, "--train-fraction") == "0.25"}
    assert all("--eval-on" not in row for _, row in trained)
    assert len(evaluated) == 2
    for script, row in evaluated:
        assert script == "train_teacher.py" and row["--evaluate"] == []
        assert_recipe(row, eval_on="heldout", train_fraction=0.25, model="sw_medium")
        exp, dataset, model, seed = Path(value(row, "--resume")).parent.name.split("__")[:4]
        assert exp in quarter_runs and (dataset, model, seed) == ("imagenette", "sw_medium", "seed0")
    assert {Path(value(r, "--resume")).parent.name.split("__")[0] for _, r in evaluated} == quarter_runs


def test_dry_run_dkd_settings_of_mdistiller():
    """DKD rows carry mdistiller's configs: on CIFAR-100 CE 1, alpha 1, T 4, 20 warm-up epochs and beta by
    pair (configs/cifar100/dkd/*.yaml), on ImageNet ResNet-34 -> ResNet-18 beta 0.5, T 1, no warm-up."""
    cifar = [(script, row) for script, row in rows_of("scripts/cifar100_benchmark/students.sh") if script == "kd_dkd.py"]
    assert len(cifar) == 4 * 3
    betas = {}
    for _, row in cifar:
        assert_recipe(row, ce_weight=1, tckd_weight=1, temperature=4, dkd_warmup_epochs=20, epochs=240, lr=0.05,
                      exp_name="c100b_dkd")
        betas[(teacher_of(row)[2], value(row, "--model"))] = value(row, "--nckd-weight")
    assert betas == {("resnet56", "resnet20"): "2", ("resnet110", "resnet32"): "2", ("resnet32x4", "resnet8x4"): "8",
                     ("wrn_40_2", "wrn_16_2"): "6"}
    (imagenet,) = [row for script, row in rows_of("scripts/imagenet/resnet34_resnet18.sh") if script == "kd_dkd.py"]
    assert_recipe(imagenet, ce_weight=1, tckd_weight=1, nckd_weight=0.5, temperature=1, dkd_warmup_epochs=1, epochs=100,
                  teacher_model="resnet34", model="resnet18")


def test_dry_run_fitnet_crd_reviewkd_settings_of_their_authors():
    """FitNet as RepDistiller's --distill hint (CE 1 + 100 * hint at stage 2, joint); CRD as its --distill crd
    (CE 1, CRD 0.8, 128-d, 16384 negatives, T 0.07, momentum 0.5); ReviewKD as the authors' reviewKD.sh
    (weight by pair, 20 warm-up epochs) and, on ImageNet, weight 1 without warm-up."""
    rows = rows_of("scripts/cifar100_benchmark/students.sh")
    crd = dict(ce_weight=1, crd_weight=0.8, feat_dim=128, nce_k=16384, nce_temperature=0.07, nce_momentum=0.5)
    for script, row in rows:
        if script == "kd_fitnet.py":
            assert_recipe(row, ce_weight=1, hint_weight=100, hint_stage=2, hint_epochs=0, kd_weight=0, epochs=240)
        if script == "kd_crd.py":
            assert_recipe(row, **crd, epochs=240, lr=0.05)
    weights = {(teacher_of(row)[2], value(row, "--model")): value(row, "--reviewkd-weight")
               for script, row in rows if script == "kd_reviewkd.py"}
    assert weights == {("resnet56", "resnet20"): "0.6", ("resnet110", "resnet32"): "1", ("resnet32x4", "resnet8x4"): "5",
                       ("wrn_40_2", "wrn_16_2"): "5"}
    imagenet = dict(rows_of("scripts/imagenet/resnet34_resnet18.sh")[-2:])
    assert_recipe(imagenet["kd_crd.py"], **crd, epochs=100, teacher_model="resnet34")
    assert_recipe(imagenet["kd_reviewkd.py"], ce_weight=1, reviewkd_weight=1, reviewkd_warmup_epochs=0, epochs=100)


# ---------------------------------------------------------------- launchers and report agree
def _method(script, args):
    """The method a script records in results.json."""
    if script == "kd_at.py":
        return "at_st" if args.kd_weight > 0 else "at"
    if script == "kd_stagewise.py":
        return "simultaneous" if args.simultaneous else "stagewise"
    return {"train_teacher.py": "baseline", "kd_st.py": "st", "kd_logit.py": "logit", "kd_fsp.py": "fsp",
            "kd_dkd.py": "dkd", "kd_fitnet.py": "fitnet", "kd_crd.py": "crd", "kd_reviewkd.py": "reviewkd"}[script]


@pytest.mark.parametrize("directory", SMOKE)
def test_dry_run_rows_parse_into_groups_with_published_numbers(directory, tmp_path):
    """Every training row of every table, parsed by its script and summarised by scripts/report.py as
    if it had run, finds the published number of its cell: the launchers' flags and the report's
    reference keys describe the same experiments."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    launchers = [f"scripts/{directory}/{launcher}" for launcher in SMOKE[directory][0]]
    if directory == "cub":  # its teachers start from the ImageNet teachers
        launchers.insert(0, "scripts/imagenet/teachers.sh")
    runs = []
    for launcher in launchers:
        for command in dry_run(launcher, IMAGENET_OUT_DIR="/runs/x"):
            script, argv = command[3], command[4:]
            args = importlib.import_module(script.removesuffix(".py")).parse_args(argv)
            if not args.evaluate:  # an evaluation row writes no run
                runs.append((script, args))
    run_dirs = [tmp_path / f"{args.exp_name}__{args.dataset}__{args.model}__seed{args.seed}__{i}"
                for i, (_, args) in enumerate(runs)]  # the run directories the rows would write
    for run, (_, args) in zip(run_dirs, runs):
        run.mkdir()
        (run / "args.json").write_text(json.dumps(vars(args)))
    for run, (script, args) in zip(run_dirs, runs):
        for name in ("teacher", "init_from"):  # a pattern of another row: one of the directories above
            pattern = getattr(args, name, None)
            if pattern:
                matches = sorted(tmp_path.glob(str(Path(pattern).parent.relative_to("/runs/x"))))
                assert matches, pattern
                setattr(args, name, str(matches[0] / "best.pt"))
        teacher = Path(args.teacher).parent.name.split("__")[2] if getattr(args, "teacher", None) \
            else getattr(args, "teacher_model", None)
        (run / "args.json").write_text(json.dumps(vars(args)))
        (run / "results.json").write_text(json.dumps({"top1": 50.0, "top5": 80.0, "best_top1": 60.0, "best_epoch": 1,
                                                      "dataset": args.dataset, "model": args.model, "teacher": teacher,
                                                      "method": _method(script, args)}))
    groups = report.group_runs(report.load_runs(tmp_path))
    missing = [(g["dataset"], g["student"], g["method"], g["args"]) for g in groups
               if not report.reference_cells(g)["reference_top1"]]
    assert not missing, missing
    for g in groups:
        cells = report.reference_cells(g)
        if cells["reference_source"].startswith("seed"):  # every seed reports its best epoch
            assert cells["reference_epoch"] == "best epoch" and cells["reference_ours"] == "60.00", g
