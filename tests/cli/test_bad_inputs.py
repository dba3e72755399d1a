"""Acceptance suite for bad input (issue 11): every case exits 2 with exactly one line
``ablate: error: ...`` naming the field or file, prints no traceback, runs no code from the
input, and writes nothing: the working directory (which also holds the default teacher cache
and MLflow store) is the same before and after.

Each case is one row: an id, the argv (``{in}`` is the directory holding the inputs), the input
files to create there, and a substring the error line must contain. Cases run in-process through
``ablate.cli.main``; two subprocess tests show the alias bomb answers at once through the real
entry point.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from ablate.cli import main
from ablate.core.errors import MAX_LINE
from ablate.core.models import build_model
from tests.helpers import fake_fashion_mnist, write_fashion_mnist

REPO = Path(__file__).resolve().parents[2]

# A digits experiment whose teachers come from checkpoint files, so no case ever trains one.
BASE: dict[str, Any] = {
    "name": "tiny",
    "device": "cpu",
    "data": {"name": "digits"},
    "student": {"arch": "small_cnn", "kwargs": {"width": 4}},
    "teachers": {
        "clean": {"arch": "small_cnn", "kwargs": {"width": 8}, "checkpoint": "{in}/clean.pt"},
        "robust": {"arch": "small_cnn", "kwargs": {"width": 8}, "checkpoint": "{in}/robust.pt"},
    },
    "attack": {"eps": 0.2, "step_size": 0.05, "steps": 2},
    "optim": {"epochs": 2, "lr": 0.1},
    "itt": {"freeze_epochs": 1, "teacher_lr": 0.001},
    "eval": {"val_steps": 2, "val_subset": 100},
}
SPEC = {"name": "tiny-search", "base": BASE, "num_samples": 2, "scheduler": {"name": "none"},
        "space": {"method.alpha": {"type": "float", "low": 0.1, "high": 0.9}}}
GRID = {"name": "tiny-grid", "base": BASE, "baseline": "push", "seeds": [0],
        "rows": [{"name": "push"}, {"name": "no push", "overrides": {"method.push": False}}]}
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True))
PWNED = "PWNED"  # created in the inputs' parent directory if a payload ever runs

File = str | bytes | Callable[[Path], Any]  # text ({in} substituted), raw bytes, or a writer


def edited(doc: dict[str, Any], **changes: Any) -> str:
    """``doc`` as YAML with dotted-path ``changes`` (``teachers.clean.checkpoint=...``)."""
    out = copy.deepcopy(doc)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = value
    return yaml.safe_dump(out)


def state(width: int = 8, in_channels: int = 1) -> Callable[[Path], None]:
    """A small_cnn state dict (the teachers' architecture at width 8 on digits)."""
    def write(path: Path) -> None:
        torch.manual_seed(0)
        net = build_model("small_cnn", num_classes=10, in_channels=in_channels, width=width)
        torch.save(net.state_dict(), path)
    return write


class _Payload:
    """Unpickling this runs ``touch PWNED``: what a hostile checkpoint or data file does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


def _pwned(path: Path) -> Path:
    return next(p for p in path.parents if p.name == "in").parent / PWNED


def evil_torch(path: Path) -> None:
    torch.save({"model": _Payload(_pwned(path))}, path)


def evil_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({b"data": _Payload(_pwned(path)), b"labels": []}, protocol=2))


def truncated(writer: Callable[[Path], Any]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        writer(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return write


def fake_cifar(bad: str | None = None, how: Callable[[Path], Any] = evil_pickle
               ) -> Callable[[Path], None]:
    """A CIFAR-10 directory in the real python layout (pickled dicts with b'data' uint8
    N x 3072 and b'labels'), tiny random data; file ``bad`` is written by ``how`` instead."""
    def write(root: Path) -> None:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            entry = {b"batch_label": name.encode(), b"labels": list(range(10)) * 2,
                     b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8)}
            (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        if bad is not None:
            how(folder / bad)
    return write


def other_trainer(path: Path) -> None:
    """A trainer.pt with every key, of a run whose student is 4x wider than the config's."""
    torch.manual_seed(0)
    student = build_model("small_cnn", num_classes=10, in_channels=1, width=16).state_dict()
    torch.save({"epoch": 1, "student": student, "robust_teacher": None, "optimizer": {},
                "teacher_optimizer": None, "state": {}, "best": {}, "history": [], "rng": {}},
               path)


def trainer_run(weights: Callable[[Path], Any]) -> Callable[[Path], None]:
    """A run directory as `ablate train` leaves it: trainer.pt beside config.yaml."""
    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump(BASE).replace("{in}",
                                                                        str(folder.parent)))
        weights(folder / "trainer.pt")
    return write


