"""kd_crd.py (contrastive representation distillation): the scores, the NCE loss and the memory update against
values worked out by hand and against RepDistiller's ContrastMemory + ContrastLoss re-derived, the negatives'
classes, gradients that reach the student through one half only, and the real script on digits (one process,
and two, where both ranks must hold the same memory banks)."""
import json
import math

import pytest
import torch

from conftest import QUICK, assert_run_outputs, assert_user_error, only_run, run_dirs, run_script, tensorboard_tags
from kd_crd import ContrastMemory, Negatives, Trainable, contrast_scores, momentum_update, nce_loss


def test_nce_loss_by_hand():
    # N = 4 images, K = 2 negatives: the noise term K / N = 0.5.
    # row 1: -[log 0.5/(0.5+0.5) + log 0.5/(0.25+0.5) + log 0.5/(0.125+0.5)] = -[log 1/2 + log 2/3 + log 4/5] = 1.3217558
    # row 2: -[log 1/(1+0.5) + log 0.5/(0.5+0.5) + log 0.5/(0+0.5)] = -[log 2/3 + log 1/2 + 0] = 1.0986123; mean 1.2101841
    probabilities = torch.tensor([[0.5, 0.25, 0.125], [1.0, 0.5, 0.0]])
    assert nce_loss(probabilities[:1], 4).item() == pytest.approx(1.3217558, rel=1e-6)
    assert nce_loss(probabilities, 4).item() == pytest.approx(1.2101841, rel=1e-6)
    doubled = torch.cat([probabilities, probabilities])  # averaged over the batch, summed over the negatives
    assert nce_loss(doubled, 4).item() == pytest.approx(1.2101841, rel=1e-6)


def test_scores_and_momentum_update_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    anchor = torch.tensor([[0.6, 0.8]])
    # candidates 2 (the positive), 0, 1: dot products 1.0, 0.6, 0.8, at T = 0.5 exp(2), exp(1.2), exp(1.6)
    scores = contrast_scores(anchor, bank, torch.tensor([[2, 0, 1]]), 0.5)
    assert scores.tolist()[0] == pytest.approx([7.3890561, 3.3201169, 4.9530324], rel=1e-6)
    # row 0 with v = [0, 1] at momentum 0.5: [0.5, 0.5] normalised = [0.7071068, 0.7071068]; the others stay
    momentum_update(bank, torch.tensor([0]), torch.tensor([[0.0, 1.0]]), 0.5)
    assert bank.tolist() == [pytest.approx([0.7071068, 0.7071068]), [0.0, 1.0], pytest.approx([0.6, 0.8])]
    momentum_update(bank, torch.tensor([1]), torch.tensor([[1.0, 0.0]]), 0.0)  # momentum 0: the new embedding
    assert bank[1].tolist() == [1.0, 0.0]


def repdistiller(v1, v2, y, idx, memory_v1, memory_v2, temperature, momentum, z=(-1.0, -1.0)):
    """RepDistiller's crd/memory.py ContrastMemory.forward and crd/criterion.py ContrastLoss, as they compute them
    (v1: student, v2: teacher; memory_v1/_v2 updated in place); returns (loss, Z_v1, Z_v2)."""
    batch, n_data, dim = len(v1), len(memory_v1), memory_v1.shape[1]
    weight_v1 = torch.index_select(memory_v1, 0, idx.view(-1)).view(batch, -1, dim)
    out_v2 = torch.exp(torch.div(torch.bmm(weight_v1, v2.view(batch, dim, 1)), temperature))
    weight_v2 = torch.index_select(memory_v2, 0, idx.view(-1)).view(batch, -1, dim)
    out_v1 = torch.exp(torch.div(torch.bmm(weight_v2, v1.view(batch, dim, 1)), temperature))
    z_v1 = out_v1.mean().item() * n_data if z[0] < 0 else z[0]
    z_v2 = out_v2.mean().item() * n_data if z[1] < 0 else z[1]
    out_v1, out_v2 = out_v1 / z_v1, out_v2 / z_v2
    for memory, v in ((memory_v1, v1), (memory_v2, v2)):
        pos = torch.index_select(memory, 0, y.view(-1)) * momentum + v * (1 - momentum)
        memory.index_copy_(0, y, pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5)))

    def contrast_loss(x):
        m, pn = x.size(1) - 1, 1 / float(n_data)
        log_d1 = torch.div(x.select(1, 0), x.select(1, 0).add(m * pn + 1e-7)).log_()
        p_neg = x.narrow(1, 1, m)
        log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + 1e-7)).log_()
        return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / batch
    return (contrast_loss(out_v1) + contrast_loss(out_v2)).item(), z_v1, z_v2


