import pytest
import torch

from common import UserError
from common.models import CIFAR_MODELS, MODEL_NAMES, create_model, stage_shapes, with_stages


def params(model):
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize("name,num_classes,millions", [
    ("resnet20", 10, 0.27), ("resnet56", 10, 0.86), ("resnet110", 10, 1.73),  # He et al. 2016, table 6
    ("resnet8x4", 100, 1.23), ("resnet32x4", 100, 7.43),  # CRD / RepDistiller
    ("wrn_16_2", 100, 0.70), ("wrn_40_2", 100, 2.26),
    ("resnet18", 1000, 11.69), ("resnet34", 1000, 21.80), ("resnet50", 1000, 25.56),  # torchvision
    ("mobilenet_v2", 1000, 3.50), ("efficientnet_b0", 1000, 5.29), ("shufflenet_v2_x1_0", 1000, 2.28),
])
def test_parameter_counts_match_the_literature(name, num_classes, millions):
    assert params(create_model(name, num_classes)) == pytest.approx(millions, abs=0.015)


def test_stagewise_study_resnets_match_seed_004():
    # seed 004's table counts a 0.26 M larger fastai head; the bodies must match it, 10 classes
    seed_millions = {"resnet10": 5.171, "resnet14_imagenet": 11.072, "resnet18": 11.441,
                     "resnet20_imagenet": 12.622, "resnet26": 17.712, "resnet34": 21.550}
    for name, millions in seed_millions.items():
        assert params(create_model(name, 10)) == pytest.approx(millions - 0.26, abs=0.02), name


@pytest.mark.parametrize("name", ["resnet20", "resnet8x4", "wrn_16_2"])
def test_cifar_stage_outputs(name):
    model = create_model(name, 10)
    logits, features = with_stages(model, name)(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert [f.shape[-1] for f in features] == [32, 32, 16, 8]  # stem, then three stages
    widths = {"resnet20": [16, 16, 32, 64], "resnet8x4": [32, 64, 128, 256], "wrn_16_2": [16, 32, 64, 128]}
    assert [f.shape[1] for f in features] == widths[name]


@pytest.mark.parametrize("name", sorted(set(MODEL_NAMES) - set(CIFAR_MODELS)))
def test_imagenet_stage_outputs_halve_resolution(name):
    shapes = stage_shapes(create_model(name, 10), name, (3, 64, 64))
    sizes = [s[1] for s in shapes]
    assert sizes[0] in (32, 16) and sizes[-1] == 2 and sizes == sorted(sizes, reverse=True)


def test_stage_model_shares_parameters_and_matches_plain_forward():
    model = create_model("resnet20", 10).eval()
    staged = with_stages(model, "resnet20")
    images = torch.randn(4, 3, 32, 32)
    assert torch.allclose(staged(images)[0], model(images), atol=1e-5)
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # a change to the model shows through the wrapper
    assert torch.allclose(staged(images)[0], model(images), atol=1e-5)


def test_unknown_model_and_offline_pretrained_are_user_errors(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="unknown model 'resnet9000'"):
        create_model("resnet9000", 10)
    with pytest.raises(UserError, match="no ImageNet weights"):
        create_model("resnet20", 10, pretrained=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: torchvision has to download, and cannot
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network is unreachable")))
    with pytest.raises(UserError, match="could not load torchvision's ImageNet weights for resnet18"):
        create_model("resnet18", 1000, pretrained=True)
