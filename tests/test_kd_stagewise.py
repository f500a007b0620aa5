"""kd_stagewise.py: the feature and simultaneous losses by hand, the pairing of maps, the stem/stage/head
partition, the phase schedule and what each phase trains (in-process, with frozen BatchNorm in eval or
train mode, and across real runs resumed at every phase boundary, one of them under torchrun), each
phase starting from the previous phase's best validation MSE, FitNets adapters in the trainable module,
--feature-maps, flag and shape errors, end-to-end runs on digits and seed 004's networks on fake data."""
import copy
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

import kd_stagewise
from conftest import assert_run_outputs, assert_user_error, only_run, run_script, tensorboard_tags
from common.models import STAGE_NODES, create_model, stage_modules, stage_shapes, with_stages
from kd_stagewise import (Trainable, freeze_all_but, main, pair_maps, parse_args, phase_at, phase_plan,
                          simultaneous_loss, stage_loss, trained_groups, val_stage_loss)

STEPS_PER_EPOCH = 5  # a quarter of digits: 359 training images // 64
# wrn_16_2 (stem 16, stage widths 32/64/128) learning resnet14's maps (16/16/32/64): stages 1-3 have adapters
PHASES = ["--model", "wrn_16_2", "--stage-epochs", "1", "--classifier-epochs", "2", "--train-fraction", "0.25",
          "--log-interval", "2"]
ADAPTERS = ["adapters.1.weight", "adapters.2.weight", "adapters.3.weight"]  # keys of the trainable module


def test_stage_loss_by_hand():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 1, 2, 2)
    assert stage_loss(student, teacher).item() == pytest.approx((0 + 4 + 9 + 4) / 4)
    assert stage_loss(student.bfloat16(), teacher.bfloat16()).dtype == torch.float32


def test_simultaneous_loss_by_hand():
    """(CE + MSE_0 + MSE_1) / 3, the seed's current code (its archived code scaled only the log)."""
    logits, labels = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    loss_ce = torch.nn.functional.cross_entropy(logits, labels)  # log 2
    stages = [stage_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)),  # 1
              stage_loss(torch.full((1, 2, 1, 1), 3.0), torch.ones(1, 2, 1, 1))]  # 4
    assert simultaneous_loss(loss_ce, stages).item() == pytest.approx((0.6931472 + 1 + 4) / 3)


def test_val_stage_loss_is_the_mean_over_all_images():
    """Batches of 3 and 1 images: the mean over every element, not the mean of the batch means."""
    batches = [(torch.full((3, 1, 2, 2), 2.0), None), (torch.full((1, 1, 2, 2), 4.0), None)]

    class Student(torch.nn.BatchNorm2d):  # in eval mode the identity (running mean 0, var 1); in train mode 0
        def forward(self, images, stage):
            assert stage == 2  # the map of the phase
            return super().forward(images)
    student = Student(1, eps=0.0, affine=False)
    teacher = lambda images: {"map": torch.zeros_like(images)}  # noqa: E731
    loss = val_stage_loss(student, 2, teacher, batches, torch.autocast("cpu", enabled=False), torch.device("cpu"),
                          torch.contiguous_format)
    assert not student.training and loss == pytest.approx((3 * 4 + 1 * 16) / 4)


@pytest.mark.parametrize("name", ["resnet20", "wrn_16_2", "resnet18", "mobilenet_v2", "shufflenet_v2_x0_5",
                                  "sw_resnet10", "fastai_resnet34", "sw_medium", "sw_smallest", "sw_plain5",
                                  "resnet20_7x7"])
def test_stage_modules_partition_matches_the_stage_outputs(name):
    """Perturbing group k changes stage output k but none before it; every parameter is in one group."""
    model = create_model(name, 10).eval()
    groups = stage_modules(model, name)
    assert len(groups) == len(STAGE_NODES[name]) + 1
    owned = [p for modules in groups for module in modules for p in module.parameters(recurse=False)]
    assert len(owned) == len({id(p) for p in owned}) == len(list(model.parameters()))
    stages, images = with_stages(model, name), torch.randn(1, 3, 32, 32)  # sw_plain5 halves it 5 times
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


