"""kd_at.py: attention maps and the AT loss against values worked out by hand, gradients that reach only
the student, and end-to-end runs on digits (AT, AT + soft targets, a 2-process torchrun)."""
import math

import pytest
import torch

from conftest import QUICK, assert_run_outputs, assert_user_error, feature_kd_step, run_script, tensorboard_tags
from kd_at import at_loss, attention_map

# one image, two channels, 2x2: |F|^2 is [[1, 0], [0, 4]] and [[1, 4], [0, 0]], their channel mean [[1, 2], [0, 2]]
FEATURE = torch.tensor([[[[1.0, 0.0], [0.0, -2.0]], [[-1.0, 2.0], [0.0, 0.0]]]])


def test_attention_map_by_hand():
    # p = 2: [1, 2, 0, 2] / ||[1, 2, 0, 2]|| = [1, 2, 0, 2] / 3
    assert torch.allclose(attention_map(FEATURE), torch.tensor([[1 / 3, 2 / 3, 0.0, 2 / 3]]))
    # p = 1: channel mean of |F| is [1, 1, 0, 1], norm sqrt(3)
    assert torch.allclose(attention_map(FEATURE, p=1), torch.tensor([[1.0, 1.0, 0.0, 1.0]]) / math.sqrt(3))


def test_at_loss_by_hand():
    teacher = torch.ones(1, 3, 2, 2)  # attention map [1/2, 1/2, 1/2, 1/2]
    squared = [(1 / 3 - 1 / 2) ** 2, (2 / 3 - 1 / 2) ** 2, (0 - 1 / 2) ** 2, (2 / 3 - 1 / 2) ** 2]  # 1/36, 1/36, 1/4, 1/36
    assert at_loss(FEATURE, teacher).item() == pytest.approx(sum(squared) / 4)  # code: mean = 1/12
    assert at_loss(FEATURE, teacher, mode="paper").item() == pytest.approx(math.sqrt(sum(squared)))  # paper: norm


def test_attention_map_shape_and_unit_rows():
    maps = attention_map(torch.randn(3, 5, 4, 6))
    assert maps.shape == (3, 24)
    assert torch.allclose(maps.norm(dim=1), torch.ones(3))
    assert at_loss(torch.randn(3, 5, 4, 6), torch.randn(3, 7, 4, 6)).shape == ()  # channel counts may differ


def test_identical_features_give_zero_loss():
    feature = torch.randn(4, 8, 4, 4)
    for mode in ("code", "paper"):
        assert at_loss(feature, feature.clone(), mode=mode).item() == pytest.approx(0.0, abs=1e-6)
    assert at_loss(feature, -feature).item() == pytest.approx(0.0, abs=1e-6)  # maps of |F|^p ignore the sign


def test_larger_feature_map_is_average_pooled_before_the_map():
    small = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    checker = torch.tensor([[-0.5, 0.5], [0.5, -0.5]]).repeat(2, 2)  # zero mean over every 2x2 block
    large = small.repeat_interleave(2, 2).repeat_interleave(2, 3) + checker
    # pooling the feature map gives exactly `small`; pooling |F|^2 instead would not
    assert at_loss(large, small).item() == pytest.approx(0.0, abs=1e-7)
    assert at_loss(small, large).item() == pytest.approx(0.0, abs=1e-7)
    assert at_loss(large, small.flip(3)).item() > 1e-3


def test_paper_mode_differs_only_in_the_distance():
    student, teacher = torch.randn(4, 8, 3, 5), torch.randn(4, 16, 3, 5)
    # summing instead of averaging over channels scales the map by C before normalising: same map
    assert torch.allclose(attention_map(student, mode="paper"), attention_map(student), atol=1e-6)
    # per image, code = ||d||^2 / (H*W) and paper = ||d||; the batch averages each
    per_image = torch.stack([at_loss(student[i:i + 1], teacher[i:i + 1]) for i in range(4)])
    assert at_loss(student, teacher).item() == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert at_loss(student, teacher, mode="paper").item() == pytest.approx((per_image * 15).sqrt().mean().item(), rel=1e-5)


def test_one_step_trains_the_student_only():
    student_model = feature_kd_step(lambda features, teacher_features: sum(  # the AT term alone
        at_loss(student_feature, teacher_feature) for student_feature, teacher_feature in zip(features[1:], teacher_features[1:])))
    assert student_model.conv1.weight.grad.abs().sum() > 0  # the AT term reaches the stem through every stage
    assert student_model.layer3[0].bn2.weight.grad.abs().sum() > 0  # the last layer of a block (its conv2 waits: zero-init gamma)
    assert student_model.fc.weight.grad is None  # the AT term does not touch the classifier


def test_attention_transfer_end_to_end(make_teacher, tmp_path):
    teacher = make_teacher("resnet14")
    result = run_script("kd_at.py", "--model", "resnet8", "--teacher", teacher, "--out-dir", tmp_path, *QUICK)
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, teacher, "at")
    assert metrics[0]["loss_at"] > 0
    # kd_weight = 0: the total is CE + 50 * AT (the default weight, for digits)
    assert metrics[0]["train_loss"] == pytest.approx(metrics[0]["loss_ce"] + 50 * metrics[0]["loss_at"], rel=1e-4)
    tags = tensorboard_tags(run_dir)
    assert {"losses/ce", "losses/at", "losses/total", "eval/top1"} <= tags and "losses/kd" not in tags

    evaluated = run_script("kd_at.py", "--model", "resnet8", "--teacher", teacher, "--evaluate",
                           "--resume", run_dir / "last.pt")
    assert evaluated.stdout.strip().splitlines()[-1].startswith(f"FINAL top1={results['top1']:.2f} ")


def test_attention_transfer_with_soft_targets(make_teacher, tmp_path):
    teacher = make_teacher("resnet14")
    result = run_script("kd_at.py", "--model", "resnet8", "--teacher", teacher, "--out-dir", tmp_path,
                        "--kd-weight", "0.9", "--temperature", "4", "--at-weight", "1000", *QUICK)  # seed 001's AT+ST
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, teacher, "at_st")
    assert run_dir.name.startswith("kd_at_st__")  # AT and AT+ST runs get different default names
    epoch = metrics[0]
    assert epoch["loss_kd"] > 0 and epoch["train_loss"] == pytest.approx(
        1.0 * epoch["loss_ce"] + 0.9 * epoch["loss_kd"] + 1000 * epoch["loss_at"], rel=1e-4)
    assert {"losses/ce", "losses/at", "losses/kd", "losses/total"} <= tensorboard_tags(run_dir)


def test_teacher_with_other_stage_count_is_a_user_error(make_teacher, tmp_path):
    result = run_script("kd_at.py", "--model", "sw_resnet10", "--teacher", make_teacher("resnet14"),
                        "--out-dir", tmp_path, *QUICK, check=False)
    assert_user_error(result, "sw_resnet10 has 4 stages", "resnet14 has 3")
    assert not any(tmp_path.iterdir())  # no run directory


def test_torchrun_two_processes(make_teacher, tmp_path):
    teacher = make_teacher("resnet14")
    result = run_script("kd_at.py", "--model", "resnet8", "--teacher", teacher, "--out-dir", tmp_path,
                        "--max-steps", "3", *QUICK, nproc=2)
    _, results, metrics = assert_run_outputs(result, tmp_path, teacher, "at")
    assert results["world_size"] == 2 and results["steps"] == 3 and metrics[0]["step"] == 3
