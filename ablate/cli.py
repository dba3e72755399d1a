"""``ablate`` command line: parses, validates and dispatches; the work is in the commands'
modules. Bad input exits 2 with one line naming the field or file.

torch, Ray and MLflow are imported inside the commands that need them, so ``--help`` and every
refusal of a bad config or flag answer without loading them (tests/test_cli.py checks it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from ablate.config import (
    ConfigError,
    ExperimentConfig,
    check_inputs,
    config_warnings,
    load_config,
    read_yaml,
)
from ablate.core.catalog import ATTACKS, check_attacks
from ablate.core.errors import CheckpointError, DatasetError, one_line
from ablate.core.limits import MAX_BATCH, MAX_IMAGES
from ablate.safe_yaml import dump_yaml
from ablate.spec_paths import resolve_spec
from ablate.tracking_uri import check_eval_target, check_tracking_uri, default_uri, redact

EXIT_USAGE = 2
BAD_INPUT = (ConfigError, DatasetError, CheckpointError)  # exit 2, one line


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``ablate: error:`` line, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("ablate").strip()
        raise ConfigError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _load(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_config(args.config, args.overrides)
    check_inputs(cfg)
    warn(config_warnings(cfg))
    return cfg


def warn(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"ablate: warning: {line}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    raw = read_yaml(args.config)
    if "rows" in raw:  # a grid
        from ablate.grid_spec import load_grid

        grid = load_grid(args.config, args.overrides)
        check_inputs(grid.base)
        warn(grid.warnings())
        print(f"{args.config}: OK (grid hash {grid.digest()}, {len(grid.rows)} rows x "
              f"{len(grid.seeds)} seeds on {grid.base.data.name})")
        return 0
    if "space" in raw:  # a search spec
        from ablate.search_spec import load_search_spec

        spec = load_search_spec(args.config, args.overrides)
        check_inputs(spec.base)
        warn(spec.warnings())
        print(f"{args.config}: OK (search spec hash {spec.digest()}, {spec.num_samples} trials "
              f"over {len(spec.space)} values, {spec.base.optim.epochs} epochs on "
              f"{spec.base.data.name})")
        return 0
    cfg = _load(args)
    print(f"{args.config}: OK (config hash {cfg.digest()}, method {cfg.method.name}, "
          f"{cfg.optim.epochs} epochs on {cfg.data.name})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from ablate.training import run_train

    return run_train(cfg, run_dir=Path(args.run_dir or f"runs/{cfg.name}-{cfg.digest()}"),
                     resume=args.resume, tracking_uri=args.tracking_uri,
                     command=shlex.join(["ablate", "train", args.config, *args.overrides]))


def cmd_search(args: argparse.Namespace) -> int:
    from ablate.cost import timing_options
    from ablate.search_spec import load_search_spec

    timing = timing_options(dry_run=args.dry_run, probe=args.probe,
                            peak_tflops=args.peak_tflops, mfu=args.mfu)

    spec = load_search_spec(resolve_spec(args.spec), args.overrides)
    if args.confirm and spec.confirm is None:  # the spec's own confirm block wins
        from ablate.search_spec import Confirm

        spec.confirm = Confirm()
    from ablate.resources import machine_resources
    from ablate.search import plan, run_search

    if args.dry_run:
        from ablate.cost_report import search_estimate

        return _dry_run(spec, plan(spec, machine_resources()), spec.base, spec.warnings(),
                        lambda: search_estimate(spec, timing))
    return run_search(spec, _options(args, ["ablate", "search", args.spec]))


def cmd_grid(args: argparse.Namespace) -> int:
    from ablate.cost import timing_options
    from ablate.grid_spec import load_grid

    timing = timing_options(dry_run=args.dry_run, probe=args.probe,
                            peak_tflops=args.peak_tflops, mfu=args.mfu)

    nested_in = None
    if args.around:
        args.grid, nested_in = _around(args)
    elif args.grid is None or "=" in args.grid:
        raise ConfigError("ablate grid: name a grid (a YAML path or name), or --around RUN")
    grid = load_grid(resolve_spec(args.grid), args.overrides)
    from ablate.grid import plan, run_grid
    from ablate.resources import machine_resources

    if args.dry_run:
        from ablate.cost_report import grid_estimate

        return _dry_run(grid, plan(grid, machine_resources()), grid.base, grid.warnings(),
                        lambda: grid_estimate(grid, timing))
    return run_grid(grid, _options(args, ["ablate", "grid", args.grid]), nested_in=nested_in)


def _around(args: argparse.Namespace) -> tuple[str, str]:
    """``--around RUN``: write the grid around the search's best config; returns its path and
    the search's parent run (the grid's runs nest in it)."""
    from ablate.around import around_grid
    from ablate.tracking import Tracker

    if args.grid is not None:  # argparse took the first key=value for the grid's name
        args.overrides = [args.grid, *args.overrides]
    tracker = Tracker(args.tracking_uri)
    if not tracker.exists():  # opening a missing SQLite store would create it
        raise ConfigError(f"--tracking-uri: no MLflow store at {redact(tracker.uri)}, so no "
                          f"search run {args.around!r}")
    path, search = around_grid(tracker, args.around, Path.cwd())
    tracker.log_artifact(search, path, "around")
    print(f"around-grid of search run {search}: {path} (rerun: ablate grid {path})")
    return str(path), search


def _dry_run(spec: Any, plan: str, base: ExperimentConfig, warnings: list[str],
             estimate: Callable[[], list[str]]) -> int:
    """``--dry-run``: the resolved spec, the plan, warnings, whether the inputs are present,
    and the estimated compute (:mod:`ablate.cost`; a failure to estimate is one line, not an
    error: the dry run has validated what it was asked to)."""
    print(dump_yaml(spec.model_dump(mode="json")).rstrip())
    print(plan)
    warn(warnings)
    try:
        check_inputs(base)
        from ablate.inputs import pending_downloads

        later = pending_downloads(base)
        print("inputs: dataset and teacher checkpoints found" if not later else
              f"inputs: found, but a real run first downloads {'; '.join(later)}")
    except BAD_INPUT as exc:
        print(f"inputs: a real run stops here: {exc}")
    sys.stdout.flush()  # the plan first: counting a CIFAR step takes a few seconds
    try:
        lines = estimate()
    except Exception as exc:  # any failure of the estimate (a probe on a missing GPU ...)
        why = one_line(exc, 300)
        lines = [f"cost: not estimated ({type(exc).__name__}: {why})"]
    print("\n".join(lines))
    return 0


def _options(args: argparse.Namespace, head: list[str]) -> Any:
    """Run options; the command line as typed, quoted for the shell (the resume hint after
    Ctrl-C: `seeds=[0,1]` unquoted is a glob in zsh)."""
    from ablate.runner import Options

    flags = [token for k in ("tracking_uri", "storage", "address") if getattr(args, k)
             for token in (f"--{k.replace('_', '-')}", redact(getattr(args, k)))]
    return Options(tracking_uri=args.tracking_uri, storage=args.storage, address=args.address,
                   resume=args.resume, fresh=args.fresh, connect_timeout=args.connect_timeout,
                   heartbeat=args.heartbeat,
                   command=shlex.join([*head, *args.overrides, *flags]))


def cmd_report(args: argparse.Namespace) -> int:
    from ablate.grid import report
    from ablate.tracking import Tracker

    tracker = Tracker(args.tracking_uri)
    if not tracker.exists():  # opening a missing SQLite store would create it
        raise ConfigError(f"--tracking-uri: no MLflow store at {redact(tracker.uri)}, so no run "
                          f"{args.target!r} to report")
    report(args.target, tracker)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    check_eval_target(args.target, args.tracking_uri or default_uri())  # before torch loads
    from ablate.evaluation import run_eval
    from ablate.tracking import Tracker

    subset = -1 if args.aa_subset is None else (None if args.aa_subset == 0 else args.aa_subset)
    run_eval(args.target, tracker=Tracker(args.tracking_uri), attacks=args.attacks,
             config=args.config, autoattack_subset=subset, batch_size=args.batch_size,
             robustbench_entry=args.robustbench_entry, link=args.link)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from ablate.config import IgdmConfig
    from ablate.core.catalog import METHOD_PARAMS

    for m in METHOD_PARAMS:
        teachers = ", ".join(m.teachers) or "none"
        print(f"{m.model_fields['name'].default}: {m.summary}\n  inner max: {m.objective}; "
              f"teachers: {teachers}; ITT: {'yes' if m.itt else 'no'}")
        _print_fields(m, skip="name")
    print("igdm (add-on to any method: igdm.enabled=true): IGDM Eq. 8-9, robust teacher")
    _print_fields(IgdmConfig, skip="enabled")
    return 0


def _print_fields(model: Any, skip: str) -> None:
    for name, f in model.model_fields.items():
        if name != skip:
            print(f"    {name} = {f.default!r}  {f.description or ''}")


def cmd_teachers_train(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from ablate.training import train_teachers

    train_teachers(cfg)
    return 0


def cmd_teachers_list(args: argparse.Namespace) -> int:
    from ablate.build import cache_dir

    trained = sorted((cache_dir() / "teachers").glob("*.pt"))
    zoo_root = cache_dir() / "robustbench"
    zoo_files = sorted(zoo_root.glob("*/*/*.pt"))  # RobustBench's DATASET/THREAT/NAME.pt
    for f in trained:
        print(f"trained      {f}  {f.stat().st_size / 1e6:.2f} MB")
    for f in zoo_files:
        dataset, threat = f.parent.parent.name, f.parent.name
        print(f"robustbench  {dataset} {threat} {f.name.split('.pt')[0]}  {f}  "
              f"{f.stat().st_size / 1e6:.2f} MB")
    if not trained and not zoo_files:
        print(f"no cached teachers in {cache_dir() / 'teachers'} or {zoo_root}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ablate.ui import serve

    return serve(args.tracking_uri or default_uri(), host=args.host, port=args.port,
                 experiment=args.experiment)


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
                   help="validate and print the spec, the resource plan and the estimated "
                   "compute (FLOPs, time); start nothing")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ablate", description="Hyperparameter searches and ablation grids "
                     "for CIARD robust distillation (Ray Tune, Optuna, MLflow).")
    parser.add_argument("--version", action="version", version=f"ablate {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one CIARD student and log it to MLflow")
    _config_args(p)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.add_argument("--run-dir", help="checkpoint directory (default runs/NAME-HASH)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory")
    p.set_defaults(func=cmd_train)

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
    p.set_defaults(func=cmd_search)

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
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("report", help="rebuild a grid's table or a search's summary from "
                       "MLflow (no training)")
    p.add_argument("target", help="search or grid parent run id, or experiment name (its "
                   "newest search run, else its newest grid run)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.set_defaults(func=cmd_report)

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
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("methods", help="list the registered methods and their parameters")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("validate", help="validate an experiment or search YAML and its inputs")
    _config_args(p)
    p.set_defaults(func=cmd_validate)

    t = sub.add_parser("teachers", help="train (and cache) or list teachers")
    tsub = t.add_subparsers(dest="teachers_command", required=True)
    p = tsub.add_parser("train", help="train/cache both teachers of a config, print accuracy")
    _config_args(p)
    p.set_defaults(func=cmd_teachers_train)
    p = tsub.add_parser("list", help="list cached teachers: trained ones and RobustBench "
                        "checkpoints (source, file, size)")
    p.set_defaults(func=cmd_teachers_list)

    p = sub.add_parser("ui", help="MLflow UI for the store (127.0.0.1 by default)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_int_in(1, 65535), default=5000)
    p.add_argument("--experiment", help="open this experiment's runs (default: the newest)")
    p.set_defaults(func=cmd_ui)
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


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    # Overrides may also follow options (`train c.yaml --resume seed=1`), which plain
    # parse_args would reject.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if hasattr(args, "tracking_uri"):  # before any store is opened; None: $MLFLOW_TRACKING_URI
        check_tracking_uri(args.tracking_uri, existing=args.command == "report")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(argv)
        return args.func(args)
    except BAD_INPUT as exc:
        print(f"ablate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ablate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