def test_memory_and_loss_follow_repdistiller_over_two_batches():
    """Z from the first batch and kept; scores against the banks before this batch's update; the update itself."""
    torch.manual_seed(0)
    num_samples, dim, k, temperature, momentum = 40, 8, 6, 0.07, 0.5
    memory = ContrastMemory(num_samples, dim, temperature, momentum, seed=3)
    theirs = [memory.student.clone(), memory.teacher.clone()]  # memory_v1: the student's bank, memory_v2: the teacher's
    z = (-1.0, -1.0)
    for indices in (torch.tensor([3, 17, 25, 8]), torch.tensor([0, 17, 39, 4])):
        student = torch.nn.functional.normalize(torch.randn(4, dim), dim=1)
        teacher = torch.nn.functional.normalize(torch.randn(4, dim), dim=1)
        negatives = torch.randint(0, num_samples, (4, k))
        expected, *z = repdistiller(student, teacher, indices, torch.cat([indices[:, None], negatives], 1), *theirs,
                                    temperature, momentum, z)
        student_p, teacher_p = memory(student, teacher, indices, negatives)
        assert (nce_loss(student_p, num_samples) + nce_loss(teacher_p, num_samples)).item() == pytest.approx(expected,
                                                                                                          rel=1e-5)
        assert memory.normalisers.tolist() == pytest.approx(z, rel=1e-5)
        assert torch.allclose(memory.student, theirs[0], atol=1e-6) and torch.allclose(memory.teacher, theirs[1], atol=1e-6)
    assert z[0] > 0 and z[1] > 0


def test_negatives_come_from_other_classes_uniformly_and_repeat_for_a_seed():
    sample_labels = torch.tensor([2, 0, 1, 2, 2, 0, 1, 1, 2, 0, 0, 2])  # classes of sizes 4, 3, 5
    negatives = Negatives(sample_labels, 3000, torch.device("cpu"))
    labels = torch.tensor([0, 1, 2])
    drawn = negatives.draw(labels, seed=5)
    assert drawn.shape == (3, 3000)
    for row, label in enumerate(labels.tolist()):
        others = (sample_labels != label).nonzero().flatten()
        assert (sample_labels[drawn[row]] != label).all()
        counts = torch.bincount(drawn[row], minlength=len(sample_labels))[others].float()
        assert (counts > 0).all()  # every image of another class can be drawn ...
        expected = 3000 / len(others)
        assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()  # ... each as often
    assert torch.equal(negatives.draw(labels, seed=5), drawn)
    assert not torch.equal(negatives.draw(labels, seed=6), drawn)


class _Args:
    feat_dim, nce_temperature, nce_momentum, seed = 16, 0.07, 0.5, 0


def test_only_the_student_anchored_half_trains_the_student():
    """The banks carry no gradient: the teacher-anchored NCE reaches the teacher's head alone; the student's
    half reaches the student and its head. The banks stay out of DDP's per-step broadcast."""
    from common.models import create_model
    torch.manual_seed(0)
    trainable = Trainable(create_model("resnet8", 10), _Args, 64, 32, num_samples=50)
    assert set(trainable._ddp_params_and_buffers_to_ignore) == {"memory.student", "memory.teacher", "memory.normalisers"}
    images, teacher_features, indices = torch.randn(4, 3, 8, 8), torch.randn(4, 32), torch.tensor([1, 7, 30, 49])
    _, student_embeddings, teacher_embeddings = trainable(images, teacher_features)
    student_p, teacher_p = trainable.memory(student_embeddings, teacher_embeddings, indices, torch.randint(0, 50, (4, 5)))
    nce_loss(teacher_p, 50).backward(retain_graph=True)
    assert trainable.embed_teacher.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any()
               for p in [*trainable.student.parameters(), *trainable.embed_student.parameters()])
    nce_loss(student_p, 50).backward()
    assert trainable.student.conv1.weight.grad.abs().sum() > 0
    assert trainable.embed_student.linear.weight.grad.abs().sum() > 0
    assert trainable(images).shape == (4, 10)  # evaluation: the logits alone


