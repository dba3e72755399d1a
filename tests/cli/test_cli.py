"""The command line: bad input exits 2 with one line naming the field or file, before anything
starts; a real `ablate train` on digits lands in a real MLflow SQLite store."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.cli.commands import _options
from ablate.cli.main import _parse
from ablate.config import load_config, load_grid, load_search_spec, read_yaml
from ablate.core.models import build_model
from tests.helpers import REPO, SPEC, TINY, fashion_mnist_installed, run_bad, write


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.lrr=0.1", "`optim.lrr`: unknown key"),
        ("optim.epochs=many", "`optim.epochs`"),
        ("optim.lr=-0.1", "`optim.lr`: Input should be greater than 0"),
        ("itt.freeze_epochs=-1", "`itt.freeze_epochs`"),
        ("method.lam=-2", "`method.lam`"),
        ("student.arch=resnet1000", "unknown architecture"),
        ("data.name=imagenet", "`data.name`"),
    ],
)
def test_bad_config_values_exit_2_naming_the_field(workdir, capsys, override, needle) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, ["train", str(cfg), override])
    assert needle in err and "c.yaml" in err


def test_unknown_key_in_file(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", {**TINY, "optimiser": {"lr": 0.1}})
    assert "`optimiser`: unknown key" in run_bad(workdir, capsys, ["train", str(cfg)])


def test_malformed_yaml_names_file_and_line(workdir, capsys) -> None:
    cfg = write(workdir / "broken.yaml", "name: x\noptim: {epochs: 2\nseed: 1\n")
    err = run_bad(workdir, capsys, ["validate", str(cfg)])
    assert "broken.yaml" in err and "malformed YAML" in err and "line" in err


def test_missing_config_file(workdir, capsys) -> None:
    assert "nope.yaml: file not found" in run_bad(workdir, capsys, ["train", "nope.yaml"])


def test_missing_teacher_checkpoint(workdir, capsys) -> None:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["teachers"]["robust"]["checkpoint"] = "teachers/wrn.pt"
    cfg = write(workdir / "c.yaml", raw)
    err = run_bad(workdir, capsys, ["train", str(cfg)])
    assert "teachers.robust.checkpoint" in err and "teachers/wrn.pt" in err


def test_checkpoint_of_the_wrong_architecture(workdir, capsys) -> None:
    ckpt = workdir / "other.pt"
    torch.save(build_model("small_cnn", num_classes=10, in_channels=1, width=16).state_dict(),
               ckpt)
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["teachers"]["clean"]["checkpoint"] = str(ckpt)
    cfg = write(workdir / "c.yaml", raw)
    err = run_bad(workdir, capsys, ["train", str(cfg)])
    assert str(ckpt) in err and "SmallCNN" in err


def test_missing_cifar_directory(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, ["train", str(cfg), "data.name=cifar10",
                                    f"data.root={workdir / 'nodata'}"])
    assert str(workdir / "nodata") in err and "cifar-10-batches-py" in err


def test_every_yaml_under_search_spaces_validates(capsys) -> None:
    files = sorted((REPO / "search_spaces").rglob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        raw = read_yaml(f)
        spec = load_search_spec(f) if "space" in raw else load_grid(f) if "rows" in raw else None
        cfg = spec.base if spec else load_config(f)
        here = cfg.data.name == "digits" or (cfg.data.name == "fashion_mnist"
                                             and fashion_mnist_installed())
        if here:  # CIFAR needs data and checkpoints absent here
            assert main(["validate", str(f)]) == 0, capsys.readouterr().err
            assert "OK" in capsys.readouterr().out


def test_resume_hint_is_shell_safe() -> None:
    """The command printed after Ctrl-C pastes back as typed: `seeds=[0,1]` unquoted is a glob
    in zsh, and a path may hold spaces."""
    argv = ["grid", "g.yaml", "seeds=[0,1]", "--storage", "/shared/ray runs"]
    args = _parse(argv)
    command = _options(args, ["ablate", "grid", args.grid]).command
    assert command == "ablate grid g.yaml 'seeds=[0,1]' --storage '/shared/ray runs'"
    assert shlex.split(command)[1:] == argv


def test_console_script_exit_code(workdir) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    proc = subprocess.run([sys.executable, "-m", "ablate.cli", "validate", str(cfg),
                           "optim.lr=-1"], capture_output=True, text=True, cwd=workdir,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "optim.lr" in proc.stderr


HEAVY = ("torch", "ray", "mlflow", "optuna", "sklearn", "matplotlib")
# Prints the exit code and which heavy packages the command loaded, in a fresh interpreter.
PROBE = f"""import sys
from ablate.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:  # --help, --version
    rc = exc.code
