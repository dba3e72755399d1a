"""Every benchmark runs end to end with tiny arguments, so none can rot unnoticed: each is
started as a user starts it (``python benchmarks/NAME.py ...``) in a fresh working directory,
must exit 0 and print the line its numbers come in. The digits teachers are trained once, into
a teacher cache the benchmarks share. What the benchmarks measure is in docs/benchmarks.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

BENCHMARKS = REPO / "benchmarks"
SMALL_CNNS = [f"{role}.{key}={value}" for role in ("student", "teachers.clean", "teachers.robust")
              for key, value in (("arch", "small_cnn"), ("kwargs", "{width: 4}"))]
# script, tiny arguments, a line of its results (regex)
CASES = [
    ("step_throughput.py", ["--skip-cifar", "--digits-steps", "2", "--warmup", "1",
                            "--threads", "1"], r"digits +\| on +\| +[\d.]+ \| +[\d.]+ \| [\d.]+x"),
    ("compute_switches.py", ["--skip-cifar", "--digits-steps", "2", "--warmup", "1",
                             "--threads", "1"], r"digits +\| bf16 +\| +[\d.]+ \| [\d.]+x"),
    ("method_throughput.py", ["--batches", "1"], r"ciard\+igdm +[\d.]+ +[\d.]+x"),
    ("eval_suite.py", ["--width", "4", "--ce-epochs", "1", "--at-epochs", "1",
                       "--aa-subset", "4"], r"AutoAttack on the first 4 of 359 test samples"),
    ("device_check.py", ["--device", "cpu", "--students", "resnet18", "--modes", "sync-free",
                         "--batch", "2",
                         "--warmup", "1", "--seconds", "0.5", "--pack", "1",
                         "--pack-seconds", "1", "--threads", "1"],
     r"1 trial\(s\): +[\d.]+ img/s in all"),
    ("cifar_device_path.py", ["--device", "cpu", "--per-file", "20", "--n-test", "20",
                              "--epochs", "1", "--amp", "none", *SMALL_CNNS, "attack.steps=1",
                              "eval.val_steps=1", "eval.attacks=[]"],
     r"epoch 1: [\d.]+ s, \d+ img/s.*\ntest \("),
    ("epoch_path.py", ["--config", str(REPO / "search_spaces" / "base" / "digits.yaml"),
                       "--epochs", "2", "--train-subset", "64", "--threads", "1", *SMALL_CNNS,
                       "attack.steps=1", "eval.val_steps=1", "optim.batch_size=32"],
     r"training loop +[\d.]+ img/s.*% of the step(.|\n)*checkpoint save +[\d.]+ s"),
    ("push_set.py", ["--epochs", "1", "--objectives", "ce"], r"\| ce \| 0 \| [\d.]+% \|"),
    ("search_noise.py", ["--configs", "2", "--seeds", "0", "1", "--epochs", "1",
                         "--workers", "1"], r"between-configuration sd [\d.]+ pts"),
    ("search_concurrency.py", ["--trials", "2", "--epochs", "1"],
     r"speed-up [\d.]+x for the job"),
    ("search_efficiency.py", ["--seeds", "0", "--epochs", "1", "--budget", "2", "--variants",
                              "random+FIFO", "--out", "curves.png"],
     r"\| random\+FIFO \| [\d.]+ ± [\d.]+ \|"),
]


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teachers")


# Scripts tested where what they need is: the screenshots need Chromium and a search's store.
ELSEWHERE = {"ui_screenshots.py": "tests/tracking/test_browser.py"}


def test_every_benchmark_has_a_smoke_test() -> None:
    assert {c[0] for c in CASES} | set(ELSEWHERE) == {p.name for p in BENCHMARKS.glob("*.py")}
    for script, test in ELSEWHERE.items():
        assert script in (REPO / test).read_text(), (script, test)


@pytest.mark.parametrize(("script", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_benchmark_runs_with_tiny_arguments(script: str, args: list[str], expected: str,
                                            tmp_path: Path, teacher_cache: Path) -> None:
    env = {**os.environ, "ABLATE_CACHE": str(teacher_cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert re.search(expected, proc.stdout), proc.stdout[-2000:]


def test_device_check_script_parses() -> None:
    """The accelerator script runs only where a device is lent; here its shell is checked."""
    subprocess.run(["bash", "-n", str(BENCHMARKS / "device_check.sh")], check=True)
