"""kd_stagewise.py: the stage loss by hand, the stem/stage/head partition, the phase schedule and
what each phase trains (in-process, and across real runs resumed at every phase boundary, one of
them under torchrun), FitNets adapters, shape errors, and end-to-end runs on digits."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from conftest import assert_run_outputs, assert_user_error, only_run, run_script, tensorboard_tags
from common.models import STAGE_NODES, create_model, stage_modules, stage_shapes, with_stages
from kd_stagewise import (StudentWithAdapters, freeze_all_but, main, parse_args, phase_at, phase_plan, phase_student,
                          stage_loss, trained_groups)

STEPS_PER_EPOCH = 5  # a quarter of digits: 359 training images // 64
# wrn_16_2 (stage widths 32/64/128) learning resnet14's stages (16/32/64): every stage has an adapter
PHASES = ["--model", "wrn_16_2", "--stage-epochs", "1", "--classifier-epochs", "2", "--train-fraction", "0.25",
          "--log-interval", "2"]
ADAPTERS = ["0.weight", "1.weight", "2.weight"]


def test_stage_loss_by_hand():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 1, 2, 2)
    assert stage_loss(student, teacher).item() == pytest.approx((0 + 4 + 9 + 4) / 4)
    assert stage_loss(student.bfloat16(), teacher.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("name", ["resnet20", "wrn_16_2", "resnet18", "mobilenet_v2", "shufflenet_v2_x0_5"])
def test_stage_modules_partition_matches_the_stage_outputs(name):
    """Perturbing group k changes stage output k but none before it; every parameter is in one group."""
    model = create_model(name, 10).eval()
    groups = stage_modules(model, name)
    assert len(groups) == len(STAGE_NODES[name]) + 1
    owned = [p for modules in groups for module in modules for p in module.parameters(recurse=False)]
    assert len(owned) == len({id(p) for p in owned}) == len(list(model.parameters()))
    stages, images = with_stages(model, name), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        logits, features = stages(images)
        outputs = features + [logits]
        for k, modules in enumerate(groups):
            saved = [p.clone() for module in modules for p in module.parameters(recurse=False)]
            for module in modules:
                for p in module.parameters(recurse=False):
                    p.add_(0.5)
            new_logits, new_features = stages(images)
            new_outputs = new_features + [new_logits]
            assert all(torch.equal(a, b) for a, b in zip(outputs[:k], new_outputs[:k])), (name, k)
            assert not torch.allclose(outputs[k], new_outputs[k]), (name, k)
            for p, old in zip((p for module in modules for p in module.parameters(recurse=False)), saved):
                p.copy_(old)


def test_phase_schedule():
    args = SimpleNamespace(simultaneous=False, stage_epochs=2, classifier_epochs=3, epochs=9)
    plan = phase_plan(3, args)
    assert [phase_at(plan, epoch)[0] for epoch in range(9)] == [1, 1, 2, 2, 3, 3, 4, 4, 4]
    assert phase_at(plan, 7) == (4, 6, 3)  # classifier phase: starts at epoch 6, lasts 3
    args.simultaneous = True
    assert [phase_at(phase_plan(3, args), epoch)[0] for epoch in range(9)] == [0] * 9
    assert trained_groups(1, 3, False) == [0, 1]  # the stem trains with stage 1
    assert trained_groups(2, 3, False) == [2] and trained_groups(4, 3, False) == [4]
    assert trained_groups(4, 3, True) == trained_groups(0, 3, False) == [0, 1, 2, 3, 4]


def group_keys(name):
    """state_dict keys of the stem, each stage and the head of `name`."""
    model = create_model(name, 10)
    names = {id(module): module_name for module_name, module in model.named_modules()}
    return [{f"{names[id(module)]}.{key}" for module in modules
             for key, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]}
            for modules in stage_modules(model, name)]


def changed(before, after):
    """Which wrn_16_2 groups (0 stem, 1-3 stages, 4 head: weights or BatchNorm statistics) and
    adapters (1-3) differ between two {"model": ..., "adapters": ...} states."""
    groups = [index for index, keys in enumerate(group_keys("wrn_16_2"))
              if any(not torch.equal(before["model"][key], after["model"][key]) for key in keys)]
    adapters = [index for index, key in enumerate(ADAPTERS, start=1)
                if not torch.equal(before["adapters"][key], after["adapters"][key])]
    return groups, adapters


def state_of(model, adapters):
    return {"model": {key: value.clone() for key, value in model.state_dict().items()},
            "adapters": {key: value.clone() for key, value in adapters.state_dict().items()}}


@pytest.mark.parametrize("stage,expected", [(1, [0, 1]), (2, [2]), (3, [3]), (4, [4])])
def test_a_phase_trains_its_stage_and_adapter_only(stage, expected):
    """wrn_16_2 (widths 32/64/128) learning resnet20's stages (16/16/32/64) through 1x1 adapters."""
    torch.manual_seed(0)
    model = create_model("wrn_16_2", 10)
    shapes = stage_shapes(model, "wrn_16_2", (3, 16, 16))
    teacher_shapes = stage_shapes(create_model("resnet20", 10), "resnet20", (3, 16, 16))
    student = StudentWithAdapters(model, "wrn_16_2", shapes, teacher_shapes)
    assert [adapter.weight.shape for adapter in student.adapters] == [(16, 32, 1, 1), (32, 64, 1, 1), (64, 128, 1, 1)]
    params = freeze_all_but(stage_modules(model, "wrn_16_2"), student.adapters, trained_groups(stage, 3, False), stage)
    before = state_of(model, student.adapters)
    optimizer = torch.optim.SGD(params, lr=0.1)
    phase_model = phase_student(student, model, "wrn_16_2", stage, 3)  # what the script trains in the phase
    assert (phase_model is student) == (stage == 4)
    for _ in range(2):
        images = torch.randn(8, 3, 16, 16)
        if stage == 4:
            loss = torch.nn.functional.cross_entropy(phase_model(images)[0], torch.arange(8))
        else:  # the student up to stage k, through its adapter: the k-th output of the whole student
            feature = phase_model(images)
            with torch.no_grad():
                assert torch.allclose(feature, student(images)[1][stage - 1], atol=1e-5)
            loss = stage_loss(feature, torch.randn(8, *teacher_shapes[stage]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert changed(before, state_of(model, student.adapters)) == (expected, [stage] if stage < 4 else [])


# ---------------------------------------------------------------- real runs


def load(path):
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def phase_runs(make_teacher, tmp_path_factory):
    """Epochs 1-5 in phases stage 1, 2, 3, classifier, classifier: once straight through, once
    stopped after epoch 2 (a phase boundary) and 4 (inside a phase) and resumed; the checkpoints
    of those stops and of the end."""
    teacher = make_teacher("resnet14")
    out = tmp_path_factory.mktemp("stagewise_phases")
    straight = run_script("kd_stagewise.py", *PHASES, "--teacher", teacher, "--out-dir", out / "straight")
    checkpoints = []
    for epoch in (2, 4, 5):
        resume = ["--resume", only_run(out / "chain")[0] / "last.pt"] if checkpoints else []
        run_script("kd_stagewise.py", *PHASES, "--teacher", teacher, "--out-dir", out / "chain",
                   "--max-steps", STEPS_PER_EPOCH * epoch if epoch < 5 else 0, *resume)
        checkpoints.append(shutil.copy(only_run(out / "chain")[0] / "last.pt", out / f"epoch{epoch}.pt"))
    return SimpleNamespace(teacher=teacher, out=out, straight=straight, checkpoints=checkpoints)


def test_stagewise_end_to_end(phase_runs):
    run_dir, results, metrics = assert_run_outputs(phase_runs.straight, phase_runs.out / "straight",
                                                   phase_runs.teacher, "stagewise", model="wrn_16_2")
    assert results["epochs"] == 5 and [m["stage"] for m in metrics] == [1, 2, 3, 4, 4]
    for m in metrics:  # stage phases train the MSE only; the classifier phase CE only
        assert m["train_loss"] == pytest.approx(m["loss_stage"] if m["stage"] < 4 else m["loss_ce"])
        assert (m["loss_stage"] > 0) == (m["stage"] < 4)
        assert (m["loss_ce"] is None) == (m["stage"] < 4)  # a stage phase computes no logits
    assert {"charts/stage", "losses/stage", "losses/ce", "losses/total", "eval/top1"} <= tensorboard_tags(run_dir)
    adapters = load(run_dir / "last.pt")["adapters"]  # 1x1 convolutions from student to teacher width
    assert [adapters[key].shape for key in ADAPTERS] == [(16, 32, 1, 1), (32, 64, 1, 1), (64, 128, 1, 1)]


def test_each_phase_trains_only_its_stage_and_adapter(phase_runs):
    epoch2, epoch4, epoch5 = [load(path) for path in phase_runs.checkpoints]
    assert [epoch["phase"][0] for epoch in (epoch2, epoch4, epoch5)] == [2, 4, 4]
    # stage 3 and its adapter, then the head; the rest kept, BatchNorm statistics included
    assert changed(epoch2, epoch4) == ([3, 4], [3])
    assert changed(epoch4, epoch5) == ([4], [])  # inside the classifier phase: the head only


def test_resumed_at_every_phase_boundary_equals_straight_run(phase_runs):
    straight = load(only_run(phase_runs.out / "straight")[0] / "last.pt")
    chained = load(phase_runs.checkpoints[-1])
    for part in ("model", "adapters"):
        for key, value in straight[part].items():
            assert torch.equal(value, chained[part][key]), key
    assert straight["best_top1"] == chained["best_top1"]


def test_torchrun_crosses_a_phase_boundary_with_finetune_all(phase_runs, tmp_path):
    """Two processes resume after stage 2: stage 3, then the whole network fine-tuned (a new DDP
    per phase; the body moves only because of --finetune-all, as the single-process runs show)."""
    shutil.copy(phase_runs.checkpoints[0], tmp_path / "last.pt")
    result = run_script("kd_stagewise.py", *PHASES, "--teacher", phase_runs.teacher, "--resume",
                        tmp_path / "last.pt", "--finetune-all", nproc=2)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 2 and results["epochs"] == 5 and result.stdout.count("FINAL") == 1
    assert [json.loads(line)["stage"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [3, 4, 4]
    after = load(tmp_path / "last.pt")
    assert changed(load(phase_runs.checkpoints[0]), after) == ([0, 1, 2, 3, 4], [3])
    create_model("wrn_16_2", 10).load_state_dict(after["model"])  # the plain student, as train_teacher.py saves it


def test_simultaneous_end_to_end(phase_runs, tmp_path):
    result = run_script("kd_stagewise.py", *PHASES, "--teacher", phase_runs.teacher, "--out-dir", tmp_path,
                        "--simultaneous", "--epochs", "1")
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, phase_runs.teacher, "simultaneous",
                                                   model="wrn_16_2")
    assert results["epochs"] == 1 and metrics[0]["stage"] == 0
    # CE plus every stage's MSE
    assert metrics[0]["train_loss"] == pytest.approx(metrics[0]["loss_ce"] + metrics[0]["loss_stage"])
    assert metrics[0]["loss_stage"] > 0


# ---------------------------------------------------------------- user errors (in-process: no start-up cost)
def run_main(argv, capsys):
    """main() as the command line runs it: the exit status and output, for assert_user_error."""
    with pytest.raises(SystemExit) as exit_info:
        main(parse_args(argv))
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=exit_info.value.code, stdout=captured.out, stderr=captured.err)


def random_teacher(path, name):
    torch.save({"model": create_model(name, 10).state_dict(), "model_name": name, "num_classes": 10}, path)
    return path


@pytest.mark.parametrize("teacher,words", [
    ("shufflenet_v2_x0_5", ["stage 1", "resnet8 outputs (16, 8, 8)", "shufflenet_v2_x0_5 (48, 1, 1)"]),
    ("resnet18", ["resnet8 has 3 stages", "resnet18 has 4"]),
])
def test_mismatched_feature_maps_are_a_user_error(tmp_path, capsys, teacher, words):
    result = run_main(["--model", "resnet8", "--teacher", str(random_teacher(tmp_path / "t.pt", teacher)),
                       "--out-dir", str(tmp_path / "runs")], capsys)
    assert_user_error(result, *words)
    assert not (tmp_path / "runs").exists()


def test_epochs_other_than_the_schedule_is_a_user_error(tmp_path, capsys):
    result = run_main(["--model", "resnet8", "--teacher", str(random_teacher(tmp_path / "t.pt", "resnet14")),
                       "--stage-epochs", "2", "--classifier-epochs", "3", "--epochs", "7",
                       "--out-dir", str(tmp_path / "runs")], capsys)
    assert_user_error(result, "3 stages x --stage-epochs 2 + --classifier-epochs 3 = 9 epochs", "--epochs 7")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("student,teacher", [(name, "resnet34") for name in (
    "resnet10", "resnet14_imagenet", "resnet18", "resnet20_imagenet", "resnet26")] + [("resnet20", "resnet110")])
def test_seed_pairs_match_stage_by_stage_without_adapters(student, teacher):
    student_shapes = stage_shapes(create_model(student, 10), student, (3, 64, 64))
    teacher_shapes = stage_shapes(create_model(teacher, 10), teacher, (3, 64, 64))
    assert student_shapes == teacher_shapes  # check_stages passes, every adapter is the identity
    adapters = StudentWithAdapters(create_model(student, 10), student, student_shapes, teacher_shapes).adapters
    assert len(adapters.state_dict()) == 0
