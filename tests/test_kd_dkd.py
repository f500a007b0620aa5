"""kd_dkd.py (decoupled knowledge distillation): TCKD and NCKD against values computed by hand, the
decomposition of KD they come from, the warm-up, and the real script on digits (one and two processes)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import QUICK, assert_run_outputs, assert_user_error, only_run, run_dirs, run_script, tensorboard_tags
from kd_dkd import dkd_warmup, nckd_loss, tckd_loss
from kd_st import kd_loss

# 2 samples x 3 classes, labels 0 and 2
STUDENT = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
TEACHER = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
LABELS = torch.tensor([0, 2])


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def by_hand(temperature):
    """(TCKD, NCKD) from the definitions, T^2 and batch mean included, without torch."""
    tckd = nckd = 0.0
    for s_row, t_row, label in zip(STUDENT.tolist(), TEACHER.tolist(), LABELS.tolist()):
        p_s, p_t = softmax([v / temperature for v in s_row]), softmax([v / temperature for v in t_row])
        tckd += kl([p_t[label], 1 - p_t[label]], [p_s[label], 1 - p_s[label]])
        others = [i for i in range(3) if i != label]  # the softmax over the non-target classes alone
        nckd += kl(softmax([t_row[i] / temperature for i in others]), softmax([s_row[i] / temperature for i in others]))
    return tckd / 2 * temperature ** 2, nckd / 2 * temperature ** 2


def test_tckd_and_nckd_by_hand():
    # T = 1, written out: sample 1 (label 0): b^S = [0.244728, 0.755272], b^T = [0.665241, 0.334759];
    # p_hat^S = softmax([2, 0]) = [0.880797, 0.119203], p_hat^T = softmax([0, 1]) = [0.268941, 0.731059]
    # sample 2 (label 2): b^S = [0.785597, 0.214403], b^T = [0.909443, 0.090557];
    # p_hat^S = softmax([0.5, -1]) = [0.817574, 0.182426], p_hat^T = softmax([0, 0]) = [0.5, 0.5]
    assert tckd_loss(STUDENT, TEACHER, LABELS, 1.0).item() == pytest.approx(0.2239708, rel=1e-5)
    assert nckd_loss(STUDENT, TEACHER, LABELS, 1.0).item() == pytest.approx(0.6325541, rel=1e-5)
    for temperature in (1.0, 2.0, 4.0):
        tckd, nckd = by_hand(temperature)
        assert tckd_loss(STUDENT, TEACHER, LABELS, temperature).item() == pytest.approx(tckd, rel=1e-5)
        assert nckd_loss(STUDENT, TEACHER, LABELS, temperature).item() == pytest.approx(nckd, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_is_tckd_plus_nckd_weighted_by_the_teachers_non_target_mass(temperature):
    """The paper's decomposition, per example: KD = TCKD + (1 - p_t^teacher) * NCKD (any T, T^2 on both sides).
    So DKD with alpha = beta = 1 is not KD: it exceeds KD by the batch mean of p_t^teacher * NCKD."""
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 10) * 2, torch.randn(6, 10) * 2, torch.randint(0, 10, (6,))
    p_target = F.softmax(teacher / temperature, dim=1).gather(1, labels[:, None]).squeeze(1)
    gaps = []
    for i in range(6):
        one = (student[i:i + 1], teacher[i:i + 1], labels[i:i + 1], temperature)
        tckd, nckd = tckd_loss(*one), nckd_loss(*one)
        kd = kd_loss(student[i:i + 1], teacher[i:i + 1], temperature)
        assert kd.item() == pytest.approx((tckd + (1 - p_target[i]) * nckd).item(), rel=1e-4)
        gaps.append(p_target[i].item() * nckd.item())
    both = tckd_loss(student, teacher, labels, temperature) + nckd_loss(student, teacher, labels, temperature)
    assert both.item() - kd_loss(student, teacher, temperature).item() == pytest.approx(sum(gaps) / 6, rel=1e-3)
    assert sum(gaps) > 0.01


def test_each_term_sees_only_its_part_of_the_distribution():
    torch.manual_seed(1)
    student, teacher, labels = torch.randn(4, 7), torch.randn(4, 7), torch.tensor([0, 3, 6, 2])
    assert tckd_loss(student, student.clone(), labels, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert nckd_loss(student, student.clone(), labels, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    moved = student.clone()
    moved[torch.arange(4), labels] += 3.0  # the target logits: NCKD does not see them
    assert nckd_loss(moved, teacher, labels, 4.0).item() == pytest.approx(nckd_loss(student, teacher, labels, 4.0).item(),
                                                                          rel=1e-5)
    assert tckd_loss(moved, teacher, labels, 4.0).item() != pytest.approx(tckd_loss(student, teacher, labels, 4.0).item())
    shuffled = student.clone()  # swap two non-target logits of each row: p_t stays, so TCKD stays
    for row, label in enumerate(labels.tolist()):
        a, b = [c for c in range(7) if c != label][:2]
        shuffled[row, [a, b]] = shuffled[row, [b, a]]
    assert tckd_loss(shuffled, teacher, labels, 4.0).item() == pytest.approx(tckd_loss(student, teacher, labels, 4.0).item(),
                                                                             rel=1e-5)
    doubled = [torch.cat([x, x]) for x in (student, teacher, labels)]  # averaged over the batch, not summed
    assert tckd_loss(*doubled, 4.0).item() == pytest.approx(tckd_loss(student, teacher, labels, 4.0).item(), rel=1e-5)
    assert nckd_loss(*doubled, 4.0).item() == pytest.approx(nckd_loss(student, teacher, labels, 4.0).item(), rel=1e-5)


def test_confident_networks_and_bf16_logits_give_finite_float32_losses():
    """p_t rounds to 1 in float32: the log of summed probabilities (mdistiller's TCKD) is NaN there."""
    student, teacher, labels = torch.tensor([[200.0, 0.0, 0.0]]), torch.tensor([[300.0, 0.0, 1.0]]), torch.tensor([0])
    for loss in (tckd_loss, nckd_loss):
        assert math.isfinite(loss(student, teacher, labels, 1.0).item())
    half = (STUDENT.bfloat16(), TEACHER.bfloat16(), LABELS, 4.0)  # under --amp bf16 the logits are bf16
    for loss in (tckd_loss, nckd_loss):
        assert loss(*half).dtype == torch.float32
        assert loss(*half).item() == pytest.approx(loss(STUDENT, TEACHER, LABELS, 4.0).item(), rel=1e-6)


def test_warmup_ramps_linearly_over_epochs_counted_from_one():
    assert [dkd_warmup(epoch, 20) for epoch in (0, 1, 9, 18, 19, 20, 239)] == [0.05, 0.1, 0.5, 0.95, 1.0, 1.0, 1.0]
    assert dkd_warmup(0, 1) == dkd_warmup(0, 0) == 1.0  # mdistiller's ImageNet WARMUP: 1, no ramp at all


def test_end_to_end_on_digits(tmp_path, make_teacher):
    teacher = make_teacher()
    weights = {"ce": 0.5, "tckd": 2.0, "nckd": 3.0}
    result = run_script("kd_dkd.py", "--teacher", teacher, "--model", "resnet8", *QUICK, "--epochs", "2",
                        "--ce-weight", weights["ce"], "--tckd-weight", weights["tckd"], "--nckd-weight", weights["nckd"],
                        "--dkd-warmup-epochs", "4", "--out-dir", tmp_path)
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, teacher, "dkd")
    assert {"losses/ce", "losses/tckd", "losses/nckd", "losses/total"} <= tensorboard_tags(run_dir)
    for epoch, factor in zip(metrics, (0.25, 0.5)):  # the warm-up: 1/4 in epoch 1, 2/4 in epoch 2
        assert epoch["loss_tckd"] > 0 and epoch["loss_nckd"] > 0
        assert epoch["train_loss"] == pytest.approx(weights["ce"] * epoch["loss_ce"] + factor * (
            weights["tckd"] * epoch["loss_tckd"] + weights["nckd"] * epoch["loss_nckd"]), rel=1e-4)
        assert epoch["train_loss"] != pytest.approx(weights["ce"] * epoch["loss_ce"] + (
            weights["tckd"] * epoch["loss_tckd"] + weights["nckd"] * epoch["loss_nckd"]), rel=1e-3)


