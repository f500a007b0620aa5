"""The bad-input battery: user mistakes and broken runs against the real scripts' `main`, in-process.
Each must end in one line starting with "error:", exit code 2 and nothing overwritten; a resume
must continue only its own run; a diverged run must stop and keep its last finite checkpoint."""
import importlib
import json
import math
import os

import pytest
import torch

from conftest import only_run, run_dirs

SCRIPTS = ["train_teacher", "kd_st", "kd_logit", "kd_at", "kd_fsp", "kd_stagewise"]
TINY = ["--model", "resnet8", "--batch-size", "128", "--threads", "1", "--log-interval", "2"]


def call_main(script, argv):
    """The exit code of `script.main(argv)`, run in this process."""
    module = importlib.import_module(script)
    try:
        module.main(module.parse_args([str(a) for a in argv]))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code


def teacher_flag(script, tmp_path):
    """A teacher path for the KD scripts; the flag checks come before it is read."""
    return [] if script == "train_teacher" else ["--teacher", tmp_path / "never_read.pt"]


def assert_one_line_error(capsys, code, *words):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (code, captured.err[-2000:])
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in captured.err, captured.err[-2000:]
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]


SHARED_FLAGS = [("--epochs", "0"), ("--epochs", "-3"), ("--max-steps", "-1"), ("--train-fraction", "0"),
                ("--train-fraction", "1.5"), ("--train-fraction", "-0.5"), ("--batch-size", "0"), ("--lr", "-0.1"),
                ("--lr", "nan"), ("--lr", "inf"), ("--label-smoothing", "2"), ("--workers", "-1"),
                ("--momentum", "1.5"), ("--weight-decay", "-1"), ("--warmup-epochs", "-1"), ("--image-size", "0"),
                ("--threads", "-1"), ("--log-interval", "0")]
METHOD_FLAGS = {
    "kd_st": [("--temperature", "0"), ("--temperature", "-1"), ("--ce-weight", "-1"), ("--kd-weight", "nan")],
    "kd_logit": [("--ce-weight", "-1"), ("--kd-weight", "-0.5")],
    "kd_at": [("--at-weight", "-1"), ("--at-p", "0"), ("--temperature", "0"), ("--kd-weight", "-1")],
    "kd_fsp": [("--fsp-weight", "-1"), ("--fsp-epochs", "-1"), ("--fsp-lr", "-1"), ("--ce-weight", "-1")],
    "kd_stagewise": [("--stage-epochs", "0"), ("--classifier-epochs", "-1"), ("--feature-maps", "-2")],
}
CASES = [(script, flag, value) for script in SCRIPTS for flag, value in SHARED_FLAGS] + \
        [(script, flag, value) for script, flags in METHOD_FLAGS.items() for flag, value in flags]


@pytest.mark.parametrize("script,flag,value", CASES)
def test_out_of_range_flag_is_one_line(script, flag, value, tmp_path, capsys):
    code = call_main(script, [*TINY, flag, value, "--out-dir", tmp_path, *teacher_flag(script, tmp_path)])
    assert_one_line_error(capsys, code, flag)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("script", SCRIPTS)
