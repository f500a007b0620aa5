"""kd_fsp.py: FSP matrices and loss against values worked out by hand, the channel check, gradients
that reach only the student, the trainable module, flag ranges, and end-to-end runs on digits (joint,
two-stage, resume across stages)."""
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import (QUICK, assert_run_outputs, assert_user_error, feature_kd_step, only_run,
                      resume_at_phase_boundary, run_script, tensorboard_tags)
from common import UserError
from common.models import create_model, stage_shapes
from kd_fsp import Trainable, check_channels, fsp_loss, fsp_matrix, main, parse_args, pool_to

# one image, 1x2 positions: F_in has channels [1, 2] and [3, 0], F_out has channels [4, 5] and [1, -1]
FEATURE_IN = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
FEATURE_OUT = torch.tensor([[[[4.0, 5.0]], [[1.0, -1.0]]]])
# G[i, j] = sum over positions of F_in[i] * F_out[j] / 2
G_BY_HAND = torch.tensor([[[(4 + 10) / 2, (1 - 2) / 2], [(12 + 0) / 2, (3 + 0) / 2]]])  # [[7, -0.5], [6, 1.5]]


def test_fsp_matrix_by_hand():
    assert torch.allclose(fsp_matrix(FEATURE_IN, FEATURE_OUT), G_BY_HAND)


def test_fsp_matrix_shape():
    assert fsp_matrix(torch.randn(3, 16, 8, 8), torch.randn(3, 32, 8, 8)).shape == (3, 16, 32)


def test_fsp_matrix_pools_the_larger_map():
    feature_in = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).view(1, 1, 2, 2)  # averages to 4
    assert fsp_matrix(feature_in, torch.full((1, 1, 1, 1), 2.0)).item() == pytest.approx(8.0)
    assert fsp_matrix(torch.full((1, 1, 1, 1), 2.0), feature_in).item() == pytest.approx(8.0)
    # a stage that halves the resolution: (3, 16, 8, 8) -> (3, 32, 4, 4)
    assert fsp_matrix(torch.randn(3, 16, 8, 8), torch.randn(3, 32, 4, 4)).shape == (3, 16, 32)


@pytest.mark.parametrize("size, target", [((8, 8), (4, 4)), ((7, 9), (3, 4)), ((6, 6), (6, 6))])
def test_pool_to_equals_adaptive_pooling(size, target):
    """avg_pool2d by a whole factor, adaptive pooling otherwise: the same numbers and gradients."""
    features = torch.randn(2, 3, *size, requires_grad=True)
    reference = features.detach().clone().requires_grad_()
    pooled, expected = pool_to(features, target), torch.nn.functional.adaptive_avg_pool2d(reference, target)
    assert torch.allclose(pooled, expected, atol=1e-6)
    (pooled * torch.arange(pooled.numel()).view_as(pooled)).sum().backward()
    (expected * torch.arange(expected.numel()).view_as(expected)).sum().backward()
    assert torch.allclose(features.grad, reference.grad, atol=1e-6)


def test_fsp_loss_by_hand():
    zeros = (torch.zeros(1, 2, 1, 2), torch.zeros(1, 2, 1, 2))  # G = 0
    other = (torch.randn(1, 4, 4, 4), torch.randn(1, 8, 2, 2))
    # stage 1: mean of G_BY_HAND^2 = (49 + 0.25 + 36 + 2.25) / 4; stage 2 identical in both: 0
    loss = fsp_loss([(FEATURE_IN, FEATURE_OUT), other], [zeros, other])
    assert loss.item() == pytest.approx(87.5 / 4)


