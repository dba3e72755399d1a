"""`ablate eval` and `ablate methods`: a real digits CIARD run evaluated under the attack suite
from its run directory, its MLflow run id and a bare state dict, logged to a real SQLite store;
bad targets and attack names exit 2 with one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.config import IgdmConfig
from ablate.core.methods import all_methods, method_names
from ablate.evaluation import run_eval
from ablate.tracking import Tracker
from tests.helpers import TINY, data_offset, flip, run_bad, write


@pytest.fixture
def trained(workdir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str, str]:
    """A finished tiny `ablate train` run: (run directory, run id, tracking URI)."""
    uri = f"sqlite:///{workdir / 'store.db'}"
    cfg = copy.deepcopy(TINY)
    cfg["eval"]["autoattack_subset"] = 12
    assert main(["train", str(write(workdir / "c.yaml", cfg)), "--tracking-uri", uri]) == 0
    run_dir = next((workdir / "runs").iterdir())
    capsys.readouterr()
    return run_dir, (run_dir / "mlflow_run_id").read_text().strip(), uri


def _metrics(uri: str, run_id: str) -> dict[str, float]:
    return MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics


def test_eval_of_a_run_directory_prints_the_table_and_logs_it(trained, capsys) -> None:
    run_dir, run_id, uri = trained
    attacks = ["fgsm", "pgd_sat", "pgd_trades", "cw_inf", "transfer_pgd_trades"]
    assert main(["eval", str(run_dir), "--attacks", *attacks, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    for label in ("| Attack", "FGSM", "PGD_SAT", "PGD_TRADES", "CW∞", "Transfer PGD_TRADES"):
        assert label in out, label
    m = _metrics(uri, run_id)  # the run that trained the checkpoint gets the numbers
    for a in attacks:
        acc, wr = m[f"test/{a}_acc"], m[f"test/{a}_wr"]
        assert 0.0 <= acc <= m["test/clean_acc"] + 1e-9
        assert wr == pytest.approx((m["test/clean_acc"] + acc) / 2)
    assert m["test/pgd_trades_acc"] <= m["test/fgsm_acc"] + 0.02
    client = MlflowClient(tracking_uri=uri)
    arts = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/robustness.md", "eval/robustness.json"} <= arts


def test_eval_by_run_id_runs_autoattack_on_the_configured_subset(trained, capsys) -> None:
    _, run_id, uri = trained
    assert main(["eval", run_id, "--attacks", "pgd_sat", "autoattack",
                 "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "AutoAttack" in out and "first 12 of" in out
    m = _metrics(uri, run_id)
    assert m["test/autoattack_n"] == 12
    assert 0.0 <= m["test/autoattack_acc"] <= 1.0


def test_eval_of_a_damaged_checkpoint_exits_2_before_logging_anything(trained,
                                                                      capsys) -> None:
    run_dir, run_id, uri = trained
    weights = run_dir / "trainer.pt"
    assert (run_dir / "trainer.pt.sha256").is_file()  # `ablate train` saved its digest
    before = _metrics(uri, run_id)
    flip(weights, data_offset(weights, "data/0"))
    code = main(["eval", str(run_dir), "--attacks", "fgsm", "--tracking-uri", uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"ablate: error: checkpoint {weights} is damaged"), err
    client = MlflowClient(tracking_uri=uri)
    assert _metrics(uri, run_id) == before  # no number logged as a result
    assert not client.list_artifacts(run_id, "eval")
    exp = client.get_experiment_by_name("tiny")
    assert not client.search_runs([exp.experiment_id], filter_string="tags.kind = 'eval'")


def test_eval_of_a_state_dict_needs_its_config_and_makes_an_eval_run(trained, workdir,
                                                                      capsys) -> None:
    run_dir, _, uri = trained
    state = torch.load(run_dir / "trainer.pt", weights_only=True)["best"]["student"]
    weights = workdir / "student.pt"
    torch.save(state, weights)
    err = run_bad_eval(capsys, ["eval", str(weights), "--tracking-uri", uri])
    assert "config.yaml: file not found" in err and "--config" in err
    assert main(["eval", str(weights), "--config", str(workdir / "c.yaml"), "--attacks",
                 "fgsm", "--tracking-uri", uri]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    evals = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'eval'")
    assert len(evals) == 1 and "test/fgsm_acc" in evals[0].data.metrics


def run_bad_eval(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_eval_targets_exit_2_before_anything_starts(workdir, capsys) -> None:
    assert "neither a checkpoint path nor a run id" in run_bad(
        workdir, capsys, ["eval", "0123abcd", "--tracking-uri",
                          f"sqlite:///{workdir / 'mlflow.db'}"])
    write(workdir / "config.yaml", TINY)
    (workdir / "trainer.pt").write_bytes(b"")
    assert "unknown attack 'pgd'" in run_bad(workdir, capsys,
                                             ["eval", str(workdir), "--attacks", "pgd"])


def test_unknown_final_attack_in_a_config_is_a_field_error(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, ["validate", str(cfg), "eval.attacks=[fgsm,apgd]"])
    assert "eval.attacks" in err and "'apgd'" in err


def test_methods_lists_every_method_with_its_parameters(capsys) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for m in all_methods():
        name = m.name
        assert f"{name}: " in out
        for field in m.params.model_fields:
            if field != "name":
                assert f"    {field} = " in out, (name, field)
    assert "igdm" in out and all(f"    {f} = " in out for f in IgdmConfig.model_fields
                                 if f != "enabled")
    assert {"pgd_at", "trades", "ard", "rslad", "mtard", "adaad", "ciard"} <= set(method_names())


def test_a_stopped_eval_keeps_its_attacks_and_continues_with_the_next(trained, workdir) -> None:
    """Ctrl-C after two of three attacks: their metrics are in MLflow already; the same command
    runs only the third, and the numbers equal an evaluation that was never stopped."""
    run_dir, _, uri = trained
    state = torch.load(run_dir / "trainer.pt", weights_only=True)["best"]["student"]
    weights = workdir / "student.pt"
    torch.save(state, weights)
    attacks = ["fgsm", "pgd_sat", "cw_inf"]
    lines: list[str] = []

    def stop_at_the_third(line: str) -> None:
        lines.append(line)
        if line.startswith("cw_inf (3/3)"):
            raise KeyboardInterrupt

    def evaluate(log) -> dict:
        return run_eval(str(weights), tracker=Tracker(uri), attacks=attacks,
                        config=str(workdir / "c.yaml"), log=log)

    with pytest.raises(KeyboardInterrupt):
        evaluate(stop_at_the_third)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny").experiment_id
    (run,) = client.search_runs([exp], filter_string="tags.kind = 'eval'")
    assert run.info.status == "KILLED"
    assert {"test/clean_acc", "test/fgsm_acc", "test/pgd_sat_acc"} <= set(run.data.metrics)
    assert "test/cw_inf_acc" not in run.data.metrics
    assert lines[-1].startswith("stopped: 2 of 3 attacks finished and logged to run ")

    lines.clear()
    resumed = evaluate(lines.append)
    assert any(x.startswith(f"continuing the stopped evaluation in run {run.info.run_id}: "
                            "fgsm, pgd_sat kept") for x in lines)
    started = [x for x in lines if " (" in x and x.endswith(") ...")]
    assert started == ["cw_inf (3/3) ..."]  # only the attack that had not finished
    (again,) = client.search_runs([exp], filter_string="tags.kind = 'eval'")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert "eval_partial" not in again.data.tags  # complete: a later eval starts over
    fresh = run_eval(str(weights), tracker=Tracker(f"sqlite:///{workdir / 'fresh.db'}"),
                     attacks=attacks, config=str(workdir / "c.yaml"), log=lambda _: None)
    for a in attacks:
        assert resumed[a]["robust"] == fresh[a]["robust"]  # seeded per attack: no drift
        assert again.data.metrics[f"test/{a}_acc"] == pytest.approx(fresh[a]["robust"])