def planted_storage(mode: int) -> Callable[[Path], None]:
    """Ray storage holding an experiment of ``s.yaml`` (written just before) whose
    ``tuner.pkl`` runs code when unpickled, its directory set to ``mode``."""
    def write(root: Path) -> None:
        from ablate.config import load_search_spec

        exp = root / f"tiny-search-{load_search_spec(root.parent / 's.yaml').digest()}"
        exp.mkdir(parents=True)
        (exp / "tuner.pkl").write_bytes(pickle.dumps(_Payload(_pwned(exp / "tuner.pkl"))))
        exp.chmod(mode)
    return write


def symlink_loop(path: Path) -> None:
    """``path`` -> ``path``.2 -> ``path``: opening either fails with ELOOP."""
    other = path.with_name(path.name + ".2")
    other.symlink_to(path.name)
    path.symlink_to(other.name)


TEACHERS: dict[str, File] = {"clean.pt": state(), "robust.pt": state()}
CFG: dict[str, File] = {"c.yaml": yaml.safe_dump(BASE), **TEACHERS}
C = ["{in}/c.yaml"]
CIFAR = [*C, "data.name=cifar10", "data.root={in}/cifar", "data.val_size=20",
         "teachers.clean.checkpoint=null",
         "teachers.robust.checkpoint=null",
         "teachers.clean.train={method: ce, epochs: 1}",
         "teachers.robust.train={method: ce, epochs: 1}"]
BAD_URI = "notascheme:://x"

def _damaged_fashion_mnist(folder: Path) -> None:
    """Fashion-MNIST's four idx files with the last test label cut off."""
    write_fashion_mnist(folder, fake_fashion_mnist(), gz=False)
    labels = folder / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1])