def test_seed_001_weighting_is_one_ninth_of_the_sum():
    # seed 001 (hankyul2/KnowledgeDistillation src/fsp.py): each pair's mse_loss / 3, then the mean over
    # its 3 pairs; the launcher's --fsp-weight 0.1111111111 gives the same loss
    torch.manual_seed(0)
    shapes = [(2, 16, 8, 8), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    student, teacher = [torch.randn(s) for s in shapes], [torch.randn(s) for s in shapes]
    student_pairs, teacher_pairs = list(zip(student[:-1], student[1:])), list(zip(teacher[:-1], teacher[1:]))
    seed_code = torch.stack([F.mse_loss(fsp_matrix(*s), fsp_matrix(*t)) / 3
                             for s, t in zip(student_pairs, teacher_pairs)]).mean()
    assert (0.1111111111 * fsp_loss(student_pairs, teacher_pairs)).item() == pytest.approx(seed_code.item(), rel=1e-6)


def test_identical_features_give_zero_loss():
    pairs = [(torch.randn(4, 16, 8, 8), torch.randn(4, 16, 8, 8)), (torch.randn(4, 16, 8, 8), torch.randn(4, 32, 4, 4))]
    assert fsp_loss(pairs, [(feature_in.clone(), feature_out.clone()) for feature_in, feature_out in pairs]).item() == 0.0

    def upsample(feature):
        return feature.repeat_interleave(2, 2).repeat_interleave(2, 3)
    # twice the resolution, same content: the (C_in, C_out) matrices do not change
    teacher_pairs = [(upsample(feature_in), upsample(feature_out)) for feature_in, feature_out in pairs]
    assert fsp_loss(pairs, teacher_pairs).item() == pytest.approx(0.0, abs=1e-6)


def test_channel_check():
    shapes = {name: stage_shapes(create_model(name, 10), name, (3, 8, 8)) for name in ("resnet20", "resnet56", "resnet8x4")}
    check_channels(shapes["resnet20"], shapes["resnet56"], "resnet20", "resnet56")  # 16 -> 16 -> 32 -> 64: fine
    with pytest.raises(UserError, match="stage 1 has 32 -> 64 in the student resnet8x4 but 16 -> 16 in the teacher"):
        check_channels(shapes["resnet8x4"], shapes["resnet56"], "resnet8x4", "resnet56")


def test_one_step_trains_the_student_only():
    student_model = feature_kd_step(lambda features, teacher_features: fsp_loss(
        list(zip(features[:-1], features[1:])), list(zip(teacher_features[:-1], teacher_features[1:]))), lr=0.01)
    assert student_model.conv1.weight.grad.abs().sum() > 0
    assert student_model.layer3[0].bn2.weight.grad.abs().sum() > 0  # the last layer of a block (its conv2 waits: zero-init gamma)
    assert student_model.fc.weight.grad is None  # FSP alone (two-stage, stage 1) leaves the classifier alone


def test_trainable_is_the_student_seen_through_its_stages():
    """Each weight once, under the student's own names; the forward runs the student's own layers."""
    model = create_model("resnet8", 10)
    trainable = Trainable(model, SimpleNamespace(model="resnet8"))
    assert trainable.state_dict().keys() == {f"student.{key}" for key in model.state_dict()}
    assert [id(p) for p in trainable.parameters()] == [id(p) for p in model.parameters()]
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # a change to the student is a change to what the trainable computes
        logits, features = trainable.eval()(torch.ones(1, 3, 32, 32))
        assert torch.equal(logits, model(torch.ones(1, 3, 32, 32))) and len(features) == 4


@pytest.mark.parametrize("flag,value,message", [("--fsp-weight", "-1", "--fsp-weight -1.0 must be 0 or more"),
                                                ("--fsp-epochs", "-1", "--fsp-epochs -1 must be 0 or more"),
                                                ("--fsp-lr", "-1", "--fsp-lr -1.0 must be 0 or more"),
                                                ("--ce-weight", "nan", "--ce-weight nan must be 0 or more")])
def test_method_flags_out_of_range_are_one_line(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(parse_args(["--teacher", "none.pt", "--out-dir", str(tmp_path / "runs"), flag, value]))
    captured = capsys.readouterr()
    assert_user_error(SimpleNamespace(returncode=exit_info.value.code, stdout=captured.out, stderr=captured.err),
                      message)
    assert exit_info.value.code == 2 and not (tmp_path / "runs").exists()


def test_joint_end_to_end(make_teacher, tmp_path):
    teacher = make_teacher("resnet14")
    result = run_script("kd_fsp.py", "--model", "resnet8", "--teacher", teacher, "--out-dir", tmp_path,
                        "--ce-weight", "0.8", "--fsp-weight", "0.5", *QUICK)
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, teacher, "fsp")
    epoch = metrics[0]
    assert epoch["phase"] == 0 and epoch["loss_fsp"] > 0 and "loss_kd" not in epoch
    assert epoch["train_loss"] == pytest.approx(0.8 * epoch["loss_ce"] + 0.5 * epoch["loss_fsp"], rel=1e-4)
    assert {"losses/ce", "losses/fsp", "losses/total", "charts/phase"} <= tensorboard_tags(run_dir)
    last = torch.load(run_dir / "last.pt", weights_only=False)
    assert last["method"] == "fsp" and last["phase"] == 0 and last["teacher_top1"] == results["teacher_top1"]
    # the trainable module is the student alone, each tensor once under its own name
    assert last["trainable"].keys() == {f"student.{key}" for key in last["model"]}


TWO_STAGE = ["--model", "resnet8", "--fsp-mode", "two-stage", "--fsp-epochs", "1", *QUICK]


@pytest.fixture(scope="module")
def two_stage_run(make_teacher, tmp_path_factory):
    """An uninterrupted two-stage run: 1 epoch of FSP alone, then 1 epoch of CE alone."""
    teacher, out = make_teacher("resnet14"), tmp_path_factory.mktemp("two_stage")
    return teacher, out, run_script("kd_fsp.py", *TWO_STAGE, "--teacher", teacher, "--out-dir", out)


def test_two_stage_end_to_end(two_stage_run):
    teacher, out, result = two_stage_run
    run_dir, results, metrics = assert_run_outputs(result, out, teacher, "fsp")
    assert results["epochs"] == 2 and [m["phase"] for m in metrics] == [1, 2]
    stage1, stage2 = metrics
    # each stage logs the one term it trains, unweighted
    assert stage1["loss_fsp"] > 0 and stage1["train_loss"] == stage1["loss_fsp"] and "loss_ce" not in stage1
    assert stage2["loss_ce"] > 0 and stage2["train_loss"] == stage2["loss_ce"] and "loss_fsp" not in stage2
    assert stage2["step"] == 2 * stage1["step"]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    phases = [(event.step, int(event.value)) for event in events.Scalars("charts/phase")]
    assert phases == [(stage1["step"], 1), (stage2["step"], 2)]  # at the global step, as every scalar
    assert [event.step for event in events.Scalars("losses/fsp")] == [5 * i for i in range(1, stage1["step"] // 5 + 1)]


def test_resume_across_the_stage_boundary(two_stage_run, tmp_path):
    teacher, out, _ = two_stage_run
    _, resumed, uninterrupted = resume_at_phase_boundary("kd_fsp.py", TWO_STAGE, teacher, out, tmp_path)
    for key, value in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    run_dir = only_run(tmp_path)[0]
    phases = [json.loads(line)["phase"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert phases == [1, 2]


def test_channel_mismatch_is_one_line_and_no_run(make_teacher, tmp_path):
    result = run_script("kd_fsp.py", "--model", "resnet8x4", "--teacher", make_teacher("resnet14"),
                        "--out-dir", tmp_path, *QUICK, check=False)
    assert_user_error(result, "FSP needs matching channels", "stage 1 has 32 -> 64", "16 -> 16")
    assert not any(tmp_path.iterdir())  # no run directory


def test_two_stage_under_torchrun(make_teacher, tmp_path):
    # stage 1 leaves the classifier without gradient: DDP must be told, or the second step fails
    teacher = make_teacher("resnet14")
    result = run_script("kd_fsp.py", *TWO_STAGE, "--teacher", teacher, "--out-dir", tmp_path,
                        "--max-steps", "24", nproc=2)  # 22 steps of stage 1, 2 of stage 2
    _, results, metrics = assert_run_outputs(result, tmp_path, teacher, "fsp")
    assert results["world_size"] == 2 and [(m["phase"], m["step"]) for m in metrics] == [(1, 22), (2, 24)]
