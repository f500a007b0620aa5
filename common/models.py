"""Model registry and stage outputs: `create_model(name, num_classes, pretrained)` builds any registered network;
`with_stages(model, name)` wraps it, sharing its parameters, so that its forward returns `(logits, features)`:
`features[0]` is the stem output and `features[k]` the output of stage k (it reads `features[k - 1]`)."""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import UserError


class Chain(nn.Module):
    """Forward runs the children in the order they are registered, flattening the input of the head `fc`."""

    def forward(self, x):
        for name, module in self.named_children():
            x = module(torch.flatten(x, 1) if name == "fc" else x)
        return x


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


class CifarResNet(Chain):
    """3x3 stem, no max-pool, three stages of (depth - 2) / 6 basic blocks each. Seed 001's code (hankyul2/
    KnowledgeDistillation src/resnet_32.py): a 7x7 stem at padding 1 (28/14/7 maps at 32x32), PyTorch's default
    fc bias: `stem_kernel=7, zero_fc_bias=False`."""

    def __init__(self, depth, widths, num_classes, zero_init_residual=False, stem_kernel=3, zero_fc_bias=True):
        super().__init__()
        assert (depth - 2) % 6 == 0, depth
        self.conv1 = nn.Conv2d(3, widths[0], stem_kernel, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1, self.layer2, self.layer3 = _three_stages(CifarBasicBlock, widths, (depth - 2) // 6)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():  # the seed's init: kaiming for conv, xavier for linear
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if zero_fc_bias:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, CifarBasicBlock) and zero_init_residual:
                # each block starts as the identity (Goyal et al. 2017); seed 001 and RepDistiller do not
                nn.init.zeros_(m.bn2.weight)


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


class WideResNet(Chain):
    def __init__(self, depth, widen, num_classes):
        super().__init__()
        assert (depth - 4) % 6 == 0, depth
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1, self.block2, self.block3 = _three_stages(WideBlock, widths, (depth - 4) // 6)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# ---------------------------------------------------------------- the stage-wise study (seed 004, IvLabs)
class AdaptiveConcatPool2d(nn.Module):
    """fastai's: max pool and average pool to 1x1, concatenated (max first)."""

    def forward(self, x):
        return torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], 1)


