"""`ablate eval --robustbench-entry`: the leaderboard's JSON entry, written only for its
protocol (standard AutoAttack on the full 10,000-image CIFAR test set at eps 8/255); every
other evaluation is refused with exit 2, naming the reason, before any attack runs."""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.config import ExperimentConfig
from ablate.core.errors import ConfigError
from ablate.core.models import build_model
from ablate.evaluation import check_protocol, entry
from tests.helpers import TINY, write, write_fake_cifar10

CIFAR = copy.deepcopy(TINY) | {
    "data": {"name": "cifar10", "val_size": 20},
    "attack": {"eps": 8 / 255, "step_size": 2 / 255, "steps": 1},
    "optim": {"epochs": 1, "lr": 0.05},
    "itt": {"enabled": False},
    "eval": {"val_steps": 1, "val_subset": 20, "autoattack_subset": None},
}


@pytest.mark.parametrize(("change", "reason"), [
    ({"data": {"name": "digits"}}, "data.name is digits; the leaderboard is CIFAR-10/100"),
    ({"attack": {"eps": 0.03}}, "eps is 0.03 (eval.eps, else attack.eps)"),
    ({"eval": {"eps": 4 / 255}}, "eps is 0.0156863"),
])
def test_a_config_off_the_protocol_is_refused(change: dict, reason: str) -> None:
    raw = copy.deepcopy(CIFAR)
    for key, value in change.items():
        raw[key] = raw[key] | value
    cfg = ExperimentConfig.model_validate(raw)
    with pytest.raises(ConfigError, match="protocol: .*" + re.escape(reason)):
        check_protocol(cfg, ["autoattack"], None, 10_000)


def test_an_evaluation_off_the_protocol_is_refused() -> None:
    cfg = ExperimentConfig.model_validate(CIFAR)
    check_protocol(cfg, ["pgd_sat", "autoattack"], None, 10_000)  # the protocol
    check_protocol(cfg, ["autoattack"], 10_000, 10_000)  # a subset that is everything
    for args, reason in [((["pgd_sat"], None, 10_000), "autoattack is not among --attacks"),
                         ((["autoattack"], 500, 10_000), "first 500 test images.*--aa-subset 0"),
                         ((["autoattack"], None, 9_000), "test split has 9000 images")]:
        with pytest.raises(ConfigError, match=reason):
            check_protocol(cfg, *args)
    with pytest.raises(ConfigError, match="a model name is letters"):
        check_protocol(cfg, ["autoattack"], None, 10_000, name="../escape")


def test_the_entry_has_the_leaderboard_fields_in_its_format() -> None:
    cfg = ExperimentConfig.model_validate(CIFAR)
    results = {"clean": {"acc": 0.84921}, "autoattack": {"robust": 0.530849, "n": 10_000}}
    got = entry(cfg, results, link="https://arxiv.org/abs/x", n_test=10_000)
    assert got["clean_acc"] == "84.92" and got["autoattack_acc"] == "53.08"  # update_json's
    assert got["eps"] == "8/255" and got["dataset"] == "cifar10" and got["link"].endswith("/x")
    assert got["architecture"] == "small_cnn" and got["number_forward_passes"] == 1
    fields = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset",
              "venue", "architecture", "eps", "clean_acc", "reported", "autoattack_acc",
              "footnote"}  # robustbench.utils.ModelInfo's, less the corruption ones
    assert set(got) == fields


@pytest.fixture
def constant_student(workdir: Path) -> tuple[Path, Path, str]:
    """A student that answers class 0 whatever the image (all weights zero, the last bias
    not), and a CIFAR-10 whose 10,000 test images hold 50 of class 0: its clean and
    AutoAttack accuracies are both 50 / 10,000 (no attack moves a constant output), and
    AutoAttack has only 50 images to attack. Returns (weights, config, tracking URI)."""
    write_fake_cifar10(str(workdir / "data"))
    labels = [0] * 50 + [1 + i % 9 for i in range(9_950)]
    with open(workdir / "data" / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"labels": labels, "data": np.random.default_rng(1).integers(
            0, 256, (10_000, 3072), dtype=np.uint8)}, f, protocol=2)
    cfg = ExperimentConfig.model_validate(CIFAR)
    net = build_model(cfg.student.arch, num_classes=10, in_channels=3, **cfg.student.kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.fc.bias[0] = 1.0
    torch.save(net.state_dict(), workdir / "student.pt")
    return workdir / "student.pt", write(workdir / "c.yaml", CIFAR), \
        f"sqlite:///{workdir / 'store.db'}"


def test_the_entry_is_logged_with_the_evaluation_numbers(constant_student, capsys) -> None:
    weights, cfg, uri = constant_student
    assert main(["eval", str(weights), "--config", str(cfg), "--attacks", "autoattack",
                 "--aa-subset", "0", "--robustbench-entry", "Tiny2026Check",
                 "--link", "https://example.org/p", "--tracking-uri", uri]) == 0
    assert "RobustBench entry (robustbench/cifar10/Linf/Tiny2026Check.json)" in (
        capsys.readouterr().out)
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                             filter_string="tags.kind = 'eval'")[0]
    got = json.loads(Path(client.download_artifacts(
        run.info.run_id, "robustbench/cifar10/Linf/Tiny2026Check.json")).read_text())
    assert run.data.metrics["test/autoattack_n"] == 10_000
    assert got["clean_acc"] == got["autoattack_acc"] == "0.5"  # 50 of 10,000, unbreakable
    assert got["name"] == "tiny" and got["link"] == "https://example.org/p"


def test_a_subset_evaluation_is_refused_before_anything_starts(constant_student,
                                                              capsys) -> None:
    weights, cfg, uri = constant_student
    code = main(["eval", str(weights), "--config", str(cfg), "--attacks", "autoattack",
                 "--aa-subset", "100", "--robustbench-entry", "--tracking-uri", uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "first 100 test images" in err
    assert not (weights.parent / "store.db").exists()  # no eval run was started