def test_out_dir_that_is_a_file(script, tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    code = call_main(script, [*TINY, "--out-dir", tmp_path / "file" / "runs", *teacher_flag(script, tmp_path)])
    assert_one_line_error(capsys, code, "--out-dir")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_dir_read_only(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert_one_line_error(capsys, call_main("train_teacher", [*TINY, "--out-dir", tmp_path / "ro"]), "--out-dir")


@pytest.fixture(scope="module")
def kd_st_run(tmp_path_factory, make_teacher):
    """A finished 2-epoch kd_st run: (teacher path, out dir, run dir)."""
    teacher = make_teacher("resnet14")
    out = tmp_path_factory.mktemp("kd_st_run")
    assert call_main("kd_st", [*TINY, "--epochs", "2", "--teacher", teacher, "--out-dir", out]) == 0
    return teacher, out, only_run(out)[0]


def _snapshot(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("events")}


@pytest.mark.parametrize("change", [["--seed", "1"], ["--temperature", "2"], ["--train-fraction", "0.5"]])
def test_resume_auto_never_continues_a_run_of_other_settings(kd_st_run, change, capsys):
    teacher, out, run_dir = kd_st_run
    before = _snapshot(run_dir)
    code = call_main("kd_st", [*TINY, "--epochs", "2", "--teacher", teacher, "--out-dir", out, "--resume", "auto",
                               *change, "--max-steps", "1"])
    assert code == 0
    assert _snapshot(run_dir) == before  # the old run's record is untouched
    fresh = [d for d in run_dirs(out) if d != run_dir]
    key = change[0][2:].replace("-", "_")
    assert len(fresh) == 1  # a new run, with the new setting
    assert json.loads((fresh[0] / "args.json").read_text())[key] != json.loads((run_dir / "args.json").read_text())[key]
    for path in fresh:  # leave the module fixture as it was
        for f in sorted(path.iterdir()):
            f.unlink()
        path.rmdir()


def test_resume_path_of_other_settings_or_method_or_best_is_refused(kd_st_run, capsys):
    teacher, out, run_dir = kd_st_run
    before = _snapshot(run_dir)
    base = [*TINY, "--epochs", "3", "--teacher", teacher, "--out-dir", out]
    line = assert_one_line_error(capsys, call_main("kd_st", [*base, "--resume", run_dir / "last.pt", "--seed", "1"]),
                                 "--seed 0 (now 1)")
    assert "other settings" in line
    assert_one_line_error(capsys, call_main("train_teacher", [*TINY, "--epochs", "3", "--out-dir", out, "--resume",
                                                              run_dir / "last.pt"]), "not a baseline run")
    assert_one_line_error(capsys, call_main("kd_st", [*base, "--resume", run_dir / "best.pt"]), "last.pt", "--init-from")
    assert _snapshot(run_dir) == before


def test_resuming_a_finished_run_keeps_its_results(kd_st_run, capsys):
    teacher, out, run_dir = kd_st_run
    before = _snapshot(run_dir)
    assert call_main("kd_st", [*TINY, "--epochs", "2", "--teacher", teacher, "--out-dir", out, "--resume", "auto"]) == 0
    after = _snapshot(run_dir)
    assert after["results.json"] == before["results.json"] and after["args.json"] == before["args.json"]
    assert json.loads(after["results.json"])["images_per_sec"] > 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("FINAL top1=")


def test_truncated_metrics_line_and_stale_temporaries_do_not_block_resume(make_teacher, tmp_path, capsys):
    teacher = make_teacher("resnet14")
    base = [*TINY, "--teacher", teacher, "--out-dir", tmp_path, "--epochs", "2"]
    assert call_main("kd_st", [*base, "--max-steps", "11"]) == 0
    run_dir = only_run(tmp_path)[0]
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 1')  # a kill in the middle of a write
    (run_dir / "last.pt.tmp12345").write_bytes(b"half a checkpoint")
    assert call_main("kd_st", [*base, "--resume", "auto"]) == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not list(run_dir.glob("*.tmp*"))


@pytest.mark.parametrize("lr", ["1e6", "1e30"])
def test_diverged_run_stops_and_keeps_no_non_finite_weights(lr, tmp_path, capsys):
    code = call_main("train_teacher", [*TINY, "--epochs", "3", "--lr", lr, "--warmup-epochs", "0",
                                       "--out-dir", tmp_path])
    assert_one_line_error(capsys, code, "not finite", "step")
    for run_dir in run_dirs(tmp_path):
        assert not (run_dir / "results.json").exists()  # a diverged run does not report results
        for name in ("best.pt", "last.pt"):
            if (run_dir / name).exists():
                weights = torch.load(run_dir / name, weights_only=False)["model"]
                assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), name


def test_non_finite_teacher_is_refused(make_teacher, tmp_path, capsys):
    checkpoint = torch.load(make_teacher("resnet14"), weights_only=False)
    checkpoint["model"]["fc.weight"][0, 0] = math.nan
    torch.save(checkpoint, tmp_path / "nan_teacher.pt")
    code = call_main("kd_st", [*TINY, "--teacher", tmp_path / "nan_teacher.pt", "--out-dir", tmp_path / "runs"])
    assert_one_line_error(capsys, code, "non-finite")
    assert not (tmp_path / "runs").exists()