@pytest.mark.parametrize("student,teacher,size,pairs", [
    ("sw_resnet18", "fastai_resnet34", 64, [0, 1, 2, 3, 4]),
    ("sw_small", "fastai_resnet34", 64, [0, 1, 2, 3]),  # seed 004: relu, layer1..3
    ("sw_smallest", "fastai_resnet34", 64, [0, 2, 3, 4]),  # seed 004: relu, layer2..4
    ("resnet20", "resnet56", 32, [0, 1, 2, 3]),  # stem and stage 1 share their size: in order
])
def test_maps_pair_by_size_in_order(student, teacher, size, pairs):
    shapes = {name: stage_shapes(create_model(name, 10), name, (3, size, size)) for name in (student, teacher)}
    assert pair_maps(student, shapes[student], teacher, shapes[teacher]) == pairs


def test_phase_schedule():
    args = SimpleNamespace(simultaneous=False, stage_epochs=2, classifier_epochs=3, epochs=11)
    plan = phase_plan(4, 3, args)  # stem and 3 stages
    assert [phase_at(plan, epoch)[0] for epoch in range(11)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    assert phase_at(plan, 9) == (4, 8, 3)  # classifier phase: starts at epoch 8, lasts 3
    assert [phase[0] for phase in phase_plan(2, 3, args)] == [0, 1, 4]  # --feature-maps 2
    args.simultaneous = True
    assert [phase_at(phase_plan(4, 3, args), epoch)[0] for epoch in range(11)] == [-1] * 11
    assert [trained_groups(k, 4, 3, False) for k in range(4)] == [[0], [1], [2], [3]]  # the stem alone first
    assert trained_groups(4, 4, 3, False) == [4]  # the head
    assert trained_groups(4, 2, 3, False) == [2, 3, 4]  # everything after the last map learnt
    assert trained_groups(4, 2, 3, True) == trained_groups(-1, 2, 3, False) == [0, 1, 2, 3, 4]


def group_keys(name):
    """state_dict keys of the stem, each stage and the head of `name`."""
    model = create_model(name, 10)
    names = {id(module): module_name for module_name, module in model.named_modules()}
    return [{f"{names[id(module)]}.{key}" for module in modules
             for key, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]}
            for modules in stage_modules(model, name)]


def changed(before, after, name="wrn_16_2", adapters=ADAPTERS):
    """Which groups (0 stem, 1..K stages, K + 1 head: weights or BatchNorm statistics) and adapters
    (by map) differ between two {"model": ..., "trainable": ...} states (checkpoints)."""
    groups = [index for index, keys in enumerate(group_keys(name))
              if any(not torch.equal(before["model"][key], after["model"][key]) for key in keys)]
    adapters = [int(key.split(".")[1]) for key in adapters
                if not torch.equal(before["trainable"][key], after["trainable"][key])]
    return groups, adapters


def state_of(trainable):
    return {"model": {key: value.clone() for key, value in trainable.student.state_dict().items()},
            "trainable": {key: value.clone() for key, value in trainable.state_dict().items()}}


def test_trainable_holds_each_weight_once():
    """The student under its own names and the adapters; the views of the student add nothing."""
    model = create_model("wrn_16_2", 10)
    shapes = stage_shapes(model, "wrn_16_2", (3, 16, 16))
    teacher_shapes = stage_shapes(create_model("resnet20", 10), "resnet20", (3, 16, 16))
    trainable = Trainable(model, SimpleNamespace(model="wrn_16_2"), shapes, teacher_shapes)
    assert trainable.state_dict().keys() == {f"student.{key}" for key in model.state_dict()} | set(ADAPTERS)
    assert len(list(trainable.parameters())) == len(list(model.parameters())) + len(ADAPTERS)


