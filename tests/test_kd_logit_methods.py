"""kd_st.py (Hinton soft targets) and kd_logit.py (Ba & Caruana logit regression)."""
import math

import pytest
import torch
import torch.nn.functional as F

from common.models import create_model
from conftest import QUICK, assert_run_outputs, assert_user_error, only_run, run_dirs, run_script, tensorboard_tags
from kd_logit import Regressed, logit_loss
from kd_st import kd_loss

STUDENT = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
TEACHER = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_kd_loss_by_hand():
    for temperature in (1.0, 2.0, 4.0):
        expected = 0.0
        for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()):
            p_s = softmax([v / temperature for v in s_row])
            p_t = softmax([v / temperature for v in t_row])
            expected += sum(t * math.log(t / s) for t, s in zip(p_t, p_s))  # KL(teacher || student), over classes
        expected = expected / 2 * temperature ** 2  # batchmean, then T^2
        assert kd_loss(STUDENT, TEACHER, temperature).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
def test_kd_loss_properties():
    logits = torch.randn(8, 10)
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    teacher = torch.randn(8, 10)
    base = kd_loss(logits, teacher, 4.0)
    assert kd_loss(logits + 3.0, teacher - 7.0, 4.0).item() == pytest.approx(base.item(), rel=1e-5)  # shift-invariant
    unscaled = F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(teacher / 4, 1), reduction="sum") / 8
    assert base.item() == pytest.approx(16 * unscaled.item(), rel=1e-5)  # T^2 scaling of the batchmean KL
    mean_reduction = F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(teacher / 4, 1), reduction="mean") * 16
    assert base.item() == pytest.approx(10 * mean_reduction.item(), rel=1e-5)  # not 'mean' (which divides by C too)
    doubled = kd_loss(torch.cat([logits, logits]), torch.cat([teacher, teacher]), 4.0)
    assert doubled.item() == pytest.approx(base.item(), rel=1e-5)  # averaged over the batch, not summed


def test_logit_loss_by_hand():
    squares = [(s - t) ** 2 for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()) for s, t in zip(s_row, t_row)]
    assert logit_loss(STUDENT, TEACHER).item() == pytest.approx(sum(squares) / 6)
    assert logit_loss(STUDENT, STUDENT).item() == 0.0


def st_step(ce_weight, kd_weight, temperature=4.0):
    """One training step of kd_st.py's loss, in-process."""
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 10), create_model("resnet14", 10)
    teacher.eval().requires_grad_(False)
    images, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    with torch.no_grad():
        teacher_logits = teacher(images)
    logits = student(images)
    loss_ce = F.cross_entropy(logits, labels)
    loss = ce_weight * loss_ce + kd_weight * kd_loss(logits, teacher_logits, temperature)
    return student, teacher, loss, loss_ce


def test_kd_weight_zero_is_cross_entropy():
    _, _, loss, loss_ce = st_step(ce_weight=1.0, kd_weight=0.0)
    assert loss.item() == pytest.approx(loss_ce.item())


def test_one_step_trains_only_the_student():
    student, teacher, loss, _ = st_step(ce_weight=0.1, kd_weight=0.9)
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():  # BatchNorm running stats untouched
        assert torch.equal(value, buffers[key]), key


def test_regressed_features_are_the_pooled_penultimate_layer():
    model = create_model("resnet8", 10).eval()
    images = torch.randn(4, 3, 8, 8)
    logits, features = Regressed(model, "features")(images)
    by_hand = model.layer3(model.layer2(model.layer1(model.relu(model.bn1(model.conv1(images)))))).mean((2, 3))
    assert features.shape == (4, 64) and torch.allclose(features, by_hand, atol=1e-6)
    assert torch.allclose(logits, model(images), atol=1e-6)
    logits, same = Regressed(model, "logits")(images)
    assert same is logits and torch.allclose(logits, model(images))


@pytest.mark.parametrize("script,args,method,weights", [
    ("kd_st.py", ["--temperature", "2", "--ce-weight", "0", "--kd-weight", "1"], "st", (0, 1)),  # seed 000: pure KD
    ("kd_st.py", ["--ce-weight", "1", "--kd-weight", "1"], "st", (1, 1)),  # seed 001: CE + T^2 KL
    ("kd_logit.py", ["--ce-weight", "1", "--kd-weight", "0.5"], "logit", (1, 0.5)),
    ("kd_logit.py", ["--target", "features"], "logit", (1, 1)),  # seed 001's "Logits": pooled features
])
def test_end_to_end_on_digits(tmp_path, make_teacher, script, args, method, weights):
    teacher = make_teacher()
    result = run_script(script, "--teacher", teacher, "--model", "resnet8", *QUICK, *args, "--out-dir", tmp_path)
    _, results, metrics = assert_run_outputs(result, tmp_path, teacher, method)
    assert f"top1 {results['teacher_top1']:.2f}" in result.stdout  # logged before training
    assert {"losses/ce", "losses/kd", "losses/total"} <= tensorboard_tags(only_run(tmp_path)[0])
    epoch = metrics[0]  # the total is the weighted sum of the logged terms, with the given weights
    assert epoch["loss_kd"] > 0 and epoch["train_loss"] == pytest.approx(
        weights[0] * epoch["loss_ce"] + weights[1] * epoch["loss_kd"], rel=1e-4)


def test_features_of_another_width_are_one_clear_line(tmp_path, make_teacher):
    result = run_script("kd_logit.py", "--teacher", make_teacher("resnet8x4"), "--model", "resnet8", "--target",
                        "features", *QUICK, "--out-dir", tmp_path, check=False)
    assert_user_error(result, "(64,) values", "(256,)")
    assert run_dirs(tmp_path) == []


def test_kd_st_under_torchrun(tmp_path, make_teacher):
    result = run_script("kd_st.py", "--teacher", make_teacher(), "--model", "resnet8", *QUICK, "--out-dir", tmp_path,
                        nproc=2)
    _, results = only_run(tmp_path)
    assert results["world_size"] == 2 and result.stdout.count("FINAL") == 1


@pytest.mark.parametrize("script", ["kd_st.py", "kd_logit.py"])
def test_bad_teacher_is_one_clear_line(tmp_path, make_teacher, script):
    result = run_script(script, "--teacher", tmp_path / "missing.pt", *QUICK, "--out-dir", tmp_path, check=False)
    assert_user_error(result, "missing.pt does not exist")
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    result = run_script(script, "--teacher", not_a_checkpoint, *QUICK, "--out-dir", tmp_path, check=False)
    assert_user_error(result, "notes.pt is not a")
    result = run_script(script, "--teacher", make_teacher(), "--dataset", "fake", "--num-classes", "7",
                        "--image-size", "16", *QUICK, "--out-dir", tmp_path, check=False)
    assert_user_error(result, "10 classes", "has 7")
    result = run_script(script, *QUICK, "--out-dir", tmp_path, check=False)
    assert_user_error(result, "--teacher PATH")
    assert run_dirs(tmp_path) == []
