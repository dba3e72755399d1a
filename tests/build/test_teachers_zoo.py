"""A RobustBench model as a teacher, through the config and the CLI: it trains a student,
`ablate teachers list` shows it, bad names and missing files exit 2 before anything starts, and
configs without one keep their hashes. Checkpoints are written here in RobustBench's layout
from randomly initialised zoo models; nothing touches the network."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from ablate.build import check_inputs, pending_downloads
from ablate.cli import main
from ablate.config import ExperimentConfig
from ablate.core.data import load_dataset
from tests.core.test_zoo import SMALL, random_model, write_checkpoint
from tests.helpers import TINY, run_bad, write


def zoo_config(model_dir: Path, name: str = SMALL, **teacher: Any) -> dict[str, Any]:
    """TINY on synthetic CIFAR-shaped data with a zoo robust teacher that ITT leaves alone."""
    cfg = copy.deepcopy(TINY)
    cfg["data"] = {"name": "synthetic"}
    cfg["teachers"]["robust"] = {"robustbench": name, "threat_model": "Linf",
                                 "model_dir": str(model_dir), "download": False, **teacher}
    cfg["itt"] = {"enabled": False}
    cfg["optim"] = {"epochs": 1, "lr": 0.05}
    cfg["attack"] = {"eps": 0.03, "step_size": 0.01, "steps": 1}
    return cfg


def test_teachers_without_the_zoo_dump_as_before() -> None:
    """No zoo key in the dump of a checkpoint or trained teacher: config hashes, teacher
    cache keys and resumable searches from before the zoo stay the same."""
    dump = ExperimentConfig.model_validate(TINY).model_dump(mode="json")["teachers"]
    assert set(dump["robust"]) == {"arch", "kwargs", "normalize", "checkpoint", "train"}
    zoo = ExperimentConfig.model_validate(zoo_config(Path("/m"))).model_dump(mode="json")
    assert zoo["teachers"]["robust"]["dataset"] == "cifar10"  # resolved from the data


def test_a_zoo_teacher_teaches_a_student(workdir: Path, capsys) -> None:
    torch.manual_seed(0)
    net = random_model(SMALL, seed=2)
    write_checkpoint(workdir / "zoo", SMALL, net.state_dict())
    cfg = write(workdir / "c.yaml", zoo_config(workdir / "zoo"))
    uri = f"sqlite:///{workdir / 'store.db'}"
    assert main(["train", str(cfg), "--tracking-uri", uri]) == 0
    assert "epoch   1/1" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
    assert run.info.status == "FINISHED"
    # The robust teacher of the run is the checkpoint: its test accuracy, computed here.
    test = load_dataset("synthetic", seed=0).test
    with torch.no_grad():
        acc = (net(test.x).argmax(1) == test.y).float().mean().item()
    assert run.data.metrics["test/robust_teacher_clean_acc"] == pytest.approx(acc, abs=1e-6)


def test_teachers_list_shows_the_source(workdir: Path, capsys) -> None:
    write_checkpoint(workdir / "cache" / "robustbench", SMALL, {"w": torch.zeros(1)})
    assert main(["teachers", "list"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"robustbench  cifar10 Linf {SMALL}  {workdir / 'cache'}")


def test_an_unknown_zoo_name_exits_2_with_close_matches(workdir: Path, capsys) -> None:
    cfg = write(workdir / "c.yaml", zoo_config(workdir / "zoo", name="Zhang2019Theoretical"))
    err = run_bad(workdir, capsys, ["train", str(cfg)])
    assert "teachers.robust.robustbench: unknown RobustBench model 'Zhang2019Theoretical'" in err
    assert "close: Zhang2019Theoretically" in err


def test_a_missing_zoo_checkpoint_exits_2_naming_model_and_path(workdir: Path, capsys) -> None:
    cfg = write(workdir / "c.yaml", zoo_config(workdir / "zoo"))
    err = run_bad(workdir, capsys, ["train", str(cfg)])
    want = workdir / "zoo" / "cifar10" / "Linf" / f"{SMALL}.pt"
    assert (f"teachers.robust.robustbench: {SMALL} (cifar10 Linf) not found: looked for "
            f"{want}") in err


def test_a_zoo_teacher_must_fit_the_data(workdir: Path, capsys) -> None:
    raw = zoo_config(workdir / "zoo") | {"data": {"name": "digits"}}
    err = run_bad(workdir, capsys, ["train", str(write(workdir / "c.yaml", raw))])
    assert "a RobustBench digits model cannot teach on data.name=digits" in err
    raw = zoo_config(workdir / "zoo", arch="wrn34_10")
    err = run_bad(workdir, capsys, ["train", str(write(workdir / "c.yaml", raw))])
    assert "`robustbench` names the model: drop arch" in err


def test_the_dry_run_says_what_a_run_will_download(workdir: Path) -> None:
    cfg = ExperimentConfig.model_validate(zoo_config(workdir / "zoo", download=True))
    check_inputs(cfg)  # download=true: a missing file is not an error before the run
    assert pending_downloads(cfg) == [
        f"teachers.robust {SMALL} into {workdir / 'zoo' / 'cifar10' / 'Linf'}"]
    write_checkpoint(workdir / "zoo", SMALL, random_model(SMALL).state_dict())
    assert pending_downloads(cfg) == []