CASES: list[tuple[str, list[str], dict[str, File], str]] = [
    # 5. names that would become paths outside the project
    ("name-traversal-override", ["train", *C, "name=../../x"], CFG, "`name`"),
    ("name-traversal-file", ["validate", "{in}/n.yaml"],
     {"n.yaml": edited(BASE, name="../../x"), **TEACHERS}, "`name`"),
    ("name-slash", ["train", *C, "name=a/b"], CFG, "`name`"),
    ("name-dotdot", ["validate", *C, "name=a..b"], CFG, "`name`"),
    ("name-absolute", ["validate", *C, "name=/tmp/x"], CFG, "`name`"),
    ("search-name", ["search", "{in}/s.yaml", "--dry-run", "name=../x"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`name`"),
    ("search-base-name", ["validate", "{in}/s.yaml", "base.name=../x"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`base.name`"),
    ("grid-name", ["grid", "{in}/g.yaml", "--dry-run", "name=../../g"],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS}, "`name`"),
    ("grid-name-validate", ["validate", "{in}/g.yaml", "name=x/../../g"],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS}, "`name`"),
    # 6. inputs that hang: YAML aliases
    ("alias-bomb-file", ["validate", "{in}/bomb.yaml"], {"bomb.yaml": BOMB}, "bomb.yaml"),
    ("alias-bomb-train", ["train", "{in}/bomb.yaml"], {"bomb.yaml": BOMB}, "alias"),
    ("alias-override", ["train", *C, "optim.milestones=[&a 1, *a]"], CFG, "alias"),
    ("alias-bomb-override", ["validate", *C, "eval.attacks={" + BOMB.replace("\n", ", ") + "}"],
     CFG, "alias"),
    ("alias-merge-key", ["validate", "{in}/m.yaml"],
     {"m.yaml": "x: &x {lr: 0.1}\noptim:\n  <<: *x\n"}, "m.yaml"),
    ("oversized-yaml", ["validate", "{in}/big.yaml"],
     {"big.yaml": "name: x\n" + "#" * (1 << 20) + "\n"}, "big.yaml"),
    ("int-beyond-digit-limit", ["validate", *C, "optim.epochs=1" + "0" * 5000], CFG,
     "optim.epochs"),
    # 7. non-finite floats and huge sizes
    ("lr-inf", ["train", *C, "optim.lr=.inf"], CFG, "`optim.lr`"),
    # compute.cuda_graph where it cannot run (issue 29)
    ("graph-on-cpu", ["train", *C, "compute.cuda_graph=true", "device=cpu"], CFG,
     "`compute.cuda_graph`"),
    ("graph-fp16", ["validate", *C, "compute.cuda_graph=true", "compute.amp=fp16"], CFG,
     "amp: fp16"),
    ("graph-compile", ["validate", *C, "compute.cuda_graph=true", "compute.compile=true"], CFG,
     "exclusive"),
    ("teacher-lr-inf", ["train", *C, "itt.teacher_lr=.inf"], CFG, "`itt.teacher_lr`"),
    ("alpha-nan", ["validate", *C, "method.alpha=.nan"], CFG, "`method.alpha`"),
    ("eps-minus-inf", ["validate", *C, "attack.eps=-.inf"], CFG, "`attack.eps`"),
    ("lam-inf", ["validate", *C, "method.lam=.inf"], CFG, "`method.lam"),
    ("kwargs-inf", ["validate", *C, "student.kwargs.width=.inf"], CFG, "student.kwargs"),
    ("space-high-inf", ["validate", "{in}/s.yaml", "space.method.alpha.high=.inf"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "space.method.alpha.high"),
    ("epochs-huge", ["train", *C, "optim.epochs=99999999999999999999999"], CFG,
     "`optim.epochs`"),
    ("batch-huge", ["train", *C, "optim.batch_size=1000000000000"], CFG, "`optim.batch_size`"),
    ("teacher-batch-huge", ["validate", *C, "teachers.clean.train={method: ce, "
                            "batch_size: 100000000}"], CFG, "teachers.clean.train.batch_size"),
    ("steps-huge", ["validate", *C, "attack.steps=1000000000"], CFG, "`attack.steps`"),
    ("seed-negative", ["validate", *C, "seed=-1"], CFG, "`seed`"),
    ("seed-beyond-int64", ["validate", *C, "seed=18446744073709551616"], CFG, "`seed`"),
    ("split-seed-huge", ["validate", *C, "data.split_seed=99999999999"], CFG,
     "`data.split_seed`"),
    ("width-huge", ["validate", *C, "student.kwargs.width=100000"], CFG,
     "`student.kwargs.width`"),
    ("width-negative", ["validate", *C, "student.kwargs.width=-3"], CFG, "`student`"),
    ("val-size-beyond-data", ["validate", *C, "data.val_size=5000"], CFG, "`data.val_size`"),
    ("milestone-huge", ["validate", *C, "optim.milestones=[1, 10000000000]"], CFG,
     "optim.milestones.1"),
    ("num-samples-huge", ["validate", "{in}/s.yaml", "num_samples=1000000000000"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`num_samples`"),
    ("max-concurrent-huge", ["search", "{in}/s.yaml", "--dry-run",
                             "max_concurrent=1000000000000"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`max_concurrent`"),
    ("searcher-seed-negative", ["validate", "{in}/s.yaml", "searcher.seed=-5"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`searcher.seed`"),
    ("grid-seed-huge", ["grid", "{in}/g.yaml", "--dry-run", "seeds=[0, 99999999999]"],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS}, "seeds.1"),
    ("eval-batch-size-zero", ["eval", "{in}/run", "--batch-size", "0"],
     {"run": trainer_run(state(width=4))}, "--batch-size"),
    # 7. teacher checkpoints: validate opens them exactly as train does
    ("wrong-arch-validate", ["validate", *C], {**CFG, "clean.pt": state(width=16)}, "clean.pt"),
    ("wrong-arch-train", ["train", *C], {**CFG, "robust.pt": state(width=16)}, "robust.pt"),
    ("wrong-arch-search", ["search", "{in}/s.yaml"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS, "clean.pt": state(in_channels=3)},
     "clean.pt"),
    ("truncated-validate", ["validate", *C], {**CFG, "robust.pt": truncated(state())},
     "robust.pt"),
    ("truncated-train", ["train", *C], {**CFG, "clean.pt": truncated(state())}, "clean.pt"),
    ("malicious-validate", ["validate", *C], {**CFG, "clean.pt": evil_torch}, "clean.pt"),
    ("malicious-train", ["train", *C], {**CFG, "robust.pt": evil_torch}, "robust.pt"),
    ("malicious-grid", ["grid", "{in}/g.yaml"],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS, "robust.pt": evil_torch}, "robust.pt"),
    ("not-a-state-dict", ["validate", *C],
     {**CFG, "clean.pt": lambda p: torch.save([1, 2, 3], p)}, "clean.pt"),
    ("missing-checkpoint", ["validate", *C, "teachers.clean.checkpoint={in}/nope.pt"], CFG,
     "teachers.clean.checkpoint"),
    # 7. train --resume with nothing to resume; 8. damaged or hostile trainer.pt
    ("resume-nothing", ["train", *C, "--resume", "--run-dir", "{in}/rd"], CFG, "/rd"),
    ("resume-nothing-default-dir", ["train", *C, "--resume"], CFG, "runs/tiny-"),
    ("resume-malicious", ["train", *C, "--resume", "--run-dir", "{in}/rd"],
     {**CFG, "rd": trainer_run(evil_torch)}, "trainer.pt"),
    ("resume-truncated", ["train", *C, "--resume", "--run-dir", "{in}/rd"],
     {**CFG, "rd": trainer_run(truncated(state(width=4)))}, "trainer.pt"),
    ("resume-not-a-trainer", ["train", *C, "--resume", "--run-dir", "{in}/rd"],
     {**CFG, "rd": trainer_run(state(width=4))}, "trainer.pt"),
    ("resume-other-config", ["train", *C, "--resume", "--run-dir", "{in}/rd"],
     {**CFG, "rd": trainer_run(other_trainer)}, "trainer.pt"),
    ("eval-truncated", ["eval", "{in}/run"], {**TEACHERS, "run": trainer_run(
        truncated(state(width=4)))}, "trainer.pt"),
    ("eval-malicious", ["eval", "{in}/run/trainer.pt"], {**TEACHERS, "run": trainer_run(
        evil_torch)}, "trainer.pt"),
    ("eval-wrong-arch-student", ["eval", "{in}/student.pt", "--config", "{in}/c.yaml"],
     {**CFG, "student.pt": state(width=16)}, "student.pt"),
    # 8. malformed tracking URIs, for every command that takes one
    ("uri-train", ["train", *C, "--tracking-uri", BAD_URI], CFG, "--tracking-uri"),
    ("uri-search", ["search", "{in}/s.yaml", "--tracking-uri", BAD_URI],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "--tracking-uri"),
    ("uri-grid", ["grid", "{in}/g.yaml", "--tracking-uri", BAD_URI],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS}, "--tracking-uri"),
    ("uri-report", ["report", "x", "--tracking-uri", BAD_URI], {}, "--tracking-uri"),
    ("uri-eval", ["eval", "{in}/run", "--tracking-uri", BAD_URI],
     {"run": trainer_run(state(width=4))}, "--tracking-uri"),
    ("uri-ui", ["ui", "--tracking-uri", BAD_URI], {}, "--tracking-uri"),
    ("uri-sqlite-no-dir", ["train", *C, "--tracking-uri", "sqlite:////nonexistent/dir/x.db"],
     CFG, "--tracking-uri"),
    ("uri-plain-word", ["report", "x", "--tracking-uri", "foo"], {}, "--tracking-uri"),
    ("uri-http-no-host", ["search", "{in}/s.yaml", "--tracking-uri", "http://"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "--tracking-uri"),
    ("uri-file-no-dir", ["eval", "x", "--tracking-uri", "file:///nonexistent/a/b"], {},
     "--tracking-uri"),
    # 8. a CIFAR directory holding hostile or damaged pickles
    ("cifar-malicious-validate", ["validate", *CIFAR], {**CFG, "cifar": fake_cifar(
        "data_batch_3")}, "data_batch_3"),
    ("cifar-malicious-train", ["train", *CIFAR], {**CFG, "cifar": fake_cifar("test_batch")},
     "test_batch"),
    ("cifar-truncated", ["validate", *CIFAR], {**CFG, "cifar": fake_cifar(
        "data_batch_1", truncated(lambda p: None))}, "data_batch_1"),
    ("cifar-missing", ["validate", *CIFAR], CFG, "cifar-10-batches-py"),
    ("cifar-val-size-beyond-data", ["validate", *CIFAR, "data.val_size=95"],
     {**CFG, "cifar": fake_cifar()}, "`data.val_size`"),
    # 4. Ray state others can write is never restored (unpickled); 6. a dead cluster address
    ("resume-group-writable-storage", ["search", "{in}/s.yaml", "--resume", "--storage",
                                       "{in}/st"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS, "st": planted_storage(0o770)},
     "writable by other users"),
    ("address-nothing-listens", ["search", "{in}/s.yaml", "--address", "127.0.0.1:1",
                                 "--connect-timeout", "1"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "--address 127.0.0.1:1"),
    ("address-malformed", ["grid", "{in}/g.yaml", "--address", "nohost"],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS}, "--address nohost"),
    ("connect-timeout-nan", ["search", "{in}/s.yaml", "--connect-timeout", "nan"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "--connect-timeout"),
    # 9. unknown run ids without a store: refused, and no mlflow.db created
    ("report-unknown-run", ["report", "0123456789abcdef"], {}, "no MLflow store"),
    ("eval-unknown-run", ["eval", "0123456789abcdef"], {}, "0123456789abcdef"),
    # 11. strict types: no bool, text or float is turned into an integer (issue 28)
    ("epochs-yes", ["validate", *C, "optim.epochs=yes"], CFG, "`optim.epochs`"),
    ("epochs-true", ["train", *C, "optim.epochs=true"], CFG, "`optim.epochs`"),
    ("epochs-float", ["validate", *C, "optim.epochs=2.0"], CFG, "`optim.epochs`"),
    ("epochs-text", ["validate", *C, "optim.epochs='3'"], CFG, "`optim.epochs`"),
    ("epochs-bool-in-file", ["validate", "{in}/b.yaml"],
     {"b.yaml": edited(BASE, optim__epochs=True), **TEACHERS}, "`optim.epochs`"),
    ("lr-bool", ["validate", *C, "optim.lr=true"], CFG, "`optim.lr`"),
    ("milestone-bool", ["validate", *C, "optim.milestones=[true]"], CFG, "optim.milestones.0"),
    ("teacher-epochs-bool", ["validate", *C, "teachers.clean.train={method: ce, epochs: on}"],
     CFG, "teachers.clean.train.epochs"),
    ("num-samples-bool", ["validate", "{in}/s.yaml", "num_samples=true"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`num_samples`"),
    ("grid-seed-bool", ["grid", "{in}/g.yaml", "--dry-run", "seeds=[0, true]"],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS}, "seeds.1"),
    ("width-bool", ["validate", *C, "student.kwargs.width=true"], CFG, "student.kwargs"),
    # 11. an empty mapping would reset a whole section to its defaults
    ("section-reset", ["train", *C, "optim={}"], CFG,
     "`optim={}` would reset every field of `optim` to its default; set fields one by one, "
     "e.g. optim.epochs=VALUE"),
    ("section-reset-method", ["validate", *C, "method={}"], CFG, "`method={}` would reset"),
    ("section-reset-spec-base", ["search", "{in}/s.yaml", "--dry-run", "base.optim={}"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`base.optim={}` would reset"),
    ("section-reset-spec-overrides", ["validate", "{in}/s.yaml", "overrides.itt={}"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "`overrides.itt={}` would reset"),
    ("section-reset-grid", ["grid", "{in}/g.yaml", "--dry-run", "base.teachers.clean={}"],
     {"g.yaml": yaml.safe_dump(GRID), **TEACHERS}, "`base.teachers.clean={}` would reset"),
    # 11. paths that are not regular files are named as what they are (a FIFO: below)
    ("config-symlink-loop", ["validate", "{in}/loop.yaml"], {"loop.yaml": symlink_loop},
     "loop.yaml: is a symlink loop"),
    ("base-symlink-loop", ["validate", "{in}/s.yaml"],
     {"s.yaml": yaml.safe_dump({**SPEC, "base": "loop.yaml"}), "loop.yaml": symlink_loop},
     "loop.yaml: is a symlink loop"),
    ("spec-symlink-loop-by-name", ["search", "{in}/loop"], {"loop": symlink_loop},
     "loop: is a symlink loop"),
    ("base-device", ["validate", "{in}/g.yaml"],
     {"g.yaml": yaml.safe_dump({**GRID, "base": "/dev/zero"})},
     "/dev/zero: is a device, not a file"),
    ("config-device", ["train", "/dev/null"], {}, "/dev/null: is a device, not a file"),
    ("config-directory", ["validate", "{in}/d.yaml"], {"d.yaml": lambda p: p.mkdir()},
     "d.yaml: is a directory, not a file"),
    ("base-dangling-link", ["validate", "{in}/s.yaml"],
     {"s.yaml": yaml.safe_dump({**SPEC, "base": "gone.yaml"}),
      "gone.yaml": lambda p: p.symlink_to("nothing.yaml")},
     "gone.yaml: is a symlink to nothing.yaml, which does not exist"),
    # 11. grids past the cell cap; a search's confirm stage likewise
    ("grid-too-many-cells", ["grid", "{in}/g.yaml", "--dry-run"],
     {"g.yaml": yaml.safe_dump({**GRID, "seeds": list(range(5001))}), **TEACHERS},
     "2 rows x 5001 seeds = 10,002 cells; a grid has at most 10,000 cells"),
    ("confirm-too-many-cells", ["validate", "{in}/s.yaml",
                                "confirm={top_k: 100, seeds: [" + ", ".join(
                                    map(str, range(1, 102))) + "]}"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "top_k 100 x 101 seeds = 10,100 cells"),
    # older classes
    ("unknown-key", ["train", *C, "optim.lrr=0.1"], CFG, "`optim.lrr`: unknown key"),
    ("wrong-type", ["train", *C, "optim.epochs=many"], CFG, "`optim.epochs`"),
    ("out-of-range", ["train", *C, "optim.lr=-0.1"], CFG, "`optim.lr`"),
    ("search-low-gt-high", ["search", "{in}/s.yaml", "--dry-run",
                            "space.method.alpha.low=0.95"],
     {"s.yaml": yaml.safe_dump(SPEC), **TEACHERS}, "space.method.alpha"),
    ("search-unknown-path", ["validate", "{in}/s.yaml"], {"s.yaml": yaml.safe_dump(
        {**SPEC, "space": {"method.alpah": {"type": "float", "low": 0.1, "high": 0.2}}}),
        **TEACHERS}, "unknown config path"),
    ("malformed-yaml", ["validate", "{in}/broken.yaml"],
     {"broken.yaml": "name: x\noptim: {epochs: 2\nseed: 1\n"}, "broken.yaml"),
    ("missing-file", ["train", "{in}/nope.yaml"], {}, "nope.yaml"),
    ("unknown-option", ["train", *C, "--bogus"], CFG, "--bogus"),
    ("missing-argument", ["train"], {}, "config"),
    # 10. a damaged Fashion-MNIST file under data.root (a checked file before anything starts)
    ("fashion-mnist-truncated", ["validate", *C, "data.name=fashion_mnist",
                                 "data.root={in}/fm", "data.val_size=5000"],
     {**CFG, "fm": _damaged_fashion_mnist}, "t10k-labels-idx1-ubyte: 9999 bytes of data"),
]
if torch.cuda.is_available():  # device=cuda is only bad input where there is no GPU
    CASES.append(pytest.param("device-cuda", [], {}, "", marks=pytest.mark.skip("CUDA present")))
else:
    CASES.append(("device-cuda", ["train", *C, "device=cuda"], CFG, "`device`"))


def _make(folder: Path, files: dict[str, File]) -> None:
    folder.mkdir()
    for name, content in files.items():
        path = folder / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{in}", str(folder)))


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _ids(cases: list[Any]) -> list[str]:
    return [c[0] if isinstance(c, tuple) else c.values[0] for c in cases]


@pytest.mark.parametrize(("case", "argv", "files", "needle"), CASES, ids=_ids(CASES))
def test_bad_input_exits_2_with_one_line(case: str, argv: list[str], files: dict[str, File],
                                         needle: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    inputs, cwd = tmp_path / "in", tmp_path / "cwd"
    _make(inputs, files)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("ABLATE_CACHE", str(cwd / "cache"))  # anything written would show below
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = _listing(cwd)

    code = main([a.replace("{in}", str(inputs)) for a in argv])

    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ablate: error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert _listing(cwd) == before, "the refused command wrote into the working directory"
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob(PWNED))


def test_alias_bomb_answers_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    """In-process the refusal takes milliseconds: the bomb is never expanded."""
    (tmp_path / "bomb.yaml").write_text(BOMB + "j: &j [" + ", ".join(["*i"] * 9) + "]\n")
    start = time.perf_counter()
    assert main(["validate", str(tmp_path / "bomb.yaml")]) == 2
    assert time.perf_counter() - start < 1.0
    assert "YAML aliases are not allowed" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "override"])
def test_alias_bomb_through_the_console_script(where: str, tmp_path: Path) -> None:
    """What the red team ran: the real entry point answers (exit 2) instead of growing to
    gigabytes; the time limit covers the ~10 s of imports."""
    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(BASE))
    args = (["bomb.yaml"] if where == "file" else
            ["c.yaml", "eval.attacks={" + BOMB.replace("\n", ", ") + "}"])
    proc = subprocess.run([sys.executable, "-m", "ablate.cli", "validate", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("ablate: error: ") and "alias" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_a_fifo_is_named_and_never_read(tmp_path: Path) -> None:
    """A FIFO as the config, or as a spec's base, is refused as what it is; reading one would
    block until a writer appears (forever). Through the real entry point, under a timeout."""
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SPEC, "base": "fifo.yaml"}))
    for target in ("fifo.yaml", "s.yaml"):
        proc = subprocess.run([sys.executable, "-m", "ablate.cli", "validate", target],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            "ablate: error: fifo.yaml: is a FIFO, not a file"), proc.stderr


LONG = "x" * 100_000


@pytest.mark.parametrize(("argv", "files", "needle"), [
    (["validate", *C, f"name={LONG}"], CFG, "field `name`: Value error, 'xxx"),
    (["validate", *C, f"{LONG}=1"], CFG, "field `xxxxx"),
    (["validate", *C, "optim={" + ", ".join(f"k{i}: 1" for i in range(10_000)) + "}"], CFG,
     "field `optim.k5`: unknown key; ... and 9994 more fields"),
    (["validate", "{in}/k.yaml"], {"k.yaml": yaml.safe_dump(
        {**BASE, **{f"key{i}": i for i in range(10_000)}}), **TEACHERS}, "... and 9994 more"),
    (["validate", f"{{in}}/{'y' * 200}/{'z' * 200}.yaml"], {}, "more characters)"),
    (["train", *C, *[f"--bogus{i}" for i in range(2_000)]], CFG, "more characters)"),
], ids=["long-name", "long-key", "10k-unknown-override-keys", "10k-unknown-file-keys",
        "long-path", "2k-unknown-options"])
def test_error_lines_stay_readable(argv: list[str], files: dict[str, File], needle: str,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """10,000 unknown keys used to print a 279 KB line, and a 100 KB name was echoed whole:
    every `ablate: error:` line is now at most MAX_LINE (400) characters and a note of what
    it left out."""
    inputs = tmp_path / "in"
    _make(inputs, files)
    assert main([a.replace("{in}", str(inputs)) for a in argv]) == 2
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith("ablate: error: ") and needle in line, line[:500]
    assert len(line) <= len("ablate: error: ") + MAX_LINE + 30, len(line)


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: the hostile files above do run their payload under a plain unpickler, so the
    PWNED checks of the table mean something."""
    (tmp_path / "in").mkdir()
    evil_pickle(tmp_path / "in" / "batch")
    with open(tmp_path / "in" / "batch", "rb") as f:
        pickle.load(f)  # noqa: S301 (on purpose: a file we just wrote, in a temp dir)
    assert (tmp_path / PWNED).exists()


def test_good_inputs_still_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """The checks refuse only what is bad: the same files, undamaged, validate."""
    inputs = tmp_path / "in"
    _make(inputs, {**CFG, "cifar": fake_cifar(), "d.yaml": "name: 2024-01-01\n",
                   "s.yaml": yaml.safe_dump(SPEC), "g.yaml": yaml.safe_dump(GRID)})
    monkeypatch.chdir(tmp_path)
    for argv in (C, CIFAR, ["{in}/s.yaml"], ["{in}/g.yaml"]):
        assert main(["validate", *[a.replace("{in}", str(inputs)) for a in argv]]) == 0, (
            capsys.readouterr().err)
    from ablate.config import check_tracking_uri, read_yaml

    assert read_yaml(inputs / "d.yaml") == {"name": "2024-01-01"}  # a date stays text
    for driver in ("psycopg", "pymysql"):  # database URIs need their driver importable
        (tmp_path / "drivers" / driver).mkdir(parents=True)
        (tmp_path / "drivers" / driver / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "drivers"))
    for uri in (f"sqlite:///{inputs}/new.db", f"file://{inputs}", str(inputs),
                f"file://{inputs}/mlruns", "http://127.0.0.1:5000", "https://mlflow.example",
                "postgresql://u:p@db:5432/mlflow", "mysql+pymysql://db/mlflow", "databricks"):
        check_tracking_uri(uri)
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "runs").exists()
