"""kd_reviewkd.py (knowledge review): the HCL loss against values computed by hand and against the authors'
code, the ABF fusion and the review chain against the authors' forward, the warm-up, and the real script on
digits (one and two processes)."""
import json

import pytest
import torch
import torch.nn.functional as F

from common.models import create_model, stage_shapes, with_stages
from conftest import QUICK, assert_run_outputs, assert_user_error, only_run, run_dirs, run_script, tensorboard_tags
from kd_reviewkd import ABF, Trainable, hcl_loss, review_levels, reviewkd_warmup


def mse_by_hand(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b)) / len(a)


def pool_by_hand(rows, size):
    """Average pool of a square list-of-lists map to size x size (the map's side divisible by size)."""
    step = len(rows) // size
    return [sum(rows[r][c] for r in range(i * step, (i + 1) * step) for c in range(j * step, (j + 1) * step)) / step ** 2
            for i in range(size) for j in range(size)]


def test_hcl_by_hand():
    # 2x2 map, student [[1, 2], [3, 4]], teacher 0: only the 1x1 level is below the height 2, weight 1/2.
    # MSE = (1 + 4 + 9 + 16) / 4 = 7.5; pooled: mean 2.5, MSE 6.25; HCL = (7.5 + 6.25 / 2) / 1.5 = 7.0833333
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    assert hcl_loss(student, torch.zeros_like(student)).item() == pytest.approx(10.625 / 1.5, rel=1e-6)
    # 4x4 map: levels 2 (weight 1/2) and 1 (weight 1/4), HCL = (MSE + MSE_2 / 2 + MSE_1 / 4) / 1.75
    s = [[0.0, 1.0, 4.0, 9.0], [2.0, -1.0, 0.5, 3.0], [7.0, 1.0, 0.0, -2.0], [1.0, 1.0, 6.0, 0.0]]
    t = [[1.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [3.0, 3.0, 0.0, 0.0], [-1.0, 2.0, 2.0, 4.0]]
    flat = lambda rows: [v for row in rows for v in row]  # noqa: E731
    expected = (mse_by_hand(flat(s), flat(t)) + mse_by_hand(pool_by_hand(s, 2), pool_by_hand(t, 2)) / 2
                + mse_by_hand(pool_by_hand(s, 1), pool_by_hand(t, 1)) / 4) / 1.75
    # written out: MSE 125.25 / 16 = 7.828125; 2x2 means S [0.5, 4.125, 2.5, 1], T [0.25, 1.5, 1.75, 1.5]:
    # MSE_2 = (0.0625 + 6.890625 + 0.5625 + 0.25) / 4 = 1.94140625; 1x1: 2.03125 vs 1.25, MSE_1 = 0.6103515625
    assert expected == pytest.approx((7.828125 + 1.94140625 / 2 + 0.6103515625 / 4) / 1.75)
    as_map = lambda rows: torch.tensor(rows).view(1, 1, 4, 4)  # noqa: E731
    assert hcl_loss(as_map(s), as_map(t)).item() == pytest.approx(expected, rel=1e-6)
    # a 1x1 map (the pooled level): no level below it, HCL is the MSE
    pooled_s, pooled_t = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1), torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    assert hcl_loss(pooled_s, pooled_t).item() == pytest.approx((1 + 9) / 2)


def authors_hcl(fstudent, fteacher):
    """dvlab-research/ReviewKD CIFAR-100/model/reviewkd.py `hcl` (mdistiller's `hcl_loss` is the same), as read."""
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        n, c, h, w = fs.shape
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for l in [4, 2, 1]:  # noqa: E741
            if l >= h:
                continue
            cnt /= 2.0
            loss += F.mse_loss(F.adaptive_avg_pool2d(fs, (l, l)), F.adaptive_avg_pool2d(ft, (l, l)), reduction="mean") * cnt
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def test_hcl_matches_the_authors_code_on_every_level_size():
    torch.manual_seed(0)
    shapes = [(4, 6, 32, 32), (4, 6, 8, 8), (4, 6, 7, 7), (4, 6, 4, 4), (4, 6, 2, 2), (4, 6, 1, 1)]
    students, teachers = [torch.randn(s) for s in shapes], [torch.randn(s).relu() for s in shapes]
    ours = sum(hcl_loss(s, t) for s, t in zip(students, teachers))
    assert ours.item() == pytest.approx(authors_hcl(students, teachers).item(), rel=1e-6)
    half = [s.bfloat16() for s in students]  # under --amp bf16 the features are bf16; the loss stays float32
    assert hcl_loss(half[1], teachers[1]).dtype == torch.float32
    assert hcl_loss(half[1], teachers[1]).item() == pytest.approx(hcl_loss(half[1].float(), teachers[1]).item(), rel=1e-6)


