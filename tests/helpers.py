"""Helpers shared by the test modules: tiny configs, spec and grid documents, writing them,
running a refused command, reading runs back from the MLflow store, and interrupting a
command with a signal. Test modules import these from here, never from each other."""

from __future__ import annotations

import copy
import gzip
import os
import pickle
import signal
import socket
import struct
import subprocess
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.config import dump_yaml
from ablate.core.catalog import DATASETS
from ablate.core.fashion_mnist import APT_PACKAGE, FILES, SIZES

REPO = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits"},
    "student": {"arch": "small_cnn", "kwargs": {"width": 4}},
    "teachers": {
        "clean": {"arch": "small_cnn", "kwargs": {"width": 8},
                  "train": {"method": "ce", "epochs": 2, "lr": 0.1}},
        "robust": {"arch": "small_cnn", "kwargs": {"width": 8},
                   "train": {"method": "pgd_at", "epochs": 1, "lr": 0.1, "steps": 2}},
    },
    "attack": {"eps": 0.2, "step_size": 0.05, "steps": 2},
    "optim": {"epochs": 2, "lr": 0.1},
    "itt": {"freeze_epochs": 1, "teacher_lr": 0.001},
    "eval": {"val_steps": 2, "val_subset": 100},
}


def write(path: Path, cfg: dict[str, Any] | str) -> Path:
    # dump_yaml: a dict used twice (GRID["rows"][0] in two rows) is written out twice rather
    # than as a YAML alias, which config files may not contain.
    path.write_text(cfg if isinstance(cfg, str) else dump_yaml(cfg, sort_keys=True))
    return path


def run_bad(workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    # Nothing started or half-written: no MLflow store, no run directory, no teacher cache.
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "runs").exists() and not (workdir / "cache").exists()
    return err


BASE = copy.deepcopy(TINY) | {"optim": {"epochs": 4, "lr": 0.1}}
SPEC: dict[str, Any] = {
    "name": "tiny-search",
    "base": BASE,
    "space": {
        "method.alpha": {"type": "float", "low": 0.1, "high": 1.0},
        "itt.teacher_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "optim.lr": {"type": "categorical", "choices": [0.05, 0.1]},
    },
    "searcher": {"seed": 0},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "num_samples": 5,
    "max_concurrent": 1,  # one at a time: ASHA's decisions do not depend on timing
    "max_failures": 0,
}


def store(workdir: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    return client, client.get_experiment_by_name("tiny-search").experiment_id


def runs_by_kind(client: MlflowClient, exp: str) -> tuple[Any, list[Any]]:
    runs = client.search_runs([exp])
    parents = [r for r in runs if r.data.tags.get("kind") == "search"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("kind") == "trial"]


def steps(client: MlflowClient, run: Any) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, "val/w_acc")]


