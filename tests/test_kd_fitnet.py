"""kd_fitnet.py (FitNets hints): the hint loss and the regressor against values worked out by hand and against
mdistiller's FitNet / ConvReg as its code computes them, what each phase trains, flag errors, and end-to-end
runs on digits (joint, two-stage with a resume across the stage boundary, 2-process torchrun)."""
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import (QUICK, assert_run_outputs, assert_user_error, only_run, resume_at_phase_boundary, run_dirs,
                      run_script, tensorboard_tags)
from common import UserError
from common.models import create_model, stage_shapes, with_stages
from kd_fitnet import Trainable, conv_regressor, hint_loss, main, parse_args

DIGITS = (3, 8, 8)  # the image shape of digits


def test_hint_loss_by_hand():
    # one image, 2 channels, 1x2 positions: differences 1, 0 | 2, -1 -> squares 1, 0, 4, 1 -> mean 6 / 4
    regressed = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    teacher = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]])
    assert hint_loss(regressed, teacher).item() == pytest.approx(1.5)
    # the paper's equation 3, 1/2 * ||T - r(S)||^2 summed, is 3.0 here: the code's mean is what is implemented
    assert hint_loss(regressed, teacher).item() != pytest.approx(0.5 * 6.0)
    doubled = hint_loss(torch.cat([regressed, regressed]), torch.cat([teacher, teacher]))
    assert doubled.item() == pytest.approx(1.5)  # averaged over the batch, not summed
    assert hint_loss(regressed.bfloat16(), teacher.bfloat16()).dtype == torch.float32


def test_regressor_by_hand():
    """Equal sizes: a 1x1 convolution with bias, BatchNorm, ReLU. Input channels [1, -2] at one position;
    output channel 0 = 2 * 1 + 1 * (-2) + 0.5 = 0.5, channel 1 = 1 - 2 + 0 = -1 -> ReLU 0; BatchNorm in eval
    with fresh statistics (mean 0, var 1) divides by sqrt(1 + 1e-5)."""
    regressor = conv_regressor((2, 1, 1), (2, 1, 1))
    conv, norm, relu = regressor
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is not None
    assert isinstance(norm, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[2.0, 1.0], [1.0, 1.0]])[:, :, None, None])
        conv.bias.copy_(torch.tensor([0.5, 0.0]))
        out = regressor.eval()(torch.tensor([1.0, -2.0]).reshape(1, 2, 1, 1))
    assert out.flatten().tolist() == pytest.approx([0.5 / (1 + 1e-5) ** 0.5, 0.0])


@pytest.mark.parametrize("student,teacher,kind,kernel", [
    ((16, 8, 8), (32, 4, 4), nn.Conv2d, (3, 3)),            # twice the teacher's size: stride 2
    ((16, 4, 4), (32, 8, 8), nn.ConvTranspose2d, (4, 4)),   # half: transposed, stride 2
    ((16, 8, 8), (64, 8, 8), nn.Conv2d, (1, 1)),            # equal: 1x1
    ((16, 7, 9), (32, 5, 4), nn.Conv2d, (3, 6)),            # larger: valid convolution, kernel 1 + S - T
])
def test_regressor_maps_the_students_shape_to_the_teachers(student, teacher, kind, kernel):
    conv = conv_regressor(student, teacher)[0]
    assert type(conv) is kind and conv.kernel_size == kernel
    assert conv_regressor(student, teacher)(torch.randn(2, *student)).shape == (2, *teacher)
    theirs = mdistiller_conv_reg((2, *student), (2, *teacher))[0]  # the same layer as mdistiller's ConvReg
    assert (type(theirs), theirs.kernel_size, theirs.stride, theirs.padding, theirs.weight.shape) == (
        type(conv), conv.kernel_size, conv.stride, conv.padding, conv.weight.shape)


