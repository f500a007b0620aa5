"""Model registry and stage outputs.

`create_model(name, num_classes, pretrained)` builds any registered network.
`with_stages(model, name)` wraps it so that its forward returns `(logits, features)`,
where `features[0]` is the stem output and `features[k]` the output of stage k: stage k
reads `features[k - 1]` and writes `features[k]`. The wrapper shares the model's
parameters, so training it trains the model, and the model is what gets saved.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models import feature_extraction
from torchvision.models.resnet import BasicBlock, ResNet

from common import UserError


# ---------------------------------------------------------------- CIFAR ResNets (He et al. 2016)
class CifarBasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:  # projection shortcut, as in the CRD/RepDistiller code
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _three_stages(block, widths, blocks):
    """Stages of `blocks` blocks at strides 1, 2, 2, from the stem's widths[0] channels to widths[1:]."""
    stages, in_planes = [], widths[0]
    for planes, stride in zip(widths[1:], (1, 2, 2)):
        stages.append(nn.Sequential(*[block(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                                      for i in range(blocks)]))
        in_planes = planes
    return stages


class CifarResNet(nn.Module):
    """3x3 stem, no max-pool, three stages of (depth - 2) / 6 basic blocks each."""

    def __init__(self, depth, widths, num_classes):
        super().__init__()
        assert (depth - 2) % 6 == 0, depth
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1, self.layer2, self.layer3 = _three_stages(CifarBasicBlock, widths, blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():  # the seed's init: kaiming for conv, xavier for linear
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, CifarBasicBlock):
                # each block starts as the identity (Goyal et al. 2017): without this, deep nets
                # (resnet56/110) grow rare huge activations that destabilise training and FSP
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- Wide ResNets (Zagoruyko & Komodakis 2016)
class WideBlock(nn.Module):
    """Pre-activation block."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    def __init__(self, depth, widen, num_classes):
        super().__init__()
        assert (depth - 4) % 6 == 0, depth
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1, self.block2, self.block3 = _three_stages(WideBlock, widths, blocks)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- registry
def _cifar_resnet(depth, widths=(16, 16, 32, 64)):
    return lambda num_classes: CifarResNet(depth, widths, num_classes)


def _torchvision(fn_name, weights):
    def build(num_classes, pretrained=False):
        fn = getattr(torchvision.models, fn_name)
        if not pretrained:
            return fn(weights=None, num_classes=num_classes)
        try:
            model = fn(weights=weights)
        except Exception as err:  # torch.hub raises URLError/OSError/RuntimeError depending on where it fails
            raise UserError(
                f"could not load torchvision's ImageNet weights for {fn_name} ({type(err).__name__}: {err}); "
                "they are downloaded on first use: run once with network access, or put the file in "
                f"{torch.hub.get_dir()}/checkpoints") from None
        if num_classes != 1000:  # keep the pretrained body, new classifier (CUB-200 transfer)
            _replace_classifier(model, num_classes)
        return model
    return build


def _replace_classifier(model, num_classes):
    if isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:  # mobilenet_v2 / efficientnet: Sequential(Dropout, Linear)
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)


def _small_resnet(layers):
    """BasicBlock ResNets of the stage-wise study (seed 004), from torchvision's ResNet class."""
    def build(num_classes, pretrained=False):
        if pretrained:
            raise UserError("no ImageNet weights exist for this stage-wise study model; train it from scratch")
        return ResNet(BasicBlock, layers, num_classes=num_classes)
    return build


CIFAR_MODELS = {
    **{f"resnet{d}": _cifar_resnet(d) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _cifar_resnet(8, (32, 64, 128, 256)),
    "resnet32x4": _cifar_resnet(32, (32, 64, 128, 256)),
    "wrn_16_2": lambda num_classes: WideResNet(16, 2, num_classes),
    "wrn_40_2": lambda num_classes: WideResNet(40, 2, num_classes),
}
W = torchvision.models
IMAGENET_MODELS = {
    "resnet10": _small_resnet([1, 1, 1, 1]),
    "resnet18": _torchvision("resnet18", W.ResNet18_Weights.IMAGENET1K_V1),
    "resnet26": _small_resnet([3, 3, 3, 3]),
    "resnet34": _torchvision("resnet34", W.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": _torchvision("resnet50", W.ResNet50_Weights.IMAGENET1K_V1),
    "mobilenet_v2": _torchvision("mobilenet_v2", W.MobileNet_V2_Weights.IMAGENET1K_V1),
    "efficientnet_b0": _torchvision("efficientnet_b0", W.EfficientNet_B0_Weights.IMAGENET1K_V1),
    "shufflenet_v2_x0_5": _torchvision("shufflenet_v2_x0_5", W.ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1),
    "shufflenet_v2_x1_0": _torchvision("shufflenet_v2_x1_0", W.ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1),
    "shufflenet_v2_x1_5": _torchvision("shufflenet_v2_x1_5", W.ShuffleNet_V2_X1_5_Weights.IMAGENET1K_V1),
    "shufflenet_v2_x2_0": _torchvision("shufflenet_v2_x2_0", W.ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1),
}
# The stage-wise study's ResNet-14 and ResNet-20 share their names with CIFAR networks of
# seed 001, which keep the plain names; the block counts match seed 004's parameter table.
IMAGENET_MODELS["resnet14_imagenet"] = _small_resnet([1, 1, 2, 2])
IMAGENET_MODELS["resnet20_imagenet"] = _small_resnet([2, 2, 3, 2])
MODEL_NAMES = sorted(CIFAR_MODELS) + sorted(IMAGENET_MODELS)

# Graph nodes whose outputs are the stem output and each stage's output, in order.
_RESNET_NODES = ["maxpool", "layer1", "layer2", "layer3", "layer4"]
STAGE_NODES = {
    **{name: ["relu", "layer1", "layer2", "layer3"] for name in CIFAR_MODELS if name.startswith("resnet")},
    "wrn_16_2": ["conv1", "block1", "block2", "block3"],
    "wrn_40_2": ["conv1", "block1", "block2", "block3"],
    **{name: _RESNET_NODES for name in IMAGENET_MODELS if name.startswith("resnet")},
    "mobilenet_v2": ["features.1", "features.3", "features.6", "features.13", "features.17"],
    "efficientnet_b0": ["features.1", "features.2", "features.3", "features.5", "features.7"],
    **{name: ["maxpool", "stage2", "stage3", "stage4"] for name in IMAGENET_MODELS if name.startswith("shufflenet")},
}


def create_model(name, num_classes, pretrained=False):
    if name in CIFAR_MODELS:
        if pretrained:
            raise UserError(f"{name} is a CIFAR network: there are no ImageNet weights for it")
        return CIFAR_MODELS[name](num_classes)
    if name in IMAGENET_MODELS:
        return IMAGENET_MODELS[name](num_classes, pretrained)
    raise UserError(f"unknown model '{name}'; choose one of: {', '.join(MODEL_NAMES)}")


class StageModel(nn.Module):
    """`forward(images) -> (logits, [stem, stage1, ..., stageK])`, sharing `model`'s parameters."""

    def __init__(self, model, name):
        super().__init__()
        self.stage_nodes = STAGE_NODES[name]
        logits_node = feature_extraction.get_graph_node_names(model)[0][-1]
        self.body = feature_extraction.create_feature_extractor(model, self.stage_nodes + [logits_node])
        self.logits_node = logits_node

    def forward(self, images):
        out = self.body(images)
        return out[self.logits_node], [out[node] for node in self.stage_nodes]


def with_stages(model, name):
    return StageModel(model, name)


@torch.no_grad()
def stage_shapes(model, name, image_shape):
    """Per-stage (C, H, W) of the stem and each stage output for one input of `image_shape` (C, H, W)."""
    was_training = model.training
    model.eval()
    _, features = with_stages(model, name)(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    model.train(was_training)
    return [tuple(f.shape[1:]) for f in features]


def stage_modules(model, name):
    """Lists of the modules of the stem (index 0), of each stage k (1..K) and of the head (K + 1),
    from `STAGE_NODES` and the order in which `model` registers its modules: a module belongs to the
    stage node it sits under, else to the next node registered after it (the head when none is).
    Containers spanning several groups (the model itself, `features`) are left out."""
    nodes = STAGE_NODES[name]
    groups, seen = [[] for _ in range(len(nodes) + 1)], 0
    for module_name, module in model.named_modules():
        under = [i for i, node in enumerate(nodes) if module_name == node or module_name.startswith(f"{node}.")]
        if under:
            groups[under[0]].append(module)
            seen = max(seen, under[0] + 1)
        elif module_name and not any(node.startswith(f"{module_name}.") for node in nodes):
            groups[seen].append(module)
    assert seen == len(nodes), f"{name}: stage nodes {nodes} are not all modules"
    return groups
