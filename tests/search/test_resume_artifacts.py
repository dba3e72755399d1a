"""A resume never downgrades a finished search: its best trial's checkpoint deleted or damaged
after it finished, ``--resume`` is one line naming the file (exit 2), the parent run stays
FINISHED and no number is logged again."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from ablate.cli import main
from tests.helpers import SPEC, data_offset, flip, runs_by_kind, store, write


def _resume_refused(spec: Path, capsys, needle: str) -> None:
    code = main(["search", str(spec), "--resume", "--heartbeat", "0"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("ablate: error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err, err


def test_resume_with_a_missing_or_damaged_best_checkpoint_keeps_the_search_finished(
        workdir: Path, capsys) -> None:
    spec = copy.deepcopy(SPEC) | {"num_samples": 2, "scheduler": {"name": "none"}}
    spec["base"]["optim"]["epochs"] = 1
    path = write(workdir / "spec.yaml", spec)
    assert main(["search", str(path), "--heartbeat", "0"]) == 0
    client, exp = store(workdir)
    parent, _ = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED"
    best = parent.data.tags["best_trial"]
    metrics = parent.data.metrics
    trial_dir = next((workdir / "runs/ray").glob(f"*/trial_*{best}*"))
    checkpoint = next(trial_dir.glob("checkpoint_*"))
    weights = checkpoint / "trainer.pt"
    capsys.readouterr()

    flip(weights, data_offset(weights, "data/0"))
    _resume_refused(path, capsys, f"checkpoint {weights} is damaged")
    shutil.rmtree(checkpoint)  # deleted today
    _resume_refused(path, capsys, f"best trial {best}: its checkpoint {weights} is missing")

    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED"  # not flipped to FAILED
    assert parent.data.metrics == metrics  # nothing logged again
    assert all(c.info.status == "FINISHED" for c in children)