def test_a_student_map_smaller_than_the_teachers_but_not_half_is_a_user_error():
    with pytest.raises(UserError, match="hint map is 2x2 and the teacher's 8x8"):
        conv_regressor((16, 2, 2), (16, 8, 8))


def mdistiller_conv_reg(s_shape, t_shape):
    """mdistiller/distillers/_common.py ConvReg as written (N-first shapes; the height alone picks the layer)."""
    s_N, s_C, s_H, s_W = s_shape
    t_N, t_C, t_H, t_W = t_shape
    if s_H == 2 * t_H:
        conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
    elif s_H * 2 == t_H:
        conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
    else:
        conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
    return conv, nn.BatchNorm2d(t_C)


def test_joint_loss_equals_mdistillers_fitnet_on_cifar_resnets():
    """mdistiller's FitNet.forward_train: feats = [relu(bn1(conv1(x))), layer1, layer2, layer3] of its CIFAR
    ResNet, f_s = relu(bn(conv(feats_s[2]))), loss = CE_WEIGHT * CE + FEAT_WEIGHT * F.mse_loss(f_s, feats_t[2]).
    Re-derived here from the networks' own layers, with the regressor's weights copied over."""
    torch.manual_seed(0)
    student_model, teacher_model = create_model("resnet8x4", 100), create_model("resnet32x4", 100).eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([1, 5, 7, 99])

    def mdistiller_feats(net, x):
        f0 = net.relu(net.bn1(net.conv1(x)))
        f1 = net.layer1(f0)
        return [f0, f1, net.layer2(f1)]

    student_shapes, teacher_shapes = stage_shapes(student_model, "resnet8x4", (3, 32, 32)), stage_shapes(
        teacher_model, "resnet32x4", (3, 32, 32))
    trainable = Trainable(student_model, SimpleNamespace(model="resnet8x4", hint_stage=2), student_shapes[2],
                          teacher_shapes[2])
    conv, norm = mdistiller_conv_reg((4, *student_shapes[2]), (4, *teacher_shapes[2]))
    conv.load_state_dict(trainable.regressor[0].state_dict())
    with torch.no_grad():
        teacher_logits, teacher_features = with_stages(teacher_model, "resnet32x4")(images)
        f_t = mdistiller_feats(teacher_model, images)[2]
        assert torch.allclose(teacher_features[2], f_t)  # hint layer 2 is the output of the second stage
        logits, regressed = trainable.train()(images)
        f_s = F.relu(norm(conv(mdistiller_feats(student_model, images)[2])))  # BatchNorm in train mode, as theirs
        theirs = 1.0 * F.cross_entropy(logits, labels) + 100.0 * F.mse_loss(f_s, f_t)
        ours = 1.0 * F.cross_entropy(logits, labels) + 100.0 * hint_loss(regressed, teacher_features[2])
    assert regressed.shape == f_s.shape == (4, 128, 16, 16)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert 100.0 * hint_loss(regressed, teacher_features[2]).item() > 1.0  # the hint term is not a bystander


def phase_grads(phase):
    """Which parameter groups of a resnet8 Trainable (hint stage 2, resnet14 teacher shapes) get a gradient."""
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    trainable = Trainable(model, SimpleNamespace(model="resnet8", hint_stage=2), stage_shapes(model, "resnet8", DIGITS)[2],
                          stage_shapes(create_model("resnet14", 10), "resnet14", DIGITS)[2])
    logits, regressed = trainable.train()(torch.randn(4, *DIGITS), phase)
    sum(output.pow(2).mean() for output in (logits, regressed) if output is not None).backward()
    groups = {}
    for name, parameter in trainable.named_parameters():
        group = name.split(".")[1] if name.startswith("student.") else "regressor"
        groups.setdefault(group, set()).add(parameter.grad is not None and bool(parameter.grad.abs().sum() > 0))
    return {group: seen == {True} for group, seen in groups.items()}


