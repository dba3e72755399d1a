"""The ``ablate`` argument parser: its subcommands, flags and argparse value checks. The
command functions it dispatches to are passed in by :mod:`ablate.cli`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from ablate.core.catalog import ATTACKS, check_attacks
from ablate.core.errors import ConfigError
from ablate.core.limits import MAX_BATCH, MAX_IMAGES

Command = Callable[[argparse.Namespace], int]  # a subcommand: parsed arguments -> exit code


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``ablate: error:`` line, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("ablate").strip()
        raise ConfigError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")


def _job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.add_argument("--storage", help="Ray experiment storage: directory or URI (default runs/ray)")
    p.add_argument("--address", help="join an existing Ray cluster (default: local Ray)")
    p.add_argument("--connect-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="give up when --address does not answer within this time (default 30)")
    p.add_argument("--heartbeat", type=_seconds_or_zero, default=30.0, metavar="SECONDS",
                   help="print a progress line this often while trials run (default 30; "
                   "0 = only a line per finished trial)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted run")
    again.add_argument("--fresh", action="store_true", help="start again even if this spec "
                       "ran before (the earlier run is kept)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the plan, the inputs and the estimated compute "
                   "(FLOPs, time); start nothing")
    p.add_argument("--show-config", action="store_true",
                   help="with --dry-run: also print the resolved spec as YAML, after the plan")
    from ablate.cost import mfu_arg, tflops_arg

    p.add_argument("--probe", action="store_true",
                   help="with --dry-run: time a few real training steps of the config's "
                   "models at its batch size here, for the hours on this machine")
    p.add_argument("--peak-tflops", type=tflops_arg, metavar="T",
                   help="with --dry-run: GPU-hours at this peak, e.g. 989 (an H100's dense "
                   "bf16 TFLOP/s)")
    p.add_argument("--mfu", type=mfu_arg, metavar="M",
                   help="with --peak-tflops: the fraction of the peak achieved (default 0.025, "
                   "measured for the CIFAR presets' step on an H200)")


def build_parser(commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    """The parser; each subcommand's ``func`` is ``commands[NAME]`` (``"teachers train"``
    for a nested one)."""
    parser = _Parser(prog="ablate", description="Hyperparameter searches and ablation grids "
                     "for CIARD robust distillation (Ray Tune, Optuna, MLflow).")
    parser.add_argument("--version", action="version", version=f"ablate {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one CIARD student and log it to MLflow")
    _config_args(p)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.add_argument("--run-dir", help="checkpoint directory (default runs/NAME-HASH)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory")
    p.set_defaults(func=commands["train"])

    p = sub.add_parser("search", help="Optuna search through Ray Tune (ASHA), logged to MLflow")
    p.add_argument("spec", help="search spec: a YAML path, or a name looked up in "
                   "./search_spaces/ then in the specs shipped with ablate (quickstart)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the spec "
                   "(base.optim.epochs=5, num_samples=4)")
    _job_args(p)
    p.add_argument("--confirm", action="store_true",
                   help="then re-train the top 3 configurations on seeds 0, 1, 2 and choose "
                   "the winner by the lower 95%% bound of its validation objective (the spec's "
                   "confirm: block sets other values)")
    p.set_defaults(func=commands["search"])

    p = sub.add_parser("grid", help="ablation grid (rows x seeds) with the paper's table")
    p.add_argument("grid", nargs="?", help="grid: a YAML path, or a name looked up in "
                   "./search_spaces/ then in the specs shipped with ablate "
                   "(ablation_table7_digits); omitted with --around")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (seeds=[0,1])")
    p.add_argument("--around", metavar="SEARCH_RUN",
                   help="a one-at-a-time grid around this search's best config (a search "
                   "parent run id or experiment name): each searched knob moved to its off or "
                   "reference value, paired with the optimum over seeds")
    _job_args(p)
    p.set_defaults(func=commands["grid"])

    p = sub.add_parser("report", help="rebuild a grid's table or a search's summary from "
                       "MLflow (no training)")
    p.add_argument("target", help="search or grid parent run id, or experiment name (its "
                   "newest search run, else its newest grid run)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.set_defaults(func=commands["report"])

    p = sub.add_parser("eval", help="final evaluation protocol (Clean, FGSM, PGD, CW, Square, "
                       "AutoAttack, transfer) on a trained student, logged to MLflow")
    p.add_argument("target", help="run/trial checkpoint directory, trainer.pt or student "
                   "state dict, or an MLflow run id")
    p.add_argument("--attacks", nargs="+", metavar="ATTACK", type=_attack,
                   help=f"subset of the attacks (default: all of {' '.join(ATTACKS)})")
    p.add_argument("--config", help="experiment YAML, when no config.yaml sits beside the "
                   "weights")
    p.add_argument("--aa-subset", type=_int_in(0, MAX_IMAGES), help="AutoAttack on the first "
                   "N test images (0 = all; default: eval.autoattack_subset of the config)")
    p.add_argument("--batch-size", type=_int_in(1, MAX_BATCH), default=256)
    p.add_argument("--robustbench-entry", nargs="?", const="", metavar="NAME",
                   help="also log RobustBench's leaderboard JSON entry for the model (NAME, "
                   "default the config's name) under robustbench/; refused unless standard "
                   "AutoAttack runs on the whole CIFAR test set at eps 8/255 (--aa-subset 0)")
    p.add_argument("--link", default="", help="with --robustbench-entry: its link field "
                   "(the paper)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.set_defaults(func=commands["eval"])

    p = sub.add_parser("methods", help="list the registered methods and their parameters")
    p.set_defaults(func=commands["methods"])

    p = sub.add_parser("validate", help="validate an experiment or search YAML and its inputs")
    _config_args(p)
    p.set_defaults(func=commands["validate"])

    t = sub.add_parser("teachers", help="train (and cache) or list teachers")
    tsub = t.add_subparsers(dest="teachers_command", required=True)
    p = tsub.add_parser("train", help="train/cache both teachers of a config, print accuracy")
    _config_args(p)
    p.set_defaults(func=commands["teachers train"])
    p = tsub.add_parser("list", help="list cached teachers: trained ones and RobustBench "
                        "checkpoints (source, file, size)")
    p.set_defaults(func=commands["teachers list"])

    p = sub.add_parser("ui", help="MLflow UI for the store (127.0.0.1 by default)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_int_in(1, 65535), default=5000)
    p.add_argument("--experiment", help="open this experiment's runs (default: the newest)")
    p.add_argument("--verbose", action="store_true",
                   help="show MLflow's and uvicorn's log lines and warnings (quiet by default)")
    p.set_defaults(func=commands["ui"])
    return parser


def _version() -> str:
    try:
        return version("ablate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)  # argparse reports a ValueError as "invalid value"
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]")
        return value

    parse.__name__ = "integer"
    return parse


def _attack(text: str) -> str:
    try:
        check_attacks([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    value = float(text)  # argparse reports a ValueError as "invalid value"
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 86400] seconds")
    return value


def _seconds_or_zero(text: str) -> float:
    return 0.0 if float(text) == 0 else _seconds(text)