print(rc, [m for m in {HEAVY!r} if m in sys.modules])"""


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["--version"],
    ["methods"],
    ["train", "missing.yaml"],
    ["train", "c.yaml", "optim.lrr=0.1"],
    ["validate", "c.yaml", "student.arch=resnet1000"],
    ["search", str(REPO / "search_spaces/quickstart.yaml"), "num_sample=3"],
    ["search", str(REPO / "search_spaces/quickstart.yaml"), "space.method.alpah.high=0.9"],
    ["grid", "ablation_table7_digits", "optim.epochs=3"],
    ["grid", "ablation_table7_digits", "seeds=[0,0]"],
    ["eval", "no_such_checkpoint"],
    ["eval", "c.yaml", "--attacks", "pgd"],
    ["report", "x", "--tracking-uri", "sqlite:////no/such/dir/m.db"],
    ["ui", "--port", "0"],
])
def test_help_and_refusals_load_no_heavy_package(workdir, argv) -> None:
    """`--help`, `--version`, `methods` and every refusal that needs no model answer without
    importing torch, Ray, MLflow (or Optuna, scikit-learn, matplotlib): what makes them fast."""
    write(workdir / "c.yaml", TINY)
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)})
    rc, loaded = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(rc) == (0 if argv[0] in ("--help", "--version", "methods") else 2), proc.stderr
    assert loaded == "[]", f"{argv} imported {loaded}"


def test_train_logs_run_curves_and_checkpoint_to_mlflow(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    uri = f"sqlite:///{workdir / 'store.db'}"
    assert main(["train", str(cfg), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "test (best epoch" in out and "| push J " in out

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.epochs"] == "2" and run.data.params["method.name"] == "ciard"
    assert run.data.tags["config_hash"] and run.data.tags["git_commit"]
    history = client.get_metric_history(run.info.run_id, "val/w_acc")
    assert [m.step for m in history] == [1, 2]  # epoch N at step N, as the console counts
    assert "epoch   1/2" in out and "epoch   0/2" not in out
    best = int(run.data.metrics["test/best_epoch"])
    assert f"test (best epoch {best}" in out and 1 <= best <= 2
    for key in ("val/clean_acc", "val/robust_acc", "val/robust_teacher_robust_acc",
                "test/clean_acc", "test/pgd_sat_acc", "test/pgd_sat_wr", "train/loss"):
        assert key in run.data.metrics, key
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    arts |= {a.path for d in ("plots", "checkpoints")
             for a in client.list_artifacts(run.info.run_id, d)}
    assert {"config.yaml", "plots/curves.png", "checkpoints/best_student.pt"} <= arts
    local = client.download_artifacts(run.info.run_id, "checkpoints/best_student.pt",
                                      str(workdir))
    state = torch.load(local, weights_only=True)
    assert "fc.weight" in state

    # The teachers were cached: a second run trains none.
    assert main(["train", str(cfg), "--tracking-uri", uri, "seed=1"]) == 0
    assert "training clean teacher" not in capsys.readouterr().out


def test_itt_that_can_never_start_is_a_warning_naming_the_field(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    assert main(["validate", str(cfg), "itt.freeze_epochs=2"]) == 0  # optim.epochs = 2
    err = capsys.readouterr().err
    assert "warning: itt.freeze_epochs=2 >= optim.epochs=2: ITT never starts" in err
    assert main(["validate", str(cfg)]) == 0 and "warning" not in capsys.readouterr().err
    assert main(["validate", str(cfg), "itt.freeze_epochs=2", "itt.enabled=false"]) == 0
    assert "warning" not in capsys.readouterr().err  # w/o ITT asked for: nothing is hidden

    grid = write(workdir / "g.yaml", {"name": "g", "base": TINY, "baseline": "late ITT",
                                      "seeds": [0], "rows": [
                                          {"name": "late ITT",
                                           "overrides": {"itt.freeze_epochs": 5}}]})
    assert main(["grid", str(grid), "--dry-run"]) == 0
    assert "warning: row 'late ITT': itt.freeze_epochs=5 >= optim.epochs=2" in (
        capsys.readouterr().err)
    spec = {**SPEC, "space": {**SPEC["space"],
                              "itt.freeze_epochs": {"type": "int", "low": 0, "high": 4}}}
    assert main(["search", str(write(workdir / "s.yaml", spec)), "--dry-run"]) == 0
    assert "warning: space `itt.freeze_epochs` at 4: itt.freeze_epochs=4 >= optim.epochs=4" in (
        capsys.readouterr().err)


def test_removed_test_steps_says_what_replaced_it(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, ["train", str(cfg), "eval.test_steps=20"])
    assert "field `eval`" in err and "`test_steps` was removed" in err and "PGD_SAT" in err