def test_each_phase_trains_what_it_should():
    # joint: everything; stage 1: the stem, the stages up to g = 2 and the regressor; stage 2: the student alone
    assert phase_grads(0) == {group: True for group in ("conv1", "bn1", "layer1", "layer2", "layer3", "fc", "regressor")}
    assert phase_grads(1) == {"conv1": True, "bn1": True, "layer1": True, "layer2": True, "layer3": False, "fc": False,
                              "regressor": True}
    assert phase_grads(2) == {"conv1": True, "bn1": True, "layer1": True, "layer2": True, "layer3": True, "fc": True,
                              "regressor": False}


def test_trainable_holds_each_weight_once_and_stage_one_computes_the_joint_hint():
    model = create_model("resnet8", 10)
    shapes = stage_shapes(model, "resnet8", DIGITS)
    trainable = Trainable(model, SimpleNamespace(model="resnet8", hint_stage=1), shapes[1], (32, 4, 4))
    regressor_keys = {f"regressor.{key}" for key in trainable.regressor.state_dict()}
    assert trainable.state_dict().keys() == {f"student.{key}" for key in model.state_dict()} | regressor_keys
    assert len(list(trainable.parameters())) == len(list(model.parameters())) + len(list(trainable.regressor.parameters()))
    images = torch.randn(3, *DIGITS)
    with torch.no_grad():
        logits, regressed = trainable.eval()(images)
        assert torch.equal(logits, model(images)) and regressed.shape == (3, 32, 4, 4)
        assert trainable(images, 1)[0] is None and torch.equal(trainable(images, 1)[1], regressed)
        assert torch.equal(trainable(images, 2)[0], logits) and trainable(images, 2)[1] is None


@pytest.mark.parametrize("flag,value,message", [("--hint-weight", "-1", "--hint-weight -1.0 must be 0 or more"),
                                                ("--hint-stage", "-1", "--hint-stage -1 must be 0 or more"),
                                                ("--hint-epochs", "-2", "--hint-epochs -2 must be 0 or more"),
                                                ("--temperature", "0", "--temperature 0.0 must be above 0"),
                                                ("--kd-weight", "nan", "--kd-weight nan must be 0 or more")])
def test_method_flags_out_of_range_are_one_line(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(parse_args(["--teacher", "none.pt", "--out-dir", str(tmp_path / "runs"), flag, value]))
    captured = capsys.readouterr()
    assert_user_error(SimpleNamespace(returncode=exit_info.value.code, stdout=captured.out, stderr=captured.err),
                      message)
    assert exit_info.value.code == 2 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,words", [
    (["--hint-stage", "4"], ["--hint-stage 4", "resnet8 has feature maps 0 (the stem) to 3"]),
    (["--model", "resnet18", "--hint-stage", "1"], ["hint map is 2x2 and the teacher's 8x8", "another --hint-stage"]),
])
def test_hint_stages_that_do_not_fit_are_one_line_and_no_run(make_teacher, tmp_path, args, words):
    result = run_script("kd_fitnet.py", "--model", "resnet8", "--teacher", make_teacher("resnet14"), *QUICK, *args,
                        "--threads", "1", "--out-dir", tmp_path, check=False)
    assert_user_error(result, *words)
    assert run_dirs(tmp_path) == []


