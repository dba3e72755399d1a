"""Teachers from the RobustBench model zoo (the optional extra ``ablate[robustbench]``).

A zoo model is named by its RobustBench name, dataset and threat model; its checkpoint lives in
RobustBench's layout, ``MODEL_DIR/DATASET/THREAT_MODEL/NAME.pt`` (an ensemble:
``NAME.pt_m0.pt``, ``NAME.pt_m1.pt``, ...). The architecture and the checkpoint's key fix-ups
are RobustBench's own (``robustbench.utils.load_model``), so a model loads here exactly as it
does for RobustBench's users; the file is first read with ``torch.load(weights_only=True)``,
so a checkpoint that needs code to unpickle is refused before RobustBench reads it. A zoo
model takes inputs in [0, 1] and normalises them itself.

Nothing here touches the network unless :func:`download` is called.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ablate.core.errors import CheckpointError, ConfigError, one_line
from ablate.core.integrity import verify_file

INSTALL = "pip install 'ablate[robustbench]'"


def _zoo() -> tuple[Any, Any]:
    """``(robustbench.model_zoo.model_dicts, robustbench.utils)``, imported on first use."""
    # robustbench 1.1.1 imports AutoAttack as `autoattack`, its GitHub name; PyPI ships the
    # same code as `pyautoattack`, which ablate already depends on.
    try:
        for name in ("", ".state"):
            module = importlib.import_module(f"pyautoattack{name}")
            sys.modules.setdefault(f"autoattack{name}", module)
        with warnings.catch_warnings():  # its imports' deprecation notes (timm, pkg_resources)
            warnings.simplefilter("ignore")
            from robustbench import utils
            from robustbench.model_zoo import model_dicts
    except ImportError as exc:
        raise ConfigError(f"a RobustBench teacher needs the robustbench package ({INSTALL}): "
                          f"{exc}") from None
    return model_dicts, utils


def entry(name: str, dataset: str, threat_model: str) -> dict[str, Any]:
    """The zoo's entry for the model (``model``: its constructor, ``gdrive_id``)."""
    model_dicts, _ = _zoo()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    models = model_dicts[BenchmarkDataset(dataset)].get(ThreatModel(threat_model), {})
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=3, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown RobustBench model {name!r} for {dataset} {threat_model} "
                          f"({len(models)} known{hint})")
    return models[name]


def checkpoint_files(model_dir: str | Path, name: str, dataset: str, threat_model: str,
                     ) -> list[Path]:
    """Where RobustBench keeps the model's checkpoint(s)."""
    path = Path(model_dir).expanduser() / dataset / threat_model / f"{name}.pt"
    ids = entry(name, dataset, threat_model)["gdrive_id"]
    if isinstance(ids, list):  # an ensemble: one file per member
        return [Path(f"{path}_m{i}.pt") for i in range(len(ids))]
    return [path]


def missing(model_dir: str | Path, name: str, dataset: str, threat_model: str) -> list[Path]:
    return [p for p in checkpoint_files(model_dir, name, dataset, threat_model)
            if not p.is_file()]


def download(model_dir: str | Path, name: str, dataset: str, threat_model: str) -> None:
    """Fetch the missing checkpoint files with RobustBench's downloader; a failure (offline,
    quota) is a one-line ConfigError naming the model and the path."""
    _, utils = _zoo()
    ids = entry(name, dataset, threat_model)["gdrive_id"]
    files = checkpoint_files(model_dir, name, dataset, threat_model)
    for gdrive_id, path in zip(ids if isinstance(ids, list) else [ids], files, strict=True):
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")  # a Ctrl-C leaves no file that looks whole
        try:
            utils.download_gdrive_new(gdrive_id, part)
            if not part.is_file():
                raise OSError("the downloader wrote no file")
            part.replace(path)
        except Exception as exc:  # noqa: BLE001 - gdown raises many kinds; all mean "not here"
            why = one_line(exc)
            raise ConfigError(f"RobustBench model {name} ({dataset} {threat_model}): download "
                              f"to {path} failed: {why}") from None
        finally:
            part.unlink(missing_ok=True)


def load(model_dir: str | Path, name: str, dataset: str, threat_model: str) -> nn.Module:
    """The zoo model with its weights, in eval mode, on the CPU. Every file must be present
    (see :func:`missing`); none is downloaded here."""
    absent = missing(model_dir, name, dataset, threat_model)
    if absent:
        raise ConfigError(f"RobustBench model {name} ({dataset} {threat_model}) not found: "
                          f"looked for {absent[0]}")
    for path in checkpoint_files(model_dir, name, dataset, threat_model):
        verify_file(path)  # torch.load does not check the zip's CRCs
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickled code, truncation, not a torch file
            why = one_line(exc)
            raise CheckpointError(f"{path}: not a weights-only checkpoint, not loaded: "
                                  f"{why}") from None
    _, utils = _zoo()
    try:
        model = utils.load_model(name, model_dir=str(Path(model_dir).expanduser()),
                                 dataset=dataset, threat_model=threat_model)
    except (RuntimeError, KeyError) as exc:  # a state dict of another architecture
        why = one_line(exc)
        raise CheckpointError(f"RobustBench model {name}: its checkpoint does not fit the "
                              f"architecture: {why}") from None
    return model.eval()


def build(name: str, dataset: str, threat_model: str) -> nn.Module:
    """The zoo model's architecture, randomly initialised (for shapes, FLOPs and as the
    target of a teacher state that a search ships to its trials)."""
    return entry(name, dataset, threat_model)["model"]()
