"""Unit tests for the network zoo (lit_robust.nets). CPU only, small inputs: a few seconds in total."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonargparse import ArgumentParser
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.nets import MLP, Normalize, PreActResNet, PreActResNet18, SmallCNN, WideResNet

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2471, 0.2435, 0.2616]
MNIST_MEAN = [0.1307]
MNIST_STD = [0.3081]


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# Small, fast configurations of every net with the input shape (C, H, W) they expect and their
# per-channel normalisation constants. Built with a fixed seed so two calls give the same weights.
CASES: dict[str, tuple[Callable[..., nn.Module], tuple[int, int, int], list[float], list[float]]] = {
    "mlp": (lambda **kw: MLP(hidden=[32, 16], **kw), (1, 28, 28), MNIST_MEAN, MNIST_STD),
    "mlp_cifar": (lambda **kw: MLP(in_features=3072, hidden=[8], **kw), (3, 32, 32), CIFAR_MEAN, CIFAR_STD),
    "small_cnn": (
        lambda **kw: SmallCNN(channels=[16, 32], hidden=128, **kw),
        (1, 28, 28),
        MNIST_MEAN,
        MNIST_STD,
    ),
    "small_cnn_cifar": (
        lambda **kw: SmallCNN(in_channels=3, channels=[8, 8, 8], hidden=16, input_size=32, **kw),
        (3, 32, 32),
        CIFAR_MEAN,
        CIFAR_STD,
    ),
    "preact_resnet_small": (
        lambda **kw: PreActResNet(num_blocks=[1, 1], base_width=8, **kw),
        (3, 32, 32),
        CIFAR_MEAN,
        CIFAR_STD,
    ),
    "preact_resnet18": (lambda **kw: PreActResNet18(**kw), (3, 32, 32), CIFAR_MEAN, CIFAR_STD),
    "wrn_16_2": (lambda **kw: WideResNet(depth=16, widen=2, **kw), (3, 32, 32), CIFAR_MEAN, CIFAR_STD),
    "wrn_10_1_mnist": (
        lambda **kw: WideResNet(depth=10, widen=1, in_channels=1, **kw),
        (1, 28, 28),
        MNIST_MEAN,
        MNIST_STD,
    ),
}


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[name][0](**kwargs)


def batch(shape: tuple[int, ...], n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# Normalize
# ----------------------------------------------------------------------------------------------


def test_normalize_matches_hand_computation() -> None:
    norm = Normalize([0.5, 0.25, 0.0], [0.5, 2.0, 0.1])
    x = torch.tensor([0.0, 1.0, 0.5]).view(1, 3, 1, 1).expand(2, 3, 2, 2).clone()
    expected = torch.tensor([(0.0 - 0.5) / 0.5, (1.0 - 0.25) / 2.0, (0.5 - 0.0) / 0.1]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected.expand(2, 3, 2, 2))


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 4),
    data=st.data(),
)
def test_normalize_per_channel_property(channels: int, data: st.DataObject) -> None:
    mean = data.draw(st.lists(st.floats(-2, 2), min_size=channels, max_size=channels))
    std = data.draw(st.lists(st.floats(0.01, 5), min_size=channels, max_size=channels))
    x = batch((channels, 3, 2), n=2)
    out = Normalize(mean, std)(x)
    for c in range(channels):
        torch.testing.assert_close(out[:, c], (x[:, c] - mean[c]) / std[c])


def test_normalize_buffers_not_parameters_and_follow_dtype() -> None:
    norm = Normalize(CIFAR_MEAN, CIFAR_STD)
    assert list(norm.parameters()) == []
    assert set(norm.state_dict()) == {"mean", "std"}
    norm = norm.double()
    x = batch((3, 4, 4)).double()
    assert norm(x).dtype == torch.float64
    assert "mean=[0.4914, 0.4822, 0.4465]" in repr(norm)


def test_normalize_does_not_modify_input_and_supports_other_ranks() -> None:
    norm = Normalize([0.5, 0.5], [0.25, 0.5])
    x = batch((2, 4, 4))
    x_copy = x.clone()
    norm(x)
    assert torch.equal(x, x_copy)
    flat = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(norm(flat), torch.tensor([[2.0, 1.0]]))


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.5, 0.5], [0.5], "same length"),
        ([0.5], [0.0], "std must be > 0"),
        ([0.5], [-1.0], "std must be > 0"),
        ([], [], "must not be empty"),
        ([float("nan")], [1.0], "finite"),
        ("abc", [1.0], "list of floats"),
    ],
)
def test_normalize_invalid_args(mean, std, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Normalize(mean, std)


def test_normalize_channel_mismatch() -> None:
    with pytest.raises(ConfigError, match=re.escape("Normalize has 3 channel(s)")):
        Normalize(CIFAR_MEAN, CIFAR_STD)(batch((1, 4, 4)))


# ----------------------------------------------------------------------------------------------
# Shapes, parameter counts, architecture
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_output_shape(name: str) -> None:
    net = build(name).eval()
    shape = CASES[name][1]
    out = net(batch(shape, n=3))
    assert out.shape == (3, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_output_shape_num_classes() -> None:
    assert MLP(hidden=[4], num_classes=3)(batch((1, 28, 28))).shape == (2, 3)
    assert SmallCNN(channels=[4], hidden=4, num_classes=100)(batch((1, 28, 28))).shape == (2, 100)
    assert WideResNet(depth=10, widen=1, num_classes=7)(batch((3, 32, 32))).shape == (2, 7)
    net = PreActResNet([1], base_width=4, num_classes=5, in_channels=1)
    assert net(batch((1, 28, 28))).shape == (2, 5)
    assert net(batch((1, 64, 48))).shape == (2, 5)  # global average pool: any spatial size


def test_madry_cnn_param_count_and_layout() -> None:
    net = SmallCNN()
    assert n_params(net) == 3_274_634
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (5, 5), (2, 2)),
        (32, 64, (5, 5), (2, 2)),
    ]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(7 * 7 * 64, 1024), (1024, 10)]
    assert isinstance(net.normalize, nn.Identity)


def test_small_cnn_cheap_variant_param_count() -> None:
    # conv 1->16: 416, conv 16->32: 12,832, fc 1568->128: 200,832, fc 128->10: 1,290
    assert n_params(SmallCNN(channels=[16, 32], hidden=128)) == 215_370


def test_mlp_param_count() -> None:
    assert n_params(MLP()) == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert n_params(MLP(hidden=[])) == 7850  # softmax regression


def test_preact_resnet18_param_count_and_layout() -> None:
    net = PreActResNet18()
    assert n_params(net) == 11_172_170
    assert net.conv1.kernel_size == (3, 3) and net.conv1.out_channels == 64
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    widths, strides = [], []
    for i in range(1, 5):
        stage = getattr(net, f"layer{i}")
        assert len(stage) == 2
        widths.append(stage[0].conv1.out_channels)
        strides.append(stage[0].conv1.stride[0])
    assert widths == [64, 128, 256, 512]
    assert strides == [1, 2, 2, 2]
    assert net.linear.in_features == 512
    # Reference-compatible parameter names (e.g. Rice et al. checkpoints).
    keys = set(net.state_dict())
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "bn.weight", "linear.weight"} <= keys
    # Same parameters as the general class with the same configuration.
    assert n_params(PreActResNet([2, 2, 2, 2])) == 11_172_170


def test_wide_resnet_param_counts() -> None:
    assert n_params(WideResNet(depth=34, widen=10)) == 46_160_474
    assert n_params(WideResNet(depth=28, widen=10)) == 36_479_194
    assert n_params(WideResNet(depth=16, widen=2)) == 691_674


def test_wide_resnet_init() -> None:
    torch.manual_seed(0)
    net = WideResNet(depth=16, widen=4)
    conv = net.block2.layer[1].conv1  # 128 -> 128, 3x3
    expected_std = (2.0 / (3 * 3 * 128)) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.05
    assert abs(conv.weight.mean().item()) < 0.1 * expected_std
    assert torch.equal(net.bn1.weight, torch.ones_like(net.bn1.weight))
    assert torch.equal(net.bn1.bias, torch.zeros_like(net.bn1.bias))
    assert torch.equal(net.fc.bias, torch.zeros_like(net.fc.bias))
    keys = set(net.state_dict())
    assert {"conv1.weight", "block1.layer.0.convShortcut.weight", "bn1.weight", "fc.weight"} <= keys


# ----------------------------------------------------------------------------------------------
# Normalisation inside the nets
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_net_with_normalize_equals_net_on_normalized_input(name: str) -> None:
    _, shape, mean, std = CASES[name]
    plain = build(name).eval()
    normed = build(name, mean=mean, std=std).eval()
    assert isinstance(normed.normalize, Normalize)
    assert isinstance(plain.normalize, nn.Identity)
    missing, unexpected = normed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["normalize.mean", "normalize.std"] and not unexpected
    x = batch(shape, n=2)
    x_norm = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    torch.testing.assert_close(normed(x), plain(x_norm), rtol=1e-5, atol=1e-5)
    # ... and the first layer really is Normalize.
    assert next(iter(normed.children())) is normed.normalize


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (
            lambda: SmallCNN(mean=CIFAR_MEAN, std=CIFAR_STD),
            r"SmallCNN: mean has 3 value\(s\) .* in_channels=1",
        ),
        (lambda: PreActResNet18(mean=MNIST_MEAN, std=MNIST_STD), r"PreActResNet18: mean has 1 value"),
        (lambda: WideResNet(depth=10, widen=1, mean=CIFAR_MEAN, std=[0.2]), r"WideResNet: std has 1 value"),
        (lambda: WideResNet(depth=10, widen=1, mean=CIFAR_MEAN), "mean is set but std is not"),
        (lambda: MLP(std=[0.5]), "std is set but mean is not"),
        (lambda: MLP(mean=[0.5], std=[0.0]), "MLP: every std must be > 0"),
        (lambda: SmallCNN(mean=[0.5], std=[-0.1]), "SmallCNN: every std must be > 0"),
    ],
)
def test_invalid_normalization_args(factory: Callable[[], nn.Module], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        factory()


# ----------------------------------------------------------------------------------------------
# Usable by attacks: gradients, determinism, no in-place ops on the input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_input_gradient_finite_and_deterministic(name: str) -> None:
    _, shape, mean, std = CASES[name]
    net = build(name, mean=mean, std=std).eval()
    x = batch(shape, n=2)
    x_copy = x.clone()
    x.requires_grad_(True)
    loss = nn.functional.cross_entropy(net(x), torch.tensor([1, 7]))
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    assert torch.equal(x.detach(), x_copy)  # the input is not modified
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # deterministic in eval mode


def test_gradient_in_train_mode_does_not_touch_parameters_grad() -> None:
    net = build("wrn_10_1_mnist").train()
    x = batch((1, 28, 28), n=4).requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.isfinite(grad).all()
    assert all(p.grad is None for p in net.parameters())


def test_wide_resnet_dropout_train_vs_eval() -> None:
    net = WideResNet(depth=10, widen=1, dropout=0.5)
    x = batch((3, 32, 32), n=4)
    net.train()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(1)
    b = net(x)
    assert not torch.allclose(a, b)
    net.eval()
    torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3  # one per block: 1 block x 3 groups


def test_wide_resnet_no_dropout_module_when_zero() -> None:
    assert not any(isinstance(m, nn.Dropout) for m in WideResNet(depth=10, widen=1).modules())


# ----------------------------------------------------------------------------------------------
# Wrong inputs -> ConfigError with a readable message
# ----------------------------------------------------------------------------------------------


def test_mlp_wrong_feature_count() -> None:
    msg = (
        "MLP expects 784 input features per sample, got input of shape (3, 32, 32) = 3072 features: "
        "set model.net.init_args.in_features or use a convolutional net"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        MLP()(batch((3, 32, 32)))


def test_mlp_accepts_flat_input_and_rejects_vector() -> None:
    net = MLP(hidden=[8])
    assert net(torch.rand(5, 784)).shape == (5, 10)
    with pytest.raises(ConfigError, match="MLP expects a batch"):
        net(torch.rand(784))


def test_mlp_normalize_channel_mismatch() -> None:
    net = MLP(in_features=3072, hidden=[8], mean=MNIST_MEAN, std=MNIST_STD)
    with pytest.raises(ConfigError, match=re.escape("Normalize has 1 channel(s)")):
        net(batch((3, 32, 32)))


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("small_cnn", "SmallCNN"),
        ("small_cnn_cifar", "SmallCNN"),
        ("preact_resnet_small", "PreActResNet"),
        ("preact_resnet18", "PreActResNet18"),
        ("wrn_16_2", "WideResNet"),
        ("wrn_10_1_mnist", "WideResNet"),
    ],
)
def test_conv_nets_channel_mismatch(name: str, owner: str) -> None:
    _, (c, h, w), _, _ = CASES[name]
    wrong = 1 if c == 3 else 3
    net = build(name)
    expected = (
        f"{owner} expects {c} input channel(s), got input of shape (2, {wrong}, {h}, {w}) with {wrong} "
        f"channel(s) per sample ({wrong}, {h}, {w}): set model.net.init_args.in_channels={wrong}"
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        net(batch((wrong, h, w)))
    with pytest.raises(ConfigError, match=re.escape(f"{owner} expects a 4-D input batch (N, C, H, W)")):
        net(torch.rand(c, h, w))


def test_small_cnn_spatial_mismatch() -> None:
    net = SmallCNN(channels=[4, 4], hidden=8)
    with pytest.raises(
        ConfigError, match=re.escape("SmallCNN expects 28x28 inputs, got input of shape (2, 1, 32, 32)")
    ):
        net(batch((1, 32, 32)))
    with pytest.raises(ConfigError, match="input_size"):
        net(batch((1, 28, 27)))


# ----------------------------------------------------------------------------------------------
# Invalid constructor arguments
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: MLP(hidden=[256, 0]), re.escape("MLP.hidden[1] must be an integer >= 1, got 0")),
        (lambda: MLP(in_features=0), "MLP.in_features must be an integer >= 1, got 0"),
        (lambda: MLP(num_classes=0), "MLP.num_classes must be an integer >= 1"),
        (lambda: MLP(hidden=[2.5]), re.escape("MLP.hidden[0] must be an integer >= 1")),
        (lambda: MLP(hidden=64), "MLP.hidden must be a list of integers"),
        (lambda: MLP(in_features=True), "MLP.in_features must be an integer"),
        (lambda: SmallCNN(channels=[]), "SmallCNN.channels must be a non-empty list"),
        (lambda: SmallCNN(channels=[32, -1]), re.escape("SmallCNN.channels[1] must be an integer >= 1")),
        (lambda: SmallCNN(hidden=0), "SmallCNN.hidden must be an integer >= 1"),
        (lambda: SmallCNN(in_channels=0), "SmallCNN.in_channels must be an integer >= 1"),
        (lambda: SmallCNN(input_size=3), "SmallCNN: input_size must be >= 4"),
        (lambda: SmallCNN(input_size=28.0), "SmallCNN.input_size must be an integer"),
        (lambda: PreActResNet([]), "PreActResNet.num_blocks must be a non-empty list"),
        (lambda: PreActResNet([2, 0]), re.escape("PreActResNet.num_blocks[1] must be an integer >= 1")),
        (lambda: PreActResNet([2], base_width=0), "PreActResNet.base_width must be an integer >= 1"),
        (lambda: PreActResNet18(in_channels=0), "PreActResNet18.in_channels must be an integer >= 1"),
        (lambda: PreActResNet18(num_classes=-3), "PreActResNet18.num_classes must be an integer >= 1"),
        (lambda: WideResNet(depth=33), r"WideResNet: depth must satisfy \(depth - 4\) % 6 == 0.*got 33"),
        (lambda: WideResNet(depth=4), "WideResNet.depth must be an integer >= 10"),
        (lambda: WideResNet(widen=0), "WideResNet.widen must be an integer >= 1"),
        (lambda: WideResNet(dropout=1.0), r"WideResNet.dropout must be a finite number in \[0, 1\)"),
        (lambda: WideResNet(dropout=-0.1), r"WideResNet.dropout must be a finite number in \[0, 1\)"),
        (lambda: WideResNet(in_channels=0), "WideResNet.in_channels must be an integer >= 1"),
    ],
)
def test_invalid_constructor_args(factory: Callable[[], nn.Module], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        factory()


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        WideResNet(depth=33)


# ----------------------------------------------------------------------------------------------
# jsonargparse / LightningCLI
# ----------------------------------------------------------------------------------------------


def _instantiate_from_dict(spec: str) -> nn.Module:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--net", type=nn.Module)
    cfg = parser.parse_args(["--net", spec])
    return parser.instantiate(cfg).net


@pytest.mark.parametrize(
    ("spec", "cls", "shape"),
    [
        ('{"class_path": "lit_robust.nets.MLP", "init_args": {"hidden": [64]}}', MLP, (1, 28, 28)),
        (
            '{"class_path": "lit_robust.nets.SmallCNN", "init_args": {"channels": [4, 8], "hidden": 16,'
            ' "mean": [0.1307], "std": [0.3081]}}',
            SmallCNN,
            (1, 28, 28),
        ),
        (
            '{"class_path": "lit_robust.nets.PreActResNet", "init_args": {"num_blocks": [1, 1],'
            ' "base_width": 4}}',
            PreActResNet,
            (3, 32, 32),
        ),
        (
            '{"class_path": "lit_robust.nets.PreActResNet18", "init_args": {"num_classes": 3}}',
            PreActResNet18,
            None,
        ),
        (
            '{"class_path": "lit_robust.nets.WideResNet", "init_args": {"depth": 10, "widen": 1,'
            ' "dropout": 0.3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}',
            WideResNet,
            (3, 32, 32),
        ),
    ],
)
def test_jsonargparse_builds_nets(spec: str, cls: type, shape: tuple[int, int, int] | None) -> None:
    net = _instantiate_from_dict(spec)
    assert type(net) is cls
    if shape is not None:
        assert net.eval()(batch(shape)).shape[0] == 2


def test_jsonargparse_defaults_and_values() -> None:
    mlp = _instantiate_from_dict('{"class_path": "lit_robust.nets.MLP"}')
    assert mlp.hidden == [256, 256] and mlp.in_features == 784
    cnn = _instantiate_from_dict('{"class_path": "lit_robust.nets.SmallCNN"}')
    assert n_params(cnn) == 3_274_634
    wrn = _instantiate_from_dict(
        '{"class_path": "lit_robust.nets.WideResNet", "init_args": {"depth": 16, "widen": 2}}'
    )
    assert n_params(wrn) == 691_674
    prn = _instantiate_from_dict(
        '{"class_path": "lit_robust.nets.PreActResNet18", "init_args": {"in_channels": 1}}'
    )
    assert prn.in_channels == 1


def test_jsonargparse_help_shows_docstrings() -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(WideResNet, "net")
    help_text = " ".join(parser.format_help().split())  # line wrapping depends on the terminal width
    assert "Widening factor" in help_text
    assert "default: 34" in help_text
    parser = ArgumentParser()
    parser.add_class_arguments(MLP, "net")
    help_text = " ".join(parser.format_help().split())
    assert "Widths of the hidden layers" in help_text
    assert "256, 256" in help_text


def test_jsonargparse_rejects_bad_value_with_config_error() -> None:
    with pytest.raises(ConfigError, match="WideResNet: depth must satisfy"):
        _instantiate_from_dict('{"class_path": "lit_robust.nets.WideResNet", "init_args": {"depth": 20}}')
