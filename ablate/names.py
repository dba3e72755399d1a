"""The names that cross layers, each spelled once: the metric keys a trial reports and MLflow
stores, the tags and params of runs, and the files and artifacts the commands write. Every
layer writes and reads them through this module (as Ray Tune keeps its result names in
``ray.tune.result``), so a name cannot drift between the writer and a reader.

MLflow keeps tags and params as text: a flag is written with :func:`flag` and read with
:func:`is_set`, which also reads the ``True`` of runs logged by earlier versions.

Plain Python, no imports: every layer, the core included, may use it.
"""

from __future__ import annotations

# --- Metrics: Ray Tune result keys and MLflow metric keys ----------------------------------

EPOCH = "epoch"  # the epoch a report is of, counted from 1 (also the MLflow step)
TRAIN = "train/"  # prefix: the epoch's mean loss terms, learning rates, push diagnostics
VAL = "val/"  # prefix: per-epoch validation of the student and both teachers
TEST = "test/"  # prefix: the final protocol on the best checkpoint, once
PERF = "perf/"  # prefix: the epoch's training throughput

VAL_CLEAN = "val/clean_acc"
VAL_ROBUST = "val/robust_acc"
VAL_W = "val/w_acc"  # W-acc = w·clean + (1 − w)·robust
BEST_PREFIX = "val/best_"  # + clean_acc, robust_acc, w_acc: at the best epoch so far
OBJECTIVE = "val/best_w_acc"  # a search's objective; its checkpoint is the one tested
BEST_CLEAN = "val/best_clean_acc"
BEST_ROBUST = "val/best_robust_acc"
PARETO = (BEST_CLEAN, BEST_ROBUST)  # a Pareto search's two objectives