def interrupt_after_first_trial(cmd: list[str], cwd: Path, env: dict[str, str], *,
                                group: bool = False, sig: int = signal.SIGINT) -> list[str]:
    """Run ``cmd`` and send ``sig`` once the first trial has ended: to the driver only, or
    (``group``) to its whole process group as a terminal's Ctrl-C does (or a batch system's
    SIGTERM). The exit code must be 128 + the signal (Ctrl-C 130, SIGTERM 143, SIGHUP 129),
    with the resume hint, and no summary claimed from the partial search."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, env=env, start_new_session=group)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("trial ") and "epochs" in line:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            break
    lines += proc.stdout.readlines()
    code = proc.wait(timeout=120)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        return lines
    out = "".join(lines)
    assert code == 128 + sig, out
    # Ray may log after our last line (stderr is merged), so look for the hint anywhere.
    assert any("continue with:" in ln and ln.rstrip().endswith("--resume") for ln in lines)
    assert "no summary from partial work" in out
    for claim in ("stopped early by ASHA,", "best trial", "test (best epoch", "| row"):
        assert claim not in out, out  # nothing summarised from a partial search
    return lines


def assert_interrupted(client: MlflowClient, parent: Any, children: list[Any]) -> None:
    """The store after Ctrl-C: the parent KILLED and tagged, no run left RUNNING, only trials
    that really ended FINISHED."""
    assert parent.info.status == "KILLED" and parent.data.tags["interrupted"] == "true"
    assert children and all(c.info.status in ("FINISHED", "KILLED") for c in children)
    for c in children:
        if c.info.status == "FINISHED":
            assert "epochs_trained" in c.data.tags
    assert any(c.info.status == "FINISHED" for c in children)


def duplicated_rows(client: MlflowClient, run: Any) -> list[tuple[str, int]]:
    """(metric, step) pairs logged more than once in a run."""
    out = []
    for key in run.data.metrics:
        seen = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        out += [(key, step) for step in set(seen) if seen.count(step) > 1]
    return out


GRID: dict[str, Any] = {
    "name": "tiny-grid",
    "base": copy.deepcopy(TINY),
    "rows": [
        {"name": "no push", "overrides": {"method.push": False},
         "paper": {"clean_acc": 90.0}},
        {"name": "push", "overrides": {}},
    ],
    "baseline": "no push",
    "seeds": [0, 1],
    "max_concurrent": 2,
}


def edited(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(GRID)
    out.update(changes)
    return out


def grid_runs(workdir: Path) -> tuple[MlflowClient, Any, list[Any]]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-grid").experiment_id
    runs = client.search_runs([exp])
    parents = [r for r in runs if r.data.tags.get("kind") == "grid"]
    assert len(parents) == 1
    return client, parents[0], [r for r in runs if r.data.tags.get("kind") == "trial"]


def write_fake_cifar10(root: str, per_batch: int = 20, n_test: int = 30) -> None:
    """Official CIFAR-10 python layout: pickled dicts, ``data`` uint8 (N, 3072) in CHW order."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for fname, n in files:
        entry = {
            "batch_label": fname,
            "labels": [int(v) for v in np.arange(n) % 10],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{j}.png" for j in range(n)],
        }
        with open(os.path.join(folder, fname), "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)], "num_cases_per_batch":
                     per_batch, "num_vis": 3072}, f)


# --- Fashion-MNIST idx files -----------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes, written by hand from the format's description."""
    magic = 0x00000800 | array.ndim  # 0, 0, type 0x08 (unsigned byte), number of dimensions
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def fake_fashion_mnist() -> dict[str, np.ndarray]:
    """Full-size files (the reader insists on 60,000 and 10,000 images): each image's first
    pixel is its index mod 251, its label the index mod 10."""
    out = {}
    for part, n in SIZES.items():
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) % 251
        out[f"{part}_images"], out[f"{part}_labels"] = images, (np.arange(n) % 10).astype(np.uint8)
    return out


def write_fashion_mnist(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in FILES.items():
        blob = idx_bytes(arrays[key])
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob, compresslevel=1))
        else:
            (folder / name).write_bytes(blob)
    return folder


def fashion_mnist_installed() -> bool:
    """Whether Debian's Fashion-MNIST files are here; where they must be (CI sets
    ABLATE_REQUIRE_FASHION_MNIST=1 after installing the package) their absence fails."""
    system = Path(DATASETS["fashion_mnist"].system_dirs[0])
    if all((system / f"{name}.gz").is_file() for name in FILES.values()):
        return True
    if os.environ.get("ABLATE_REQUIRE_FASHION_MNIST") == "1":
        pytest.fail(f"Debian's {APT_PACKAGE} is not installed ({system})")
    return False


def require_fashion_mnist() -> None:
    """Skip the test without Debian's Fashion-MNIST files (fail in CI)."""
    if not fashion_mnist_installed():
        pytest.skip(f"Debian's {APT_PACKAGE} is not installed")


def data_offset(path: Path, suffix: str) -> int:
    """Where the bytes of the zip entry ending in ``suffix`` (a tensor's storage) begin."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    raw = path.read_bytes()
    start = info.header_offset
    name_len = int.from_bytes(raw[start + 26:start + 28], "little")
    extra_len = int.from_bytes(raw[start + 28:start + 30], "little")
    return start + 30 + name_len + extra_len


def flip(path: Path, offset: int, count: int = 8) -> None:
    """Garble ``count`` bytes of a file in place: what a bad disk or a partial copy does."""
    raw = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether an MLflow server at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
