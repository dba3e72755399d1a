"""RobustBench zoo teachers: checkpoints in RobustBench's model_dir layout, written here from
randomly initialised models of the zoo's architectures, load with the same outputs; unknown
names, missing files, failed downloads and unsafe pickles are one-line errors. No test touches
the network (the one download test replaces RobustBench's downloader)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from ablate.core import zoo
from ablate.core.errors import CheckpointError, ConfigError

SMALL = "Ding2020MMA"  # a WRN-28-4 (5.8M parameters): the zoo's smallest CIFAR-10 Linf model
TRADES = "Zhang2019Theoretically"  # the CIARD paper's robust teacher (WRN-34-10)


def write_checkpoint(model_dir: Path, name: str, state: object, dataset: str = "cifar10",
                     threat: str = "Linf") -> Path:
    path = model_dir / dataset / threat / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def random_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.build(name, "cifar10", "Linf").eval()


@pytest.mark.parametrize("name", [SMALL, TRADES])
def test_a_checkpoint_in_robustbench_layout_loads_with_identical_outputs(
        tmp_path: Path, name: str) -> None:
    net = random_model(name)
    write_checkpoint(tmp_path, name, net.state_dict())
    assert zoo.missing(tmp_path, name, "cifar10", "Linf") == []
    loaded = zoo.load(tmp_path, name, "cifar10", "Linf")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert not loaded.training


def test_robustbench_key_fixups_apply(tmp_path: Path) -> None:
    """A DataParallel checkpoint under 'state_dict' (as several zoo files are) loads too:
    RobustBench's own loader strips the prefixes."""
    net = random_model(SMALL, seed=1)
    wrapped = collections.OrderedDict((f"module.{k}", v) for k, v in net.state_dict().items())
    write_checkpoint(tmp_path, SMALL, {"state_dict": wrapped})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(zoo.load(tmp_path, SMALL, "cifar10", "Linf")(x), net(x))


def test_unknown_model_names_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown RobustBench model 'Zhang2019Theoretical' "
                       r"for cifar10 Linf \(\d+ known; close: Zhang2019Theoretically"):
        zoo.entry("Zhang2019Theoretical", "cifar10", "Linf")
    with pytest.raises(ConfigError, match=r"for cifar100 Linf \(\d+ known\)$"):
        zoo.entry("Nothing-like-it", "cifar100", "Linf")


def test_a_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    want = tmp_path / "cifar10" / "Linf" / f"{SMALL}.pt"
    assert zoo.missing(tmp_path, SMALL, "cifar10", "Linf") == [want]
    with pytest.raises(ConfigError, match=f"{SMALL} .*not found: looked for {want}"):
        zoo.load(tmp_path, SMALL, "cifar10", "Linf")


def test_a_failed_download_is_one_line_and_leaves_no_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, utils = zoo._zoo()

    def offline(gdrive_id: str, path: str) -> None:
        Path(path).write_bytes(b"partial")  # what an interrupted download leaves
        raise OSError("Failed to resolve 'drive.google.com'")

    monkeypatch.setattr(utils, "download_gdrive_new", offline)
    want = tmp_path / "cifar10" / "Linf" / f"{TRADES}.pt"
    with pytest.raises(ConfigError, match=f"{TRADES} \\(cifar10 Linf\\): download to {want} "
                       "failed: Failed to resolve") as info:
        zoo.download(tmp_path, TRADES, "cifar10", "Linf")
    assert "\n" not in str(info.value) and not list(want.parent.iterdir())

    def works(gdrive_id: str, path: str) -> None:
        torch.save(random_model(SMALL).state_dict(), path)

    monkeypatch.setattr(utils, "download_gdrive_new", works)
    zoo.download(tmp_path, SMALL, "cifar10", "Linf")
    assert zoo.missing(tmp_path, SMALL, "cifar10", "Linf") == []
    assert [p.name for p in want.parent.iterdir()] == [f"{SMALL}.pt"]


class Payload:  # stands for anything a weights-only unpickler must refuse
    pass


def test_a_checkpoint_that_needs_code_is_refused(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, SMALL, {"state_dict": Payload()})
    with pytest.raises(CheckpointError, match=f"{path}: not a weights-only checkpoint"):
        zoo.load(tmp_path, SMALL, "cifar10", "Linf")


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, SMALL, {"conv1.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=f"{SMALL}: its checkpoint does not fit"):
        zoo.load(tmp_path, SMALL, "cifar10", "Linf")