PUSH_ACTIVE = "push_active"  # share of each batch in CIARD's push set J
PUSH_EMPTY = "push_empty"  # share of batches with J = ∅ (the push term is exactly 0)
PUSH_KEYS = (PUSH_ACTIVE, PUSH_EMPTY)


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` under ``prefix`` (``{"clean_acc": x}`` -> ``{"test/clean_acc": x}``)."""
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def run_mean(key: str) -> str:
    """The metric of a push diagnostic averaged over the run so far (``train/run_KEY_frac``),
    what the last report of a trial says about the whole run."""
    return f"{TRAIN}run_{key}_frac"


TRIALS_PREFIX = "trials/"  # a search's parent run: + finished, stopped, failed (counts)
CELLS_FINISHED = "cells/finished"  # a grid's parent run
CELLS_FAILED = "cells/failed"
CONFIRM_MEAN = "confirm/mean"  # the confirmed winner's validation objective over seeds
CONFIRM_LCB = "confirm/lcb"  # ... and the lower bound of its 95% interval
CONFIRM_BASE_DIFF = "confirm/base_diff"  # winner − base config, validation objective (with_base)
CONFIRM_BASE_P = "confirm/base_p"  # ... its paired t-test over the seeds
CONFIRM_BASE_TEST_DIFF = "confirm/base_test_diff"  # ... and on the test split (PGD_SAT W-R)
BEST_OBJECTIVE = "best/" + OBJECTIVE  # the best trial's objective, on a search's parent run

# Percent copies (rounded to 0.01) of the accuracies a reader looks for first, which the
# tracking layer logs beside their source metric. In MLflow's runs table they are the columns of
# ablate's views (ablate.tracking.ui); on a run's page their section comes first (sections are
# sorted by name), the per-epoch validation curves first in it. val_* are at the best epoch so
# far (the checkpoint that is tested), epoch_val_* at each epoch.
PCT = "pct/"
PCT_OBJECTIVE = "pct/objective"
TEST_CLEAN = "test/clean_acc"
TEST_ROBUST = "test/pgd_sat_acc"  # the protocol's strongest attack
TEST_W = "test/pgd_sat_wr"  # W-acc with it
PERCENT = {
    VAL_CLEAN: "pct/epoch_val_clean", VAL_ROBUST: "pct/epoch_val_robust", VAL_W: "pct/epoch_val_w",
    OBJECTIVE: PCT_OBJECTIVE, BEST_OBJECTIVE: PCT_OBJECTIVE,
    BEST_CLEAN: "pct/val_clean", BEST_ROBUST: "pct/val_robust",
    TEST_CLEAN: "pct/test_clean", TEST_ROBUST: "pct/test_robust", TEST_W: "pct/test_w",
}
TABLE_METRICS = (PCT_OBJECTIVE, "pct/val_clean", "pct/val_robust", "pct/test_clean",
                 "pct/test_robust", "pct/test_w")  # the runs table's columns, in MLflow's order

# --- Tags of runs (MLflow keeps them as text) -----------------------------------------------

KIND = "kind"  # what a run is: one of the KIND_* values
KIND_SEARCH = "search"  # a search's parent run
KIND_GRID = "grid"  # a grid's parent run (an around-grid too)
KIND_CONFIRM = "confirm"  # a confirm stage's parent run, nested in its search's
KIND_TRIAL = "trial"  # a search trial or a grid cell
KIND_TRAIN = "train"  # ``ablate train``
KIND_EVAL = "eval"  # ``ablate eval`` of a file with no run of its own

PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: nests a run under another
RUN_NAME = "mlflow.runName"  # MLflow's own: the name in the runs table
GIT_COMMIT = "git_commit"
SPEC_HASH = "spec_hash"  # a search's or grid's spec hash (its Ray experiment is NAME-HASH)
CONFIG_HASH = "config_hash"  # ``ablate train``: the config's hash
STORAGE = "storage"  # a job's Ray experiment directory
METHOD = "method"
SEED = "seed"
INTERRUPTED = "interrupted"  # flag: the job was stopped by Ctrl-C (cleared by --resume)
GRID = "grid"  # a grid's settings as JSON, what ``ablate report`` rebuilds its table from
CONFIRM = "confirm"  # a search's confirm stage, one of:
CONFIRM_RUNNING, CONFIRM_DONE = "running", "done"
CONFIRM_INTERRUPTED, CONFIRM_FAILED = "interrupted", "failed"
CONFIRM_WINNER = "confirm_winner"
CONFIRM_P_RUNNER_UP = "confirm_p_runner_up"
BEST_TRIAL = "best_trial"  # a search's parent run: the trial id of the tested trial
OPTUNA_STORAGE = "optuna_storage"
OPTUNA_STUDY = "optuna_study"

TRIAL_ID = "trial_id"  # Ray's trial id: how a resumed job finds the trial's run again
TRIAL_NUMBER = "trial_number"  # 1-based order in which the searcher created the trial
SAMPLED = "sampled"  # a search trial's sampled values, as YAML
ROW = "row"  # a grid cell's row name
EPOCHS_TRAINED = "epochs_trained"
STOPPED_EARLY = "stopped_early"  # flag: ASHA stopped the trial before the last epoch
ERROR = "error"  # why a trial failed: the last 'SomeError: message' line
CHECKPOINT = "checkpoint"  # the directory of trainer.pt and config.yaml (``ablate eval``)
NODE_ID = "node_id"  # the Ray node a trial ended on
GPU_IDS = "gpu_ids"  # the GPUs Ray assigned to a trial (its last worker), comma-separated
CUDA_VISIBLE = "cuda_visible_devices"  # ... and CUDA_VISIBLE_DEVICES in that worker
BEST = "best"  # flag: the trial or cell whose checkpoint was tested as the winner
EVAL_KEY = "eval_key"  # ``ablate eval``: digest of the weights and the protocol's settings
EVAL_PARTIAL = "eval_partial"  # ... and the attacks finished so far (JSON), while unfinished


def flag(value: bool) -> str:
    """A flag as a tag value: ``true`` or ``false``."""
    return "true" if value else "false"


def is_set(value: str | None) -> bool:
    """A flag tag read back (``true``; ``True`` from earlier versions); absent is false."""
    return (value or "").lower() == "true"


# --- Params of parent runs (MLflow flattens them with dots) ---------------------------------

PARAMS_BASE = "base"  # a search's or grid's base experiment: base.optim.epochs, ...
PARAMS_SEARCH = "search"  # a search's spec without its base: search.space.KEY.low, ...
PARAMS_GRID = "grid"  # a grid's spec without its base: grid.rows, grid.seeds, ...
SPACE_ORDER = "space_order"  # under search: the space's keys in spec order (MLflow sorts)
PARAM_COLUMN = "param/"  # a trials table's column of a sampled value


def param(*path: str) -> str:
    """A param's flattened name: ``param(PARAMS_BASE, "optim.epochs")`` is
    ``base.optim.epochs``."""
    return ".".join(path)


# --- Files and artifacts ---------------------------------------------------------------------

CHECKPOINT_FILE = "trainer.pt"  # a Trainer's resumable checkpoint
CONFIG_FILE = "config.yaml"  # the resolved config, beside every checkpoint and in every run
RUN_ID_FILE = "mlflow_run_id"  # ``ablate train``'s run directory: the MLflow run it logs to
BEST_CONFIG = "best_config.yaml"  # a search's best (or confirmed) trial's config
BEST_STUDENT = "checkpoints/best_student.pt"  # ``ablate train``: the best epoch's student
TRIALS_TABLE = "trials"  # a search's trials table: trials.md, .csv, .parquet
TRIALS_MLFLOW_TABLE = "trials.json"  # ... and as an MLflow table
GRID_TABLE = "grid_table"  # a grid's table: grid_table.md, .csv, .parquet
CONFIRM_TABLE = "confirm.md"
IMPORTANCES = "importances.json"
PLOTS = "plots"  # artifact folder of the PNG plots
OPTUNA_FIGURES = "optuna"  # artifact folder of Optuna's HTML figures
OPTUNA_DB = "optuna.db"  # the Optuna study, beside a local SQLite MLflow store
EVAL_FOLDER = "eval"  # ``ablate eval``: robustness.md and the MLflow table robustness.json