def _moved_rows(trainable, side, args):
    """How many rows of a saved bank differ from the run's initial bank (rebuilt from its seed); checks that
    those are unit vectors."""
    initial = ContrastMemory(len(trainable[f"memory.{side}"]), args["feat_dim"], 0.07, 0.5, args["seed"])
    bank = trainable[f"memory.{side}"]
    moved = (bank != getattr(initial, side)).any(1)
    assert torch.allclose(bank[moved].norm(dim=1), torch.ones(int(moved.sum())), atol=1e-5)
    return int(moved.sum())


def test_end_to_end_on_digits(tmp_path, make_teacher):
    teacher = make_teacher()
    weights = {"ce": 0.5, "crd": 2.0}
    result = run_script("kd_crd.py", "--teacher", teacher, "--model", "resnet8", *QUICK, "--nce-k", "100",
                        "--ce-weight", weights["ce"], "--crd-weight", weights["crd"], "--out-dir", tmp_path)
    run_dir, results, metrics = assert_run_outputs(result, tmp_path, teacher, "crd")
    assert {"losses/ce", "losses/crd", "losses/total"} <= tensorboard_tags(run_dir)
    (epoch,) = metrics
    # at the start each NCE half is about log(K + 1) + 1 (Z makes P about 1/N): 2 x 5.6 for K = 100
    assert 5 < epoch["loss_crd"] < 15
    assert epoch["train_loss"] == pytest.approx(weights["ce"] * epoch["loss_ce"] + weights["crd"] * epoch["loss_crd"],
                                                rel=1e-4)
    last = torch.load(run_dir / "last.pt", weights_only=False)
    trainable = last["trainable"]
    assert (trainable["memory.normalisers"] > 0).all()
    # one epoch of 1437 // 64 = 22 batches of 64: 1408 rows of each bank moved, all of them of unit norm
    assert len(trainable["memory.student"]) == 1437
    assert _moved_rows(trainable, "student", last["args"]) == _moved_rows(trainable, "teacher", last["args"]) == 22 * 64


@pytest.mark.parametrize("args,words", [
    (["--nce-k", "0"], ["--nce-k 0", "above 0"]),
    (["--nce-k", "1400"], ["--nce-k 1400", "outside the largest class"]),
    (["--nce-momentum", "1"], ["--nce-momentum 1.0", "[0, 1)"]),
    (["--nce-temperature", "0"], ["--nce-temperature 0.0", "above 0"]),
    (["--crd-weight", "-1"], ["--crd-weight -1.0", "0 or more"]),
])
def test_bad_method_flags_are_one_clear_line(tmp_path, make_teacher, args, words):
    result = run_script("kd_crd.py", "--teacher", make_teacher(), *QUICK, *args, "--out-dir", tmp_path, check=False)
    assert_user_error(result, *words)
    assert run_dirs(tmp_path) == []


# runs the real main under torchrun and saves what each rank's Trainable holds at the end
PER_RANK = """import os, sys, torch
import kd_crd
seen = {}
class Recorded(kd_crd.Trainable):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        seen["trainable"] = self
kd_crd.Trainable = Recorded
kd_crd.main(kd_crd.parse_args(sys.argv[2:]))
torch.save(seen["trainable"].state_dict(), os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
"""


def test_under_torchrun_both_ranks_hold_the_same_banks(tmp_path, make_teacher):
    script = tmp_path / "per_rank.py"
    script.write_text(PER_RANK)
    out = tmp_path / "runs"
    result = run_script(script, tmp_path, "--teacher", make_teacher(), "--model", "resnet8", *QUICK, "--nce-k", "100",
                        "--out-dir", out, nproc=2)
    run_dir, results = only_run(out)
    assert results["world_size"] == 2 and results["method"] == "crd" and result.stdout.count("FINAL") == 1
    (epoch,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epoch["train_loss"] == pytest.approx(epoch["loss_ce"] + 0.8 * epoch["loss_crd"], rel=1e-4)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key, value in ranks[0].items():  # banks and Z as well as the weights
        if "running_" not in key and "num_batches" not in key:  # BatchNorm: each rank's own last batch on top
            assert torch.equal(value, ranks[1][key]), key
    last = torch.load(run_dir / "last.pt", weights_only=False)
    for key, value in last["trainable"].items():
        assert torch.equal(value, ranks[0][key]), key
    # 22 steps of 32 images on each rank: every rank moved the rows of both (704 if each kept its own)
    assert _moved_rows(ranks[1], "student", last["args"]) == _moved_rows(ranks[1], "teacher", last["args"]) == 2 * 22 * 32