@pytest.mark.parametrize("frozen_bn", ["eval", "train"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3, 4])
def test_a_phase_trains_its_group_and_adapter_only(stage, frozen_bn):
    """wrn_16_2 learning resnet20's maps through 1x1 adapters. frozen_bn train (the seed): the frozen
    stages the phase runs through update their BatchNorm statistics (wrn_16_2's stem has none)."""
    torch.manual_seed(0)
    model = create_model("wrn_16_2", 10)
    shapes = stage_shapes(model, "wrn_16_2", (3, 16, 16))
    teacher_shapes = stage_shapes(create_model("resnet20", 10), "resnet20", (3, 16, 16))
    trainable = Trainable(model, SimpleNamespace(model="wrn_16_2"), shapes, teacher_shapes)
    assert [tuple(adapter.weight.shape) for adapter in trainable.adapters[1:]] == [(16, 32, 1, 1), (32, 64, 1, 1),
                                                                                   (64, 128, 1, 1)]
    params = freeze_all_but(stage_modules(model, "wrn_16_2"), trainable.adapters, trained_groups(stage, 4, 3, False),
                            stage, frozen_bn)
    before = state_of(trainable)
    optimizer = torch.optim.SGD(params, lr=0.1)
    for _ in range(2):
        images = torch.randn(8, 3, 16, 16)
        if stage == 4:
            loss = torch.nn.functional.cross_entropy(trainable(images, stage)[0], torch.arange(8))
        else:  # the student up to map k, through its adapter: the k-th output of the whole student
            feature = trainable(images, stage)
            assert feature.shape == (8, *teacher_shapes[stage])
            if frozen_bn == "eval":  # in train mode the whole student's forward would update later statistics
                with torch.no_grad():
                    assert torch.allclose(feature, trainable(images)[1][stage], atol=1e-5)
            loss = stage_loss(feature, torch.randn(8, *teacher_shapes[stage]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    groups = [stage] if frozen_bn == "eval" else sorted({*range(1, stage + 1), stage})
    assert changed(before, state_of(trainable)) == (groups, [stage] if 1 <= stage <= 3 else [])


# ---------------------------------------------------------------- real runs


def load(path):
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def phase_runs(make_teacher, tmp_path_factory):
    """Epochs 1-6 in phases stem, stage 1, 2, 3, classifier, classifier: once straight through, once
    stopped after epoch 2 (a phase boundary) and 5 (inside a phase) and resumed; the checkpoints
    of those stops and of the end."""
    teacher = make_teacher("resnet14")
    out = tmp_path_factory.mktemp("stagewise_phases")
    straight = run_script("kd_stagewise.py", *PHASES, "--teacher", teacher, "--out-dir", out / "straight")
    checkpoints = []
    for epoch in (2, 5, 6):
        resume = ["--resume", only_run(out / "chain")[0] / "last.pt"] if checkpoints else []
        run_script("kd_stagewise.py", *PHASES, "--teacher", teacher, "--out-dir", out / "chain",
                   "--max-steps", STEPS_PER_EPOCH * epoch if epoch < 6 else 0, *resume)
        checkpoints.append(shutil.copy(only_run(out / "chain")[0] / "last.pt", out / f"epoch{epoch}.pt"))
    return SimpleNamespace(teacher=teacher, out=out, straight=straight, checkpoints=checkpoints)


def test_stagewise_end_to_end(phase_runs):
    run_dir, results, metrics = assert_run_outputs(phase_runs.straight, phase_runs.out / "straight",
                                                   phase_runs.teacher, "stagewise", model="wrn_16_2")
    assert results["epochs"] == 6 and [m["stage"] for m in metrics] == [0, 1, 2, 3, 4, 4]
    for m in metrics:  # feature phases train the MSE only; the classifier phase CE only
        assert m["train_loss"] == (m["loss_stage"] if m["stage"] < 4 else m["loss_ce"])
        assert ("loss_stage" in m) == (m["stage"] < 4) and m.get("loss_stage", 1) > 0
        assert ("loss_ce" in m) == (m["stage"] == 4)  # a feature phase computes no logits
        assert (m["val_stage_loss"] is None) == (m["stage"] == 4) and (m["val_stage_loss"] or 1) > 0
    assert {"charts/stage", "losses/stage", "losses/ce", "losses/total", "losses/val_stage",
            "eval/top1"} <= tensorboard_tags(run_dir)
    last = load(run_dir / "last.pt")
    assert last["stage_best"] is None and last["stage"] == 4  # used up when the classifier phase began
    assert last["method"] == "stagewise" and last["teacher_top1"] == results["teacher_top1"]
    # the trainable module: the student and 1x1 convolutions from student to teacher width (the stems match)
    adapters = {key: value for key, value in last["trainable"].items() if not key.startswith("student.")}
    assert sorted(adapters) == ADAPTERS
    assert [adapters[key].shape for key in ADAPTERS] == [(16, 32, 1, 1), (32, 64, 1, 1), (64, 128, 1, 1)]
    assert all(torch.equal(value, last["trainable"][f"student.{key}"]) for key, value in last["model"].items())


def test_each_phase_trains_only_its_group_and_adapter(phase_runs):
    epoch2, epoch5, epoch6 = [load(path) for path in phase_runs.checkpoints]
    assert [epoch["stage"] for epoch in (epoch2, epoch5, epoch6)] == [1, 4, 4]
    # stages 2 and 3 with their adapters, then the head; the rest kept, BatchNorm statistics included
    assert changed(epoch2, epoch5) == ([2, 3, 4], [2, 3])
    assert changed(epoch5, epoch6) == ([4], [])  # inside the classifier phase: the head only


def test_resumed_at_every_phase_boundary_equals_straight_run(phase_runs):
    straight = load(only_run(phase_runs.out / "straight")[0] / "last.pt")
    chained = load(phase_runs.checkpoints[-1])
    for part in ("model", "trainable"):
        for key, value in straight[part].items():
            assert torch.equal(value, chained[part][key]), key
    assert straight["best_top1"] == chained["best_top1"] and straight["step"] == chained["step"]


def test_torchrun_crosses_a_phase_boundary_with_finetune_all(phase_runs, tmp_path):
    """A --finetune-all run stopped after stage 1, then resumed by two processes: stages 2 and 3, then
    the whole network fine-tuned (a new DDP per phase; the body moves only because of --finetune-all,
    as the single-process runs show)."""
    finetune = [*PHASES, "--teacher", phase_runs.teacher, "--out-dir", tmp_path, "--finetune-all"]
    run_script("kd_stagewise.py", *finetune, "--max-steps", 2 * STEPS_PER_EPOCH)
    run_dir, _ = only_run(tmp_path)
    before = load(run_dir / "last.pt")
    assert changed(load(phase_runs.checkpoints[0]), before) == ([], [])  # its feature phases are the stage-wise run's
    result = run_script("kd_stagewise.py", *finetune, "--resume", run_dir / "last.pt", nproc=2)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["world_size"] == 2 and results["epochs"] == 6 and result.stdout.count("FINAL") == 1
    assert [json.loads(line)["stage"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [
        0, 1, 2, 3, 4, 4]
    after = load(run_dir / "last.pt")
    assert changed(before, after) == ([0, 1, 2, 3, 4], [2, 3])
    create_model("wrn_16_2", 10).load_state_dict(after["model"])  # the plain student, as train_teacher.py saves it


def test_simultaneous_end_to_end(phase_runs, tmp_path):
    result = run_script("kd_stagewise.py", *PHASES, "--teacher", phase_runs.teacher, "--out-dir", tmp_path,
                        "--simultaneous", "--epochs", "1")
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, phase_runs.teacher, "simultaneous",
                                                   model="wrn_16_2")
    assert run_dir.name.startswith("kd_stagewise_simultaneous__")  # not the stage-wise runs' name
    assert results["epochs"] == 1 and metrics[0]["stage"] == -1 and metrics[0]["val_stage_loss"] is None
    # (CE + the 4 maps' MSE) / 5
    assert metrics[0]["train_loss"] == pytest.approx((metrics[0]["loss_ce"] + metrics[0]["loss_stage"]) / 5)
    assert metrics[0]["loss_stage"] > 0


# ---------------------------------------------------------------- in-process runs (no start-up cost)
def run_in_process(monkeypatch, tmp_path, argv, val_losses=None):
    """main(argv) in this process; returns the runs's metrics and the state of every epoch's last.pt
    (copied, as save_epoch writes it). `val_losses`: the validation MSE each feature epoch reports."""
    saved = []
    save = kd_stagewise.save_epoch

    def spy(run_dir, state, is_best):
        saved.append(copy.deepcopy({key: state[key] for key in ("model", "trainable", "stage_best", "epoch")}))
        save(run_dir, state, is_best)
    monkeypatch.setattr(kd_stagewise, "save_epoch", spy)
    if val_losses is not None:
        scripted = iter(val_losses)
        monkeypatch.setattr(kd_stagewise, "val_stage_loss", lambda *args: next(scripted))
    main(parse_args([*argv, "--out-dir", str(tmp_path)]))
    metrics = [json.loads(line) for line in (only_run(tmp_path)[0] / "metrics.jsonl").read_text().splitlines()]
    return metrics, saved


@pytest.mark.parametrize("phase_start", ["best", "last"])
def test_a_phase_starts_from_the_previous_phases_best_val_mse(make_teacher, monkeypatch, tmp_path, phase_start):
    """Stem phase of 3 epochs with validation MSE 3, 1, 2: stage 1's phase starts from epoch 2's
    weights (--phase-start best), or epoch 3's (last). The stem is frozen in stage 1's phase, with its
    BatchNorm in eval mode, so its state after epoch 4 is the state the phase started from."""
    argv = ["--teacher", str(make_teacher("resnet14")), "--model", "resnet8", "--train-fraction", "0.25",
            "--stage-epochs", "3", "--classifier-epochs", "1", "--feature-maps", "2", "--max-steps",
            str(4 * STEPS_PER_EPOCH), "--phase-start", phase_start]
    metrics, saved = run_in_process(monkeypatch, tmp_path, argv, val_losses=[3.0, 1.0, 2.0, 5.0])
    assert [m["val_stage_loss"] for m in metrics] == [3.0, 1.0, 2.0, 5.0] and [m["stage"] for m in metrics] == [0, 0, 0, 1]
    epoch2, epoch3, epoch4 = saved[1:4]
    stem = group_keys("resnet8")[0]
    assert any(not torch.equal(epoch2["model"][key], epoch3["model"][key]) for key in stem)  # epoch 3 moved the stem
    start = epoch2 if phase_start == "best" else epoch3
    assert all(torch.equal(start["model"][key], epoch4["model"][key]) for key in stem)
    if phase_start == "best":  # kept in last.pt, so a resumed run restores it too
        assert epoch3["stage_best"]["epoch"] == 2 and epoch3["stage_best"]["stage"] == 0
        assert all(torch.equal(value, epoch3["stage_best"]["trainable"][key]) for key, value in epoch2["trainable"].items())
        assert epoch4["stage_best"]["stage"] == 1  # the new phase tracks its own best
    else:
        assert all(state["stage_best"] is None for state in saved)


def test_feature_maps_limits_the_maps_learnt(make_teacher, monkeypatch, tmp_path):
    """--feature-maps 2 --simultaneous: (CE + MSE of the stem + MSE of stage 1) / 3."""
    argv = ["--teacher", str(make_teacher("resnet14")), "--model", "resnet8", "--train-fraction", "0.25",
            "--simultaneous", "--epochs", "1", "--feature-maps", "2"]
    metrics, saved = run_in_process(monkeypatch, tmp_path, argv)
    assert metrics[0]["train_loss"] == pytest.approx((metrics[0]["loss_ce"] + metrics[0]["loss_stage"]) / 3)
    assert [key for key in saved[0]["trainable"] if key.startswith("adapters.")] == []  # resnet8, resnet14: same widths


@pytest.mark.parametrize("student,teacher,extra,stages", [
    # the stem and map 1 learn the teacher's relu and layer2; the classifier phase trains stages 2, 3 and the head
    ("sw_smallest", "fastai_resnet34", ["--feature-maps", "2"], [0, 1, 4]),
    ("sw_resnet10", "sw_resnet34", ["--simultaneous", "--epochs", "1", "--frozen-bn", "train"], [-1]),
])
def test_seed_004_networks_run(monkeypatch, tmp_path, student, teacher, extra, stages):
    """Fake 32x32 images, 20 training images (one step of 16 an epoch)."""
    path = random_teacher(tmp_path / "teacher.pt", teacher)
    argv = ["--dataset", "fake", "--image-size", "32", "--num-classes", "10", "--train-fraction", "0.01",
            "--batch-size", "16", "--model", student, "--teacher", str(path), "--stage-epochs", "1",
            "--classifier-epochs", "1", *extra]
    metrics, saved = run_in_process(monkeypatch, tmp_path / "runs", argv)
    assert [m["stage"] for m in metrics] == stages
    assert all(m["loss_stage"] > 0 for m in metrics if m["stage"] != 4)
    if student == "sw_smallest":  # the groups after map 1 move in the classifier phase
        assert changed(saved[1], saved[2], student, adapters=[]) == ([2, 3, 4], [])


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
    ("shufflenet_v2_x0_5", ["map 0 of --model resnet8 is (16, 8, 8)", "teacher shufflenet_v2_x0_5 has no map"]),
    ("resnet18", ["map 0 of --model resnet8", "(64, 2, 2)"]),
])
def test_mismatched_feature_maps_are_a_user_error(tmp_path, capsys, teacher, words):
    result = run_main(["--model", "resnet8", "--teacher", str(random_teacher(tmp_path / "t.pt", teacher)),
                       "--out-dir", str(tmp_path / "runs")], capsys)
    assert_user_error(result, *words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra,words", [
    (["--epochs", "7"], ["4 feature maps x --stage-epochs 2 + --classifier-epochs 3 = 11 epochs", "--epochs 7"]),
    (["--feature-maps", "5"], ["--feature-maps 5", "resnet8 has 4"]),
    (["--feature-maps", "-1"], ["--feature-maps -1 must be 0 or more"]),
    (["--stage-epochs", "0"], ["--stage-epochs 0 must be above 0"]),
    (["--classifier-epochs", "-2"], ["--classifier-epochs -2 must be above 0"]),
    (["--simultaneous", "--epochs", "0"], ["--epochs 0 must be above 0"]),
])
def test_bad_schedules_are_user_errors(tmp_path, capsys, extra, words):
    result = run_main(["--model", "resnet8", "--teacher", str(random_teacher(tmp_path / "t.pt", "resnet14")),
                       "--stage-epochs", "2", "--classifier-epochs", "3", *extra,
                       "--out-dir", str(tmp_path / "runs")], capsys)
    assert_user_error(result, *words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("student,teacher", [(name, "fastai_resnet34") for name in (
    "sw_resnet10", "sw_resnet14", "sw_resnet18", "sw_resnet20", "sw_resnet26", "sw_medium", "sw_plain5")] + [
    ("resnet20", "resnet110"), ("resnet20_7x7", "resnet110_7x7")])
def test_seed_pairs_match_map_by_map_without_adapters(student, teacher):
    student_shapes = stage_shapes(create_model(student, 10), student, (3, 64, 64))
    teacher_shapes = stage_shapes(create_model(teacher, 10), teacher, (3, 64, 64))
    assert student_shapes == teacher_shapes  # one to one, every adapter the identity
    trainable = Trainable(create_model(student, 10), SimpleNamespace(model=student), student_shapes, teacher_shapes)
    assert len(trainable.adapters.state_dict()) == 0
