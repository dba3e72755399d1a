"""``ablate`` command line: parses (the parser: :mod:`ablate.cli_parser`), validates and
dispatches; the work is in the commands' modules. Bad input exits 2 with one line naming the field
or file.

torch, Ray and MLflow are imported inside the commands that need them, so ``--help`` and every
refusal of a bad config or flag answer without loading them (tests/test_cli.py checks it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ablate.cli_parser import Command, build_parser
from ablate.config import (
    ConfigError,
    ExperimentConfig,
    check_inputs,
    config_warnings,
    load_config,
    read_yaml,
)
from ablate.core.errors import CheckpointError, DatasetError, one_line
from ablate.safe_yaml import dump_yaml
from ablate.spec_paths import resolve_spec
from ablate.tracking_uri import check_eval_target, check_tracking_uri, default_uri, redact

EXIT_USAGE = 2
BAD_INPUT = (ConfigError, DatasetError, CheckpointError)  # exit 2, one line


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


COMMANDS: dict[str, Command] = {
    "train": cmd_train, "search": cmd_search, "grid": cmd_grid, "report": cmd_report,
    "eval": cmd_eval, "methods": cmd_methods, "validate": cmd_validate,
    "teachers train": cmd_teachers_train, "teachers list": cmd_teachers_list, "ui": cmd_ui,
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser(COMMANDS)
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
