"""Tests for the model registry, normalisation wrapper and checkpoint loading."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate.core.models import (
    MODELS,
    CheckpointError,
    Normalize,
    Normalized,
    build_model,
    load_checkpoint,
    register_model,
)

# Extra builder kwargs for registered models whose builder needs them.
_EXTRA: dict[str, dict] = {"wide_resnet": {"depth": 10, "widen_factor": 1}}
_SLOW = {"wrn70_16"}  # ~267M params: building it alone takes seconds on CPU


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def wrn34_10() -> nn.Module:
    # Shared: WRN-34-10 is the only expensive model in the fast set, build it once.
    torch.manual_seed(0)
    return build_model("wrn34_10", num_classes=10).eval()


@pytest.fixture
def small() -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=10, in_channels=1, width=8)


class _Payload:
    """Arbitrary object: unpickling it must be refused, not executed."""


# ------------------------------------------------------------------------------ registry


def test_registry_has_all_architectures() -> None:
    expected = {
        "small_cnn",
        "resnet18",
        "mobilenet_v2",
        "resnet56",
        "wide_resnet",
        "wrn34_10",
        "wrn22_6",
        "wrn70_16",
    }
    assert expected <= set(MODELS)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet18") as info:
        build_model("resnet1000", num_classes=10)
    assert "resnet1000" in str(info.value)


def test_register_duplicate_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18")(lambda **kw: nn.Identity())


# ------------------------------------------------------------------------------ architectures


def test_param_counts() -> None:
    torch.manual_seed(0)
    assert _n_params(build_model("resnet18", num_classes=10)) == 11_173_962
    assert round(_n_params(build_model("resnet56", num_classes=10)) / 1e6, 2) == 0.86
    # kuangliu/RSLAD MobileNetV2 (1x1 conv shortcuts, expand conv even for t=1): 2.30M, not
    # torchvision's 2.24M; the layout is what lets RSLAD-style checkpoints load by key.
    assert _n_params(build_model("mobilenet_v2", num_classes=10)) == 2_296_922


def test_wrn34_10_layout_and_forward_params(wrn34_10: nn.Module) -> None:
    keys = wrn34_10.state_dict().keys()
    assert any(k.startswith("sub_block1.") for k in keys)
    assert {
        "conv1.weight",
        "bn1.weight",
        "fc.weight",
        "block1.layer.0.convShortcut.weight",
        "block2.layer.0.bn1.running_mean",
        "block3.layer.4.conv2.weight",
    } <= set(keys)
    used = _n_params(wrn34_10) - _n_params(wrn34_10.sub_block1)
    assert round(used / 1e6, 1) == 46.2


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in sorted(MODELS)],
)
def test_forward_shape(name: str, wrn34_10: nn.Module) -> None:
    torch.manual_seed(0)
    model = (
        wrn34_10 if name == "wrn34_10" else build_model(name, num_classes=7, **_EXTRA.get(name, {}))
    )
    n_out = 10 if name == "wrn34_10" else 7
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, n_out)
    assert torch.isfinite(out).all()


def test_wrn_sub_block1_unused_in_forward() -> None:
    torch.manual_seed(0)
    model = build_model("wide_resnet", num_classes=3, depth=10, widen_factor=1)
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is None for p in model.sub_block1.parameters())
    assert all(p.grad is not None for p in model.block1.parameters())


def test_in_channels_one() -> None:
    torch.manual_seed(0)
    for name in ("resnet18", "resnet56", "mobilenet_v2"):
        model = build_model(name, num_classes=4, in_channels=1).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 1, 16, 16)).shape == (1, 4)


def test_small_cnn_trains_on_8x8(small: nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 1, 8, 8)
    y = torch.randint(0, 10, (32,))
    assert small(x[:2]).shape == (2, 10)
    small.train()
    first = None
    # Hand-written SGD: constructing a torch.optim optimiser imports torch._dynamo (~2.5 s).
    for _ in range(40):
        loss = nn.functional.cross_entropy(small(x), y)
        first = loss.item() if first is None else first
        small.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in small.parameters():
                p -= 0.5 * p.grad
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in small.parameters())
    assert loss.item() < 0.5 * first  # memorises a tiny batch: gradients flow through all layers


# ------------------------------------------------------------------------------ normalisation


def test_normalized_matches_manual_normalisation() -> None:
    torch.manual_seed(0)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    wrapped = build_model("resnet56", num_classes=10, normalize=(mean, std)).eval()
    assert isinstance(wrapped, Normalized) and isinstance(wrapped.normalize, Normalize)
    x = torch.rand(2, 3, 32, 32)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), wrapped.net(manual))
    assert wrapped.normalize.mean.shape == (1, 3, 1, 1)
    # Statistics are config, not weights: the wrapper's state dict is the net's, prefixed.
    assert set(wrapped.state_dict()) == {f"1.{k}" for k in wrapped.net.state_dict()}


def test_normalize_channel_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="channel"):
        build_model("small_cnn", num_classes=10, in_channels=1, normalize=((0.5, 0.5), (1, 1)))


# ------------------------------------------------------------------------------ checkpoints


def _fresh_small() -> nn.Module:
    torch.manual_seed(1)  # different init from the `small` fixture
    return build_model("small_cnn", num_classes=10, in_channels=1, width=8)


@pytest.mark.parametrize("layout", ["plain", "model", "state_dict", "net", "module_prefix"])
def test_load_round_trip(tmp_path: Path, small: nn.Module, layout: str) -> None:
    sd = small.state_dict()
    payload = {
        "plain": sd,
        "model": {"model": sd, "epoch": 3},
        "state_dict": {"state_dict": sd},
        "net": {"net": sd, "acc": 0.5},
        "module_prefix": OrderedDict((f"module.{k}", v) for k, v in sd.items()),
    }[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    target = _fresh_small()
    assert not _same_weights(target, small)
    assert load_checkpoint(target, path) is target
    assert _same_weights(target, small)


def test_wrapper_loads_inner_and_wrapper_checkpoints(tmp_path: Path, small: nn.Module) -> None:
    norm = ((0.5,), (0.25,))
    inner_path, wrap_path = tmp_path / "inner.pt", tmp_path / "wrapped.pt"
    torch.save(small.state_dict(), inner_path)
    torch.save(Normalized(Normalize(*norm), small).state_dict(), wrap_path)
    for path in (inner_path, wrap_path):
        torch.manual_seed(2)
        wrapped = build_model("small_cnn", num_classes=10, in_channels=1, width=8, normalize=norm)
        load_checkpoint(wrapped, path)
        assert _same_weights(wrapped.net, small)


def test_missing_bn_counters_are_tolerated(tmp_path: Path, small: nn.Module) -> None:
    # Pre-0.4.1 checkpoints (e.g. TRADES) carry no num_batches_tracked buffers.
    sd = {k: v for k, v in small.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pt")
    target = load_checkpoint(_fresh_small(), tmp_path / "old.pt")
    assert torch.equal(target.conv1.weight, small.conv1.weight)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "teacher.pt"
    with pytest.raises(CheckpointError, match="teacher checkpoint not found") as info:
        load_checkpoint(_fresh_small(), path)
    assert str(path) in str(info.value)


def test_wrong_architecture_is_one_line_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "resnet56.pt"
    torch.save(build_model("resnet56", num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_model("small_cnn", num_classes=10), path)
    msg = str(info.value)
    assert str(path) in msg and "SmallCNN" in msg and "\n" not in msg
    assert "missing keys" in msg and "unexpected keys" in msg
    assert msg.count("layer") <= 3  # at most 3 unexpected keys listed (all resnet56 layer*)
    assert len(msg) < 600


def test_shape_mismatch_is_reported(tmp_path: Path, small: nn.Module) -> None:
    path = tmp_path / "w16.pt"
    torch.manual_seed(0)
    torch.save(build_model("small_cnn", num_classes=10, in_channels=1, width=16).state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatch") as info:
        load_checkpoint(small, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_arbitrary_pickle_is_refused(tmp_path: Path, small: nn.Module) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": small.state_dict(), "obj": _Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_fresh_small(), path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_non_state_dict_and_garbage_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"epoch": 3, "acc": 0.9}, tmp_path / "meta.pt")
    for name in ("junk.pt", "meta.pt"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(_fresh_small(), tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


class _Touch:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (__import__("os").system, (f"touch {self.target}",))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    torch.save({"model": _Touch(tmp_path / "PWNED")}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_fresh_small(), path)
    msg = str(info.value)
    assert str(path) in msg and "posix.system" in msg and "\n" not in msg
    assert "weights_only` set to `False" not in msg  # torch's advice is not passed on
    assert not (tmp_path / "PWNED").exists()


def test_truncated_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    torch.save(_fresh_small().state_dict(), path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint(_fresh_small(), path)
    assert str(path) in str(info.value)
