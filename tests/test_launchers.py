"""The launchers in scripts/*/: DRY_RUN prints one command per row of the seed's table and every row
parses with its script's own flags; SMOKE runs each command shape for 2 steps on CPU."""
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
    "scripts/cifar100_benchmark/students.sh": (4 * 4, 0, 3),  # pairs x (baseline, KD, AT, FSP)
    "scripts/imagenet/teachers.sh": (0, 2, 1),                # label smoothing 0.0 and 0.1
    "scripts/imagenet/students.sh": (2 * 3 * 4, 0, 1),        # teachers x students x T
    "scripts/imagenet/resnet34_resnet18.sh": (3, 0, 1),       # baseline, KD, AT
    "scripts/cub/teachers.sh": (0, 2, 1),
    "scripts/cub/students.sh": (2 * 3 * 4, 0, 1),
    "scripts/mini_imagenet/baselines.sh": (4 + 5, 0, 1),      # 4 schedules + 5 architectures
    "scripts/mini_imagenet/kd.sh": (7 + 1, 0, 1),             # the T x alpha cells + ResNet-50 -> ResNet-18
    "scripts/stagewise/teachers.sh": (0, 3, 1),
    "scripts/stagewise/students.sh": (3 * 5 * (3 + 2), 0, 1),  # data sets x students x (3 full + 2 quarter)
}
SOURCED_ONLY = {"recipe.sh"}  # settings shared by the launchers of one directory

# directory -> (its launchers in the order they must run, the methods of its smoke runs, the number of
# smoke runs: one per command shape (script + method flags), plus teachers made on demand)
SMOKE = {
    "cifar": (["methods.sh"], {"baseline", "logit", "st", "at", "at_st", "fsp"}, 6),
    "cifar100_benchmark": (["teachers.sh", "students.sh"], {"baseline", "st", "at", "fsp"}, 4),
    "imagenet": (["teachers.sh", "students.sh", "resnet34_resnet18.sh"], {"baseline", "st", "at"}, 3 + 1),  # + ResNet-34
    "cub": (["teachers.sh", "students.sh"], {"baseline", "st"}, 2),
    "mini_imagenet": (["baselines.sh", "kd.sh"], {"baseline", "st"}, 2 + 1),  # + the x2.0 teacher
    "stagewise": (["teachers.sh", "students.sh"], {"baseline", "simultaneous", "stagewise"}, 3),
}


def bash(script, **env):
    """Run a bash script (or `-c` command) with `env` on top of ours and the venv's torchrun first on PATH."""
    launcher_vars = ("SEEDS", "OUT_DIR", "NPROC", "DATA_DIR", "TEACHER_SEED", "TORCHRUN", "DRY_RUN", "SMOKE")
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


def test_teacher_lookup_takes_the_newest_run_and_fails_clearly(tmp_path):
    for name, mtime in (("t__cifar10__resnet20__seed0__1", 1000), ("t__cifar10__resnet20__seed0__2", 2000),
                        ("t__cifar10__resnet20__seed1__3", 3000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_text("")
        os.utime(tmp_path / name / "best.pt", (mtime, mtime))
    lookup = f'source scripts/lib.sh; OUT_DIR={tmp_path}; resolve_teacher "$(teacher_ckpt t cifar10 resnet20 {{}})"'
    found = bash(lookup.format(0))
    assert found.returncode == 0 and found.stdout.strip() == str(tmp_path / "t__cifar10__resnet20__seed0__2" / "best.pt")
    missing = bash(lookup.format(5))
    assert missing.returncode != 0 and "no teacher checkpoint matches" in missing.stderr


@pytest.mark.parametrize("directory", SMOKE)
def test_smoke_runs_each_command_shape(directory, tmp_path):
    launchers, methods, expected_runs = SMOKE[directory]
    for launcher in launchers:
        result = bash(f"scripts/{directory}/{launcher}", SMOKE="1", OUT_DIR=str(tmp_path))
        assert result.returncode == 0, f"{launcher}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = [json.loads((run / "results.json").read_text()) for run in runs if (run / "results.json").exists()]
    assert len(results) == len(runs), "a smoke run left no results.json"
    assert len(runs) == expected_runs, sorted(r.name for r in runs)
    assert {r["method"] for r in results} == methods
    for run in runs:
        args = json.loads((run / "args.json").read_text())
        assert args["device"] == "cpu" and args["dataset"] in ("digits", "fake") and args["epochs"] <= 6