def seed004_resnet(layers, num_classes, teacher_head=False, **kwargs):
    """torchvision's BasicBlock ResNet with seed 004's fastai-style heads (docs/kd_stagewise.md): the students'
    (models/custom_resnet.py) with default init, the teacher's (cnn_learner's create_head) with kaiming-normal
    Linear weights and zero biases. The stem ReLU, before the max-pool, is the first feature map (`relu`)."""
    from torchvision.models.resnet import BasicBlock, ResNet
    model = ResNet(BasicBlock, layers, num_classes=num_classes, **kwargs)
    model.avgpool = AdaptiveConcatPool2d()  # torchvision's forward: avgpool -> flatten -> fc
    if not teacher_head:
        model.fc = nn.Sequential(nn.Linear(1024, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes))
        return model
    model.fc = nn.Sequential(nn.BatchNorm1d(1024), nn.Dropout(0.25), nn.Linear(1024, 512), nn.ReLU(inplace=True),
                             nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, num_classes))
    for m in model.fc:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def conv_layer(ni, nf, kernel=3, stride=1):
    """fastai v1's conv_layer: conv (no bias, kaiming-normal fan-in) -> ReLU -> BatchNorm (after the ReLU)."""
    conv = nn.Conv2d(ni, nf, kernel, stride, (kernel - 1) // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.BatchNorm2d(nf))


class ConvResBlock(nn.Module):
    """The archived code's ResBlock: x + conv_layer(x), one conv_layer (not fastai's two-layer res_block)."""

    def __init__(self, nf):
        super().__init__()
        self.conv1 = conv_layer(nf, nf)

    def forward(self, x):
        return x + self.conv1(x)


class Seed004ConvNet(Chain):
    """The archived "medium", "small" and "smallest" students (496c508 code/models/*_model.py), as
    docs/kd_stagewise.md describes them; no activation between the two Linears, as in the code."""

    def __init__(self, widths, residual, hidden, num_classes):
        super().__init__()
        self.stem = conv_layer(3, 64, 7, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        ins = [64] + list(widths[:-1])
        for index, (ni, nf) in enumerate(zip(ins, widths), start=1):
            first = conv_layer(ni, nf, stride=1 if residual and index == 1 else 2)
            self.add_module(f"layer{index}", nn.Sequential(first, ConvResBlock(nf)) if residual else first)
        self.pool = AdaptiveConcatPool2d()
        self.fc = nn.Sequential(nn.Linear(2 * widths[-1], hidden), nn.Linear(hidden, num_classes))


class Seed004PlainNet(Chain):
    """The archived "5fm" student (496c508 archive/models/5fm.py): five 3x3 convs (bias, default init), each
    followed by a 2x2 max-pool, no BatchNorm nor activation, then two Linears. The seed feeds 224x224 images;
    the adaptive pool to 7x7, the identity there, lets other sizes through."""

    def __init__(self, num_classes):
        super().__init__()
        widths = [3, 64, 64, 128, 256, 512]
        names = ["stem", "layer1", "layer2", "layer3", "layer4"]
        for name, ni, nf in zip(names, widths[:-1], widths[1:]):
            self.add_module(name, nn.Sequential(nn.Conv2d(ni, nf, 3, 1, 1), nn.MaxPool2d(2, 2)))
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.fc = nn.Sequential(nn.Linear(512 * 7 * 7, 512), nn.Linear(512, num_classes))


# ---------------------------------------------------------------- registry: name -> build(num_classes=..., **kwargs)
def torchvision_model(name, **kwargs):
    """torchvision is imported on first use: a run on CIFAR networks needs none of it (0.5-1 s of start-up)."""
    import torchvision
    return getattr(torchvision.models, name)(weights=None, **kwargs)


_CIFAR, _CIFAR_X4 = (16, 16, 32, 64), (32, 64, 128, 256)
CIFAR_MODELS = {
    **{f"resnet{d}": partial(CifarResNet, d, _CIFAR) for d in (8, 14, 20, 32, 44, 56, 110)},
    **{f"resnet{d}x4": partial(CifarResNet, d, _CIFAR_X4) for d in (8, 32)},
    # seed 001's networks as its code builds them (7x7 stem at stride 1, padding 1; default fc bias)
    **{f"resnet{d}_7x7": partial(CifarResNet, d, _CIFAR, stem_kernel=7, zero_fc_bias=False) for d in (20, 110)},
    **{f"wrn_{d}_2": partial(WideResNet, d, 2) for d in (16, 40)},
}
_TORCHVISION = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet_b0",
                *(f"shufflenet_v2_x{width}" for width in ("0_5", "1_0", "1_5", "2_0"))]
IMAGENET_MODELS = {
    **{name: partial(torchvision_model, name) for name in _TORCHVISION},
    # seed 004 ("sw", the stage-wise study): its students with their MLP head, its fastai ResNet-34 teacher
    **{f"sw_resnet{depth}": partial(seed004_resnet, layers) for depth, layers in {10: [1, 1, 1, 1], 14: [1, 1, 2, 2],
       18: [2, 2, 2, 2], 20: [2, 2, 3, 2], 26: [3, 3, 3, 3], 34: [3, 4, 6, 3]}.items()},
    "fastai_resnet34": partial(seed004_resnet, [3, 4, 6, 3], teacher_head=True),
    # the archived students (496c508): 64-64-128-256-512, 64-64-128-256 with residuals, 64-128-256-512 without,
    # and five plain convs 64-64-128-256-512
    "sw_medium": partial(Seed004ConvNet, (64, 128, 256, 512), True, 256),
    "sw_small": partial(Seed004ConvNet, (64, 128, 256), True, 128),
    "sw_smallest": partial(Seed004ConvNet, (128, 256, 512), False, 256),
    "sw_plain5": Seed004PlainNet,
}
# the torchvision network whose ImageNet weights `pretrained` loads: the whole of it, or the body of seed 004's
PRETRAINED = {**{name: name for name in _TORCHVISION},
              "sw_resnet18": "resnet18", "sw_resnet34": "resnet34", "fastai_resnet34": "resnet34"}
MODEL_NAMES = sorted(CIFAR_MODELS) + sorted(IMAGENET_MODELS)
# ResNets whose last BatchNorm of each block can start at zero (--zero-init-residual)
ZERO_INIT_MODELS = [name for name in MODEL_NAMES if name.startswith(("resnet", "sw_resnet", "fastai_resnet"))]

# Graph nodes whose outputs are the stem output and each stage's output, in order.
_RESNET_NODES = ["maxpool", "layer1", "layer2", "layer3", "layer4"]
STAGE_NODES = {
    **{name: ["relu", "layer1", "layer2", "layer3"] for name in CIFAR_MODELS if name.startswith("resnet")},
    **{name: ["conv1", "block1", "block2", "block3"] for name in CIFAR_MODELS if name.startswith("wrn")},
    **{name: _RESNET_NODES for name in IMAGENET_MODELS if name.startswith("resnet")},
    # seed 004 taps the stem after its ReLU (its BatchNorm for the conv_layer nets), before the max-pool
    **{name: ["relu", *_RESNET_NODES[1:]] for name in IMAGENET_MODELS if name.startswith(("sw_resnet", "fastai"))},
    "sw_medium": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "sw_plain5": ["stem", "layer1", "layer2", "layer3", "layer4"],  # each after its max-pool, as the seed taps them
    "sw_small": ["stem", "layer1", "layer2", "layer3"],
    "sw_smallest": ["stem", "layer1", "layer2", "layer3"],  # 28x28, 14x14, 7x7 at 224: the teacher's layer2..4
    "mobilenet_v2": ["features.1", "features.3", "features.6", "features.13", "features.17"],
    "efficientnet_b0": ["features.1", "features.2", "features.3", "features.5", "features.7"],
    **{name: ["maxpool", "stage2", "stage3", "stage4"] for name in IMAGENET_MODELS if name.startswith("shufflenet")},
}


def create_model(name, num_classes, pretrained=False, zero_init_residual=False):
    """`zero_init_residual`: each residual block starts as the identity (Goyal et al. 2017). Off by default, as in
    seed 001, RepDistiller and torchvision; ResNets only (a WRN's pre-activation block ends in a convolution)."""
    if zero_init_residual and name not in ZERO_INIT_MODELS:
        raise UserError(f"--zero-init-residual applies to ResNets only, not {name}")
    build = CIFAR_MODELS.get(name, IMAGENET_MODELS.get(name))
    if build is None:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(MODEL_NAMES)}")
    if not pretrained:
        return build(num_classes=num_classes, **({"zero_init_residual": True} if zero_init_residual else {}))
    if name not in PRETRAINED:  # the CIFAR networks and seed 004's archived students
        raise UserError(f"no ImageNet weights exist for {name}; train it from scratch")
    if zero_init_residual:
        raise UserError("--zero-init-residual is an initialisation: it cannot go with --pretrained weights")
    source = PRETRAINED[name]
    model = build() if source == name else build(num_classes=num_classes)  # torchvision's: ImageNet's 1000 classes
    import torchvision
    try:
        state = torchvision.models.get_model_weights(source).IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as err:  # torch.hub raises URLError/OSError/RuntimeError depending on where it fails
        raise UserError(
            f"could not load torchvision's ImageNet weights for {source} ({type(err).__name__}: {err}); "
            "they are downloaded on first use: run once with network access, or put the file in "
            f"{torch.hub.get_dir()}/checkpoints") from None
    if source != name:  # seed 004's: the body only, its head stays fresh
        body = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing = model.load_state_dict(body, strict=False).missing_keys
        assert all(key.startswith("fc.") for key in missing), missing
        return model
    model.load_state_dict(state)
    if num_classes != 1000:  # keep the pretrained body, new classifier (CUB-200 transfer)
        if isinstance(getattr(model, "fc", None), nn.Linear):
            model.fc = nn.Linear(model.fc.in_features, num_classes)
        else:  # mobilenet_v2 / efficientnet: Sequential(Dropout, Linear)
            model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


class StageModel(nn.Module):
    """`forward(images) -> (logits, [stem, stage1, ..., stageK])`, sharing `model`'s parameters."""

    def __init__(self, model, name):
        super().__init__()
        from torchvision.models import feature_extraction
        self.stage_nodes = STAGE_NODES[name]
        self.logits_node = feature_extraction.get_graph_node_names(model)[0][-1]
        self.body = feature_extraction.create_feature_extractor(model, self.stage_nodes + [self.logits_node])

    def forward(self, images):
        out = self.body(images)
        return out[self.logits_node], [out[node] for node in self.stage_nodes]


with_stages = StageModel


@torch.no_grad()
def stage_shapes(model, name, image_shape):
    """Per-stage (C, H, W) of the stem and each stage output for one input of `image_shape` (C, H, W)."""
    was_training = model.training
    model.eval()
    _, features = with_stages(model, name)(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    model.train(was_training)
    return [tuple(f.shape[1:]) for f in features]


def stage_modules(model, name):
    """The modules of the stem (index 0), of each stage k (1..K) and of the head (K + 1): a module belongs to the
    `STAGE_NODES` node it sits under, else to the next one registered after it (else the head); containers
    spanning several groups (the model itself, `features`) are left out."""
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