@pytest.mark.parametrize("args,words", [
    (["--temperature", "0"], ["--temperature 0.0", "above 0"]),
    (["--nckd-weight", "-1"], ["--nckd-weight -1.0", "0 or more"]),
    (["--dkd-warmup-epochs", "-2"], ["--dkd-warmup-epochs -2", "0 or more"]),
])
def test_bad_method_flags_are_one_clear_line(tmp_path, make_teacher, args, words):
    result = run_script("kd_dkd.py", "--teacher", make_teacher(), *QUICK, *args, "--out-dir", tmp_path, check=False)
    assert_user_error(result, *words)
    assert run_dirs(tmp_path) == []


def test_under_torchrun(tmp_path, make_teacher):
    result = run_script("kd_dkd.py", "--teacher", make_teacher(), "--model", "resnet8", *QUICK, "--out-dir", tmp_path,
                        nproc=2)
    run_dir, results = only_run(tmp_path)
    assert results["world_size"] == 2 and results["method"] == "dkd" and result.stdout.count("FINAL") == 1
    (epoch,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # the defaults, averaged over both ranks: CE + 1/20 * (TCKD + 8 * NCKD) in the first epoch
    assert epoch["train_loss"] == pytest.approx(epoch["loss_ce"] + (epoch["loss_tckd"] + 8 * epoch["loss_nckd"]) / 20,
                                                rel=1e-4)