def test_hcl_properties():
    torch.manual_seed(1)
    teacher = torch.randn(3, 5, 8, 8)
    assert hcl_loss(teacher.clone(), teacher).item() == 0.0
    # a constant offset c is c^2 at every level, so the weighted mean is c^2: the weights are normalised
    assert hcl_loss(teacher + 0.5, teacher).item() == pytest.approx(0.25, rel=1e-5)
    # a +-1 checkerboard averages out in every 4x4, 2x2 and 1x1 pool: only the full-size term (weight 1 of
    # 1 + 1/2 + 1/4 + 1/8) sees it
    checkerboard = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0
    assert hcl_loss(teacher + checkerboard, teacher).item() == pytest.approx(1 / 1.875, rel=1e-5)
    # averaged over the batch, not summed
    assert hcl_loss(torch.cat([teacher + 1, teacher + 1]), torch.cat([teacher, teacher])).item() == pytest.approx(1.0)


def test_warmup_is_zero_in_the_first_epoch_and_full_from_the_warmup_epoch():
    assert [reviewkd_warmup(epoch, 20) for epoch in (0, 1, 10, 19, 20, 239)] == [0.0, 0.05, 0.5, 0.95, 1.0, 1.0]
    assert reviewkd_warmup(0, 0) == 1.0  # ImageNet: no warm-up


def authors_abf_forward(abf, x, y=None, shape=None, out_shape=None):
    """The authors' ABF.forward (CIFAR-100/model/reviewkd.py), as read, on our module's layers."""
    n, _, h, w = x.shape
    x = abf.conv1(x)
    if abf.att_conv is not None:
        y = F.interpolate(y, (shape, shape), mode="nearest")
        z = abf.att_conv(torch.cat([x, y], dim=1))
        x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
    if x.shape[-1] != out_shape:
        x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
    return abf.conv2(x), x


@pytest.mark.parametrize("student_name,teacher_name", [("resnet8", "resnet32x4"), ("resnet20_7x7", "resnet14")])
def test_review_chain_matches_the_authors_forward(student_name, teacher_name):
    """Trainable against the authors' ReviewKD.forward: features deep to shallow, the ABFs in that order, each
    fusing the upsampled `res_features` of the deeper one, outputs of the teacher's widths and sizes. The
    second pair has smaller maps than its teacher (a 7x7 stem: 4, 2, 1 against 8, 4, 2), so each output is
    upsampled to the teacher's size, as the authors' out_shapes do for ShuffleNet students."""
    torch.manual_seed(0)
    student, teacher = create_model(student_name, 10), create_model(teacher_name, 10)
    student_shapes, teacher_shapes = stage_shapes(student, student_name, (3, 8, 8)), stage_shapes(teacher, teacher_name, (3, 8, 8))
    args = type("Args", (), {"model": student_name})()
    trainable = Trainable(student, args, student_shapes, teacher_shapes)
    images = torch.randn(4, 3, 8, 8)
    logits, reviewed = trainable(images)
    targets = review_levels(with_stages(teacher.eval(), teacher_name)(images)[1])
    assert [r.shape for r in reviewed] == [t.shape for t in targets]
    assert trainable.abfs[-1].att_conv is None and all(abf.att_conv is not None for abf in trainable.abfs[:-1])
    assert trainable.abfs[0].conv1[0].out_channels == min(512, student_shapes[-1][0])  # mid: the last width

    # the authors' loop: x = features[::-1], abfs[::-1], shapes = each student level's size, out_shapes the teacher's
    features = review_levels(trainable.staged[0](images)[1])[::-1]
    abfs = list(trainable.abfs)[::-1]
    shapes = [f.shape[-1] for f in features]
    out_shapes = [t.shape[-1] for t in targets][::-1]
    results = []
    out_features, res_features = authors_abf_forward(abfs[0], features[0], out_shape=out_shapes[0])
    results.append(out_features)
    for feature, abf, shape, out_shape in zip(features[1:], abfs[1:], shapes[1:], out_shapes[1:]):
        out_features, res_features = authors_abf_forward(abf, feature, res_features, shape, out_shape)
        results.insert(0, out_features)
    assert torch.allclose(logits, student(images), atol=1e-5)
    for ours, theirs in zip(reviewed, results):
        assert torch.allclose(ours, theirs, atol=1e-5)
    # the review loss reaches every ABF and every layer of the student but its classifier
    sum(hcl_loss(r, t) for r, t in zip(reviewed, targets)).backward()
    without = [name for name, p in trainable.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == ["student.fc.weight", "student.fc.bias"]


def test_abf_fuses_with_attention_weights():
    torch.manual_seed(2)
    abf = ABF(3, 4, 5, fuse=True).eval()
    feature, deeper = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2)
    output, fused = abf(feature, deeper, (4, 4))
    assert output.shape == (2, 5, 4, 4) and fused.shape == (2, 4, 4, 4)
    up = deeper.repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest upsampling by 2
    own = abf.conv1(feature)
    attention = torch.sigmoid(abf.att_conv[0](torch.cat([own, up], 1)))
    assert torch.allclose(fused, own * attention[:, :1] + up * attention[:, 1:], atol=1e-6)
    assert torch.allclose(output, abf.conv2(fused), atol=1e-6)
    output_8, fused_8 = abf(feature, deeper, (8, 8))  # resized to the teacher's size before conv2
    assert output_8.shape == (2, 5, 8, 8) and torch.equal(fused_8[:, :, ::2, ::2], fused)