def test_joint_end_to_end(make_teacher, tmp_path):
    teacher = make_teacher("resnet14")
    result = run_script("kd_fitnet.py", "--model", "resnet8", "--teacher", teacher, "--out-dir", tmp_path,
                        "--ce-weight", "0.8", "--hint-weight", "3", "--kd-weight", "0.5", *QUICK)
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, teacher, "fitnet")
    (epoch,) = metrics
    assert epoch["phase"] == 0 and epoch["loss_hint"] > 0 and epoch["loss_kd"] > 0
    assert epoch["train_loss"] == pytest.approx(0.8 * epoch["loss_ce"] + 3 * epoch["loss_hint"] + 0.5 * epoch["loss_kd"],
                                                rel=1e-4)
    assert {"losses/ce", "losses/hint", "losses/kd", "losses/total", "charts/phase"} <= tensorboard_tags(run_dir)
    last = torch.load(run_dir / "last.pt", weights_only=False)
    assert last["method"] == "fitnet" and last["phase"] == 0
    # the checkpoint's trainable is the student and the regressor (resnet8 -> resnet14 at stage 2: 32x4x4 both, 1x1)
    assert last["trainable"].keys() == {f"student.{key}" for key in last["model"]} | {
        "regressor.0.weight", "regressor.0.bias", "regressor.1.weight", "regressor.1.bias", "regressor.1.running_mean",
        "regressor.1.running_var", "regressor.1.num_batches_tracked"}


TWO_STAGE = ["--model", "resnet8", "--hint-epochs", "1", "--hint-weight", "2", "--kd-weight", "0.5", *QUICK]


@pytest.fixture(scope="module")
def two_stage_run(make_teacher, tmp_path_factory):
    """An uninterrupted two-stage run: 1 epoch of hints alone, then 1 epoch of the whole student."""
    teacher, out = make_teacher("resnet14"), tmp_path_factory.mktemp("two_stage")
    return teacher, out, run_script("kd_fitnet.py", *TWO_STAGE, "--teacher", teacher, "--out-dir", out)


def test_two_stage_end_to_end(two_stage_run):
    teacher, out, result = two_stage_run
    run_dir, results, metrics = assert_run_outputs(result, out, teacher, "fitnet")
    assert results["epochs"] == 2 and [m["phase"] for m in metrics] == [1, 2]
    stage1, stage2 = metrics
    # stage 1 logs the weighted hint alone, stage 2 CE and the soft term
    assert stage1["loss_hint"] > 0 and "loss_ce" not in stage1 and "loss_kd" not in stage1
    assert stage1["train_loss"] == pytest.approx(2 * stage1["loss_hint"], rel=1e-5)
    assert "loss_hint" not in stage2 and stage2["train_loss"] == pytest.approx(
        stage2["loss_ce"] + 0.5 * stage2["loss_kd"], rel=1e-4)
    assert stage2["step"] == 2 * stage1["step"] and "stage 2: the whole student for 1 epochs" in result.stdout


def test_resume_across_the_stage_boundary(two_stage_run, tmp_path):
    teacher, out, _ = two_stage_run
    after_stage1, resumed, uninterrupted = resume_at_phase_boundary("kd_fitnet.py", TWO_STAGE, teacher, out, tmp_path)
    for key, value in uninterrupted["trainable"].items():
        assert torch.equal(resumed["trainable"][key], value), key
        if key.startswith("regressor."):  # stage 2 neither trains nor runs the regressor
            assert torch.equal(after_stage1["trainable"][key], value), key
    assert not torch.equal(after_stage1["trainable"]["student.fc.weight"], uninterrupted["trainable"]["student.fc.weight"])


@pytest.mark.parametrize("args,phases", [([], [(0, 4)]), (["--hint-epochs", "1", "--kd-weight", "0.5"], [(1, 22), (2, 24)])])
def test_under_torchrun(make_teacher, tmp_path, args, phases):
    # joint: every parameter trains; two-stage: stage 1 leaves layer3 and fc, stage 2 the regressor, without gradient,
    # which DDP must be told of or the second step fails
    teacher = make_teacher("resnet14")
    result = run_script("kd_fitnet.py", "--model", "resnet8", "--teacher", teacher, *QUICK, *args, "--out-dir", tmp_path,
                        "--max-steps", phases[-1][1], nproc=2)
    _, results, metrics = assert_run_outputs(result, tmp_path, teacher, "fitnet")
    assert results["world_size"] == 2 and [(m["phase"], m["step"]) for m in metrics] == phases
