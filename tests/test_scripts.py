"""Every KD script's real `main`, run in-process for a few steps: the teacher comes out untouched,
every parameter of the script's trainable module is stepped, and a resumed run equals an
uninterrupted one. A script that leaves its teacher in train mode, builds its optimizer from the
student alone, or saves only part of what trains fails here."""
import importlib
import json

import pytest
import torch

from conftest import only_run, run_script

SCRIPTS = {  # script: flags for a short run of its method on digits
    "kd_st": [],
    "kd_dkd": [],
    "kd_logit": ["--target", "features"],
    "kd_at": ["--kd-weight", "0.9"],
    "kd_fsp": ["--fsp-mode", "two-stage", "--fsp-epochs", "1", "--fsp-lr", "0.05"],
    "kd_fitnet": [],
    "kd_crd": ["--nce-k", "64"],
    "kd_reviewkd": ["--reviewkd-warmup-epochs", "2"],
    "kd_stagewise": ["--stage-epochs", "1", "--classifier-epochs", "1", "--finetune-all"],
}
SHORT = ["--model", "resnet8", "--batch-size", "128", "--log-interval", "2", "--threads", "1"]


def _epochs(script):
    return [] if script == "kd_stagewise" else ["--epochs", "2"]


def run_main_in_process(script, monkeypatch, argv):
    """Runs `script.main(argv)` and returns (teacher before, teacher after, trainable, parameters before,
    the parameters that reached an optimizer)."""
    module = importlib.import_module(script)
    seen = {}
    load_teacher, build_optimizer, trainable_class = module.load_teacher, module.build_optimizer, module.Trainable

    def spy_teacher(*args, **kwargs):
        teacher, name = load_teacher(*args, **kwargs)
        seen["teacher"], seen["teacher_before"] = teacher, {k: v.clone() for k, v in teacher.state_dict().items()}
        return teacher, name

    def spy_optimizer(args, params):
        params = list(params)
        seen.setdefault("optimized", set()).update(id(p) for p in params)
        return build_optimizer(args, params)

    class SpyTrainable(trainable_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["trainable"] = self
            seen["before"] = {name: p.detach().clone() for name, p in self.named_parameters()}

    monkeypatch.setattr(module, "load_teacher", spy_teacher)
    monkeypatch.setattr(module, "build_optimizer", spy_optimizer)
    monkeypatch.setattr(module, "Trainable", SpyTrainable)
    module.main(module.parse_args(argv))
    return seen


@pytest.mark.parametrize("script", SCRIPTS)
def test_real_main_keeps_the_teacher_inert_and_steps_everything_that_trains(script, make_teacher, tmp_path, monkeypatch):
    teacher_path = make_teacher("resnet14")
    seen = run_main_in_process(script, monkeypatch, [*SHORT, *_epochs(script), *SCRIPTS[script], "--teacher",
                                                     str(teacher_path), "--out-dir", str(tmp_path)])
    teacher = seen["teacher"]
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():  # weights and BatchNorm running statistics
        assert torch.equal(value, seen["teacher_before"][key]), f"{script} changed the teacher's {key}"
    trainable = seen["trainable"]
    parameters = dict(trainable.named_parameters())
    assert parameters, script
    never_optimized = [name for name, p in parameters.items() if id(p) not in seen["optimized"]]
    assert not never_optimized, f"{script}: the optimizer never sees {never_optimized}"
    unmoved = [name for name, p in parameters.items() if torch.equal(p.detach(), seen["before"][name])]
    assert not unmoved, f"{script}: these parameters never moved: {unmoved}"
    # the checkpoint holds the whole trainable module for resume and the plain student for teachers
    run_dir, results = only_run(tmp_path)
    last = torch.load(run_dir / "last.pt", weights_only=False)
    assert last["trainable"].keys() == trainable.state_dict().keys()
    assert last["model"].keys() == trainable.student.state_dict().keys()
    assert last["method"] == results["method"] and last["teacher_top1"] == results["teacher_top1"]


@pytest.mark.parametrize("script", ["kd_st", "kd_logit", "kd_at", "kd_dkd", "kd_fitnet", "kd_crd", "kd_reviewkd"])
def test_killed_then_resumed_equals_uninterrupted(script, make_teacher, tmp_path):
    """kd_fsp, kd_stagewise and train_teacher have their own tests across their phases."""
    teacher_path = make_teacher("resnet14")
    common = [*SHORT, "--epochs", "3", *SCRIPTS[script], "--teacher", teacher_path]
    run_script(f"{script}.py", *common, "--out-dir", tmp_path / "straight")
    run_script(f"{script}.py", *common, "--out-dir", tmp_path / "split", "--max-steps", 1437 // 128)
    run_script(f"{script}.py", *common, "--out-dir", tmp_path / "split", "--resume", "auto")
    straight_dir, straight = only_run(tmp_path / "straight")
    split_dir, resumed = only_run(tmp_path / "split")
    assert (resumed["epochs"], resumed["top1"]) == (straight["epochs"], straight["top1"])
    last_straight = torch.load(straight_dir / "last.pt", weights_only=False)
    last_resumed = torch.load(split_dir / "last.pt", weights_only=False)
    for key, value in last_straight["trainable"].items():
        assert torch.equal(value, last_resumed["trainable"][key]), key
    for index, state in last_straight["optimizer"]["state"].items():  # SGD's momentum buffers too
        assert torch.equal(state["momentum_buffer"], last_resumed["optimizer"]["state"][index]["momentum_buffer"])
    # one record per epoch, the original flags kept, and what the resume changed written down
    assert [json.loads(line)["epoch"] for line in (split_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((split_dir / "args.json").read_text())["max_steps"] == 1437 // 128
    changed = json.loads((split_dir / "resumes.jsonl").read_text().splitlines()[-1])["changed"]
    assert changed["max_steps"] == [1437 // 128, 0] and changed["resume"] == [None, "auto"]


def test_tensorboard_resume_keeps_the_earlier_steps(make_teacher, tmp_path):
    """Step scalars and epoch scalars share the global step; a resume purges only what follows its checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    teacher_path = make_teacher("resnet14")
    common = [*SHORT, "--epochs", "2", "--teacher", teacher_path, "--out-dir", tmp_path]
    run_script("kd_st.py", *common, "--max-steps", 1437 // 128)
    run_script("kd_st.py", *common, "--resume", "auto")
    events = EventAccumulator(str(only_run(tmp_path)[0]))
    events.Reload()
    steps = [event.step for event in events.Scalars("losses/kd")]
    assert steps == list(range(2, 2 * (1437 // 128) + 1, 2))  # every log interval of both epochs, once each
    assert [event.step for event in events.Scalars("eval/top1")] == [1437 // 128, 2 * (1437 // 128)]


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_image_file_runs_resume_exactly(loader, image_folder, tmp_path):
    """Both file loaders draw each epoch's order and augmentation from (seed, epoch): resumed equals straight."""
    common = ["--dataset", "imagefolder", "--data-dir", image_folder, "--loader", loader, "--workers", "1",
              "--image-size", "32", "--val-resize", "36", "--model", "resnet8", "--batch-size", "8", "--epochs", "3",
              "--threads", "1"]
    run_script("train_teacher.py", *common, "--out-dir", tmp_path / "straight")
    run_script("train_teacher.py", *common, "--out-dir", tmp_path / "split", "--max-steps", "3")
    run_script("train_teacher.py", *common, "--out-dir", tmp_path / "split", "--resume", "auto")
    straight = torch.load(only_run(tmp_path / "straight")[0] / "last.pt", weights_only=False)["trainable"]
    resumed = torch.load(only_run(tmp_path / "split")[0] / "last.pt", weights_only=False)["trainable"]
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