def test_end_to_end_on_digits(tmp_path, make_teacher):
    teacher = make_teacher()
    weights = {"ce": 0.5, "reviewkd": 2.0}
    result = run_script("kd_reviewkd.py", "--teacher", teacher, "--model", "resnet8", *QUICK, "--epochs", "2",
                        "--ce-weight", weights["ce"], "--reviewkd-weight", weights["reviewkd"],
                        "--reviewkd-warmup-epochs", "2", "--batch-size", "128", "--threads", "1", "--out-dir", tmp_path)
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, teacher, "reviewkd")
    levels = ["reviewkd_stage1", "reviewkd_stage2", "reviewkd_stage3", "reviewkd_pooled"]
    assert {"losses/ce", "losses/reviewkd", "losses/total", *(f"losses/{k}" for k in levels)} <= tensorboard_tags(run_dir)
    for epoch, factor in zip(metrics, (0.0, 0.5)):  # the warm-up: 0 in epoch 1, 1/2 in epoch 2
        assert all(epoch[f"loss_{k}"] > 0 for k in levels)
        assert epoch["loss_reviewkd"] == pytest.approx(sum(epoch[f"loss_{k}"] for k in levels), rel=1e-5)
        assert epoch["train_loss"] == pytest.approx(
            weights["ce"] * epoch["loss_ce"] + factor * weights["reviewkd"] * epoch["loss_reviewkd"], rel=1e-4)
    assert metrics[1]["train_loss"] > weights["ce"] * metrics[1]["loss_ce"] + 0.1


@pytest.mark.parametrize("args,words", [
    (["--reviewkd-weight", "-1"], ["--reviewkd-weight -1.0", "0 or more"]),
    (["--reviewkd-warmup-epochs", "-2"], ["--reviewkd-warmup-epochs -2", "0 or more"]),
    (["--batch-size", "1"], ["--batch-size 1", "2 or more images per process"]),
])
def test_bad_method_flags_are_one_clear_line(tmp_path, make_teacher, args, words):
    result = run_script("kd_reviewkd.py", "--teacher", make_teacher(), *QUICK, *args, "--out-dir", tmp_path, check=False)
    assert_user_error(result, *words)
    assert run_dirs(tmp_path) == []


def test_under_torchrun(tmp_path, make_teacher):
    result = run_script("kd_reviewkd.py", "--teacher", make_teacher(), "--model", "resnet8", *QUICK,
                        "--reviewkd-warmup-epochs", "0", "--out-dir", tmp_path, nproc=2)
    run_dir, results = only_run(tmp_path)
    assert results["world_size"] == 2 and results["method"] == "reviewkd" and result.stdout.count("FINAL") == 1
    (epoch,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # no warm-up, the default weights averaged over both ranks: CE + weight * the summed HCL terms
    from kd_reviewkd import parse_args
    weight = parse_args([]).reviewkd_weight
    assert epoch["loss_reviewkd"] > 0
    assert epoch["train_loss"] == pytest.approx(epoch["loss_ce"] + weight * epoch["loss_reviewkd"], rel=1e-4)
