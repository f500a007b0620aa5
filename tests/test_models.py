import pytest
import torch
import torchvision

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


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,exact", [
    # seed 004's table (5.171 / 11.072 / 11.441 / 12.622 / 17.712 / 21.550 M, 10 classes): body and MLP head
    ("sw_resnet10", 5_170_762), ("sw_resnet14", 11_072_074), ("sw_resnet18", 11_441_482),
    ("sw_resnet20", 12_622_154), ("sw_resnet26", 17_712_202), ("sw_resnet34", 21_549_642),
    ("fastai_resnet34", 21_817_674),  # the teacher, as seed 004's notebook prints it
    ("sw_plain5", 1_792 + 36_928 + 73_856 + 295_168 + 1_180_160 + 25_088 * 512 + 512 + 5_130),  # archived 5fm.py
    ("resnet20_7x7", 274_394), ("resnet110_7x7", 1_732_634),  # seed 001's code: 7x7 stem
])
def test_seed_models_have_the_seeds_exact_parameter_counts(name, exact):
    assert count(create_model(name, 10)) == exact


def test_seed_004_heads_and_initialisation():
    student, teacher = create_model("sw_resnet18", 10), create_model("fastai_resnet34", 10)
    assert [type(m).__name__ for m in student.fc] == ["Linear", "ReLU", "Linear"]
    assert [type(m).__name__ for m in teacher.fc] == ["BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d",
                                                      "Dropout", "Linear"]
    assert [m.p for m in teacher.fc if isinstance(m, torch.nn.Dropout)] == [0.25, 0.5]
    assert not any(torch.all(block.bn2.weight == 0) for block in student.layer1)  # no zero-init by default
    assert all(torch.all(block.bn2.weight == 0) for block in create_model("sw_resnet18", 10, zero_init_residual=True).layer1)
    images = torch.randn(2, 64, 3, 3)
    pooled = student.avgpool(images).flatten(1)  # fastai's AdaptiveConcatPool2d: max, then mean
    assert torch.equal(pooled, torch.cat([images.amax((2, 3)), images.mean((2, 3))], 1))


def test_seed_004_pretrained_loads_the_body_only(monkeypatch):
    resnet34 = torchvision.models.resnet34()
    monkeypatch.setattr(torchvision.models.ResNet34_Weights.IMAGENET1K_V1, "get_state_dict",
                        lambda *args, **kwargs: resnet34.state_dict(), raising=False)
    for name in ("sw_resnet34", "fastai_resnet34"):
        model = create_model(name, 10, pretrained=True)
        assert torch.equal(model.layer3[5].conv2.weight, resnet34.layer3[5].conv2.weight)
        assert torch.equal(model.bn1.running_var, resnet34.bn1.running_var)
        assert model.fc[-1].out_features == 10
    with pytest.raises(UserError, match="no ImageNet weights"):
        create_model("sw_resnet14", 10, pretrained=True)


def test_seed_004_archived_students():
    """496c508 code/models/{medium,small,smallest}_model.py: fastai conv_layer = conv -> ReLU -> BN,
    ResBlock = x + conv_layer(x), two Linears with no activation between them."""
    medium = create_model("sw_medium", 10)
    assert [type(m).__name__ for m in medium.stem] == ["Conv2d", "ReLU", "BatchNorm2d"]
    assert [type(m).__name__ for m in medium.layer2] == ["Sequential", "ConvResBlock"]
    assert [type(m).__name__ for m in medium.fc] == ["Linear", "Linear"]
    assert medium.layer1[0][0].stride == (1, 1) and medium.layer2[0][0].stride == (2, 2)
    assert count(create_model("sw_small", 10).fc) == 512 * 128 + 128 + 128 * 10 + 10
    smallest = create_model("sw_smallest", 10)
    assert [type(m).__name__ for m in smallest.layer1] == ["Conv2d", "ReLU", "BatchNorm2d"]  # no residual
    plain = create_model("sw_plain5", 10)  # conv -> max-pool, no BatchNorm, no activation
    assert [type(m).__name__ for m in plain.modules()].count("ReLU") == 0 and plain.stem[0].bias is not None


@pytest.mark.parametrize("name,sizes,widths", [
    (name, [112, 56, 28, 14, 7], [64, 64, 128, 256, 512])
    for name in ("sw_resnet10", "sw_resnet14", "sw_resnet18", "sw_resnet20", "sw_resnet26", "sw_resnet34",
                 "fastai_resnet34", "sw_medium", "sw_plain5")] + [
    ("sw_small", [112, 56, 28, 14], [64, 64, 128, 256]),
    ("sw_smallest", [112, 28, 14, 7], [64, 128, 256, 512]),  # the teacher's relu, layer2..4 (seed: 4 maps)
])
def test_seed_004_feature_maps_at_224(name, sizes, widths):
    """The stem after its ReLU (BatchNorm for the conv_layer nets, max-pool for sw_plain5), then each stage."""
    shapes = stage_shapes(create_model(name, 10), name, (3, 224, 224))
    assert [s[1] for s in shapes] == [s[2] for s in shapes] == sizes and [s[0] for s in shapes] == widths


def test_seed_001_cifar_resnets_have_a_7x7_stem_and_28_pixel_maps():
    model = create_model("resnet20_7x7", 10)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.padding == (1, 1)
    assert not torch.all(model.fc.bias == 0)  # PyTorch's default bias, as in seed 001
    assert [s[1] for s in stage_shapes(model, "resnet20_7x7", (3, 32, 32))] == [28, 28, 14, 7]


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
    assert sizes[0] in (32, 16) and sizes[-1] == (4 if name == "sw_small" else 2) and sizes == sorted(sizes, reverse=True)


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
