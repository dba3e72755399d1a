"""The ``ablate`` commands: each validates its input, then hands the work to its layer
(``train``: :mod:`.train`, ``search``: :mod:`ablate.search`, ``grid``: :mod:`ablate.grid`,
``eval``: :mod:`ablate.evaluation`, ``ui``: :mod:`ablate.tracking`).

torch, Ray and MLflow are imported inside the commands that need them, so ``--help`` and every
refusal of a bad config or flag answer without loading them (tests/cli/test_cli.py checks it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate import names
from ablate.config import (
    Confirm,
    ExperimentConfig,
    IgdmConfig,
    check_eval_target,
    config_warnings,
    default_uri,
    dump_yaml,
    load_config,
    load_grid,
    load_search_spec,
    read_yaml,
    redact,
    resolve_spec,
    unseen_seeds,
)
from ablate.core.console import Log, fit
from ablate.core.errors import BAD_INPUT, ConfigError, one_line

if TYPE_CHECKING:
    from ablate.tracking import Tracker


def check_inputs(cfg: ExperimentConfig) -> None:
    """The machine and the files ``cfg`` names (:func:`ablate.build.check_inputs`; torch)."""
    from ablate.build import check_inputs as check

    check(cfg)


def _load(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_config(args.config, args.overrides)
    check_inputs(cfg)
    warn(config_warnings(cfg))
    return cfg


def warn(lines: Sequence[str]) -> None:
    for line in lines:
        print(fit(f"ablate: warning: {line}"), file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    raw = read_yaml(args.config)
    if "rows" in raw:  # a grid
        grid = load_grid(args.config, args.overrides)
        check_inputs(grid.base)
        warn(grid.warnings())
        print(f"{args.config}: OK (grid hash {grid.digest()}, {len(grid.rows)} rows x "
              f"{len(grid.seeds)} seeds on {grid.base.data.name})")
        return 0
    if "space" in raw:  # a search spec
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
    from ablate.cli.train import run_train

    return run_train(cfg, run_dir=Path(args.run_dir or f"runs/{cfg.name}-{cfg.digest()}"),
                     resume=args.resume, tracking_uri=args.tracking_uri,
                     command=shlex.join(["ablate", "train", args.config, *args.overrides]))


def _check_show_config(args: argparse.Namespace) -> None:
    if args.show_config and not args.dry_run:
        raise ConfigError("--show-config only applies to --dry-run (it prints the spec it "
                          "would run)")


def cmd_search(args: argparse.Namespace) -> int:
    from ablate.cost import timing_options

    _check_show_config(args)
    timing = timing_options(dry_run=args.dry_run, probe=args.probe,
                            peak_tflops=args.peak_tflops, mfu=args.mfu)

    spec = load_search_spec(resolve_spec(args.spec), args.overrides)
    if args.confirm and spec.confirm is None:  # the spec's own confirm block wins
        spec.confirm = Confirm(seeds=unseen_seeds(spec.base.seed))
    from ablate.runtime import machine_resources
    from ablate.search import plan, run_search

    if args.dry_run:
        from ablate.cost import search_estimate

        return _dry_run(spec, plan(spec, machine_resources()), spec.base, spec.warnings(),
                        lambda: search_estimate(spec, timing), args.show_config)
    return run_search(spec, _options(args, ["ablate", "search", args.spec]))


def cmd_grid(args: argparse.Namespace) -> int:
    from ablate.cost import timing_options

    _check_show_config(args)
    timing = timing_options(dry_run=args.dry_run, probe=args.probe,
                            peak_tflops=args.peak_tflops, mfu=args.mfu)

    nested_in = None
    if args.around:
        args.grid, nested_in = _around(args)
    elif args.grid is None or "=" in args.grid:
        raise ConfigError("ablate grid: name a grid (a YAML path or name), or --around RUN")
    grid = load_grid(resolve_spec(args.grid), args.overrides)
    from ablate.grid import plan, run_grid
    from ablate.runtime import machine_resources

    if args.dry_run:
        from ablate.cost import grid_estimate

        return _dry_run(grid, plan(grid, machine_resources()), grid.base, grid.warnings(),
                        lambda: grid_estimate(grid, timing), args.show_config)
    return run_grid(grid, _options(args, ["ablate", "grid", args.grid]), nested_in=nested_in)


def _around(args: argparse.Namespace) -> tuple[str, str]:
    """``--around RUN``: write the grid around the search's best config; returns its path and
    the search's parent run (the grid's runs nest in it)."""
    from ablate.search import around_grid
    from ablate.tracking import Tracker

    if args.grid is not None:  # argparse took the first key=value for the grid's name
        args.overrides = [args.grid, *args.overrides]
    tracker = Tracker(args.tracking_uri)
    if not tracker.exists():  # opening a missing SQLite store would create it
        raise ConfigError(f"--tracking-uri: no MLflow store at {redact(tracker.uri)}, so no "
                          f"search run {args.around!r}")
    path, search = around_grid(tracker, args.around, Path.cwd(), args.overrides)
    args.overrides = []  # applied: the file holds them
    tracker.log_artifact(search, path, "around")
    print(f"around-grid of search run {search}: {path} (rerun: ablate grid {path})")
    return str(path), search


def _dry_run(spec: Any, plan: str, base: ExperimentConfig, warnings: list[str],
             estimate: Callable[[], list[str]], show_config: bool = False) -> int:
    """``--dry-run``: the plan, warnings, whether the inputs are present, the estimated compute
    (:mod:`ablate.cost`; a failure to estimate is one line, not an error: the dry run has
    validated what it was asked to), then with ``--show-config`` the resolved spec."""
    print(fit(plan))
    warn(warnings)
    try:
        check_inputs(base)
        from ablate.build import pending_downloads

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
    print(fit("\n".join(lines)))
    if show_config:
        print("resolved spec (--show-config):\n"
              + dump_yaml(spec.model_dump(mode="json")).rstrip())
    else:
        print("the resolved spec as YAML: add --show-config")
    return 0


def _options(args: argparse.Namespace, head: list[str]) -> Any:
    """Run options; the command line as typed, quoted for the shell (the resume hint after
    Ctrl-C: `seeds=[0,1]` unquoted is a glob in zsh)."""
    from ablate.runtime import Options

    flags = [token for k in ("tracking_uri", "storage", "address") if getattr(args, k)
             for token in (f"--{k.replace('_', '-')}", redact(getattr(args, k)))]
    return Options(tracking_uri=args.tracking_uri, storage=args.storage, address=args.address,
                   resume=args.resume, fresh=args.fresh, connect_timeout=args.connect_timeout,
                   heartbeat=args.heartbeat,
                   command=shlex.join([*head, *args.overrides, *flags]))


def cmd_report(args: argparse.Namespace) -> int:
    from ablate.tracking import Tracker

    tracker = Tracker(args.tracking_uri)
    if not tracker.exists():  # opening a missing SQLite store would create it
        raise ConfigError(f"--tracking-uri: no MLflow store at {redact(tracker.uri)}, so no run "
                          f"{args.target!r} to report")
    _report(args.target, tracker)
    return 0


def _report(target: str, tracker: Tracker, log: Log = print) -> str:
    """``ablate report``: rebuild a search's summary (then its confirm stage and
    around-grids) or a grid's table and plot from MLflow, without training: a parent run id,
    or an experiment name for its newest search (else grid) run."""
    # A search first: its experiment may also hold around-grids, which its report shows.
    info = tracker.resolve_run(target, (names.KIND_SEARCH, names.KIND_GRID), repr(target))
    if info["tags"].get(names.KIND) == names.KIND_SEARCH:
        from ablate.search import report_search, report_stages

        return report_search(info, tracker, log) + report_stages(info["run_id"], tracker, log)
    if names.GRID not in info["tags"]:
        raise ConfigError(f"run {info['run_id']} is neither a grid's nor a search's parent run "
                          f"(kind {info['tags'].get(names.KIND, 'unknown')!r})")
    from ablate.grid import report_grid

    return report_grid(info, tracker, log)


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
    from ablate.cli.train import train_teachers

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
    from ablate.tracking import serve

    return serve(args.tracking_uri or default_uri(), host=args.host, port=args.port,
                 experiment=args.experiment, verbose=args.verbose)

