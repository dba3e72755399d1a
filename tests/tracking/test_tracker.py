"""The MLflow store wrapper: opening a store in the background while Ray starts."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

import ablate.tracking.tracker as tracking
from ablate.tracking import Tracker


def test_a_store_opened_in_the_background_is_opened_once_and_usable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    class Counted(tracking.MlflowClient):  # the real client, counted
        def __init__(self, *args, **kwargs) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tracking, "MlflowClient", Counted)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.open_in_background()
    run = tracker.start("exp", "r", params={"a": 1})  # waits for the thread's client
    assert len(made) == 1 and tracker.client._client is made[0]  # inside its Guarded wrapper
    assert (tmp_path / "mlflow.db").is_file()
    tracker.log_metrics(run, {"m": 0.5}, step=0)
    tracker.end(run)
    # Tune pickles the callbacks that hold the tracker: the lock is not part of its state.
    monkeypatch.undo()
    opened = Tracker(tracker.uri)
    opened.open_in_background()
    _ = opened.client
    again = pickle.loads(pickle.dumps(opened))
    assert again.children(again.start("exp", "p")) == []
    assert again.client.get_run(run).data.metrics == {"m": 0.5}


def test_a_store_that_cannot_open_fails_in_the_callers_thread(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    tracker = Tracker(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    tracker.open_in_background()  # fails quietly there ...
    with pytest.raises((MlflowException, OSError)):
        _ = tracker.client  # ... and for real here
    assert not (tmp_path / "file" / "mlflow.db").exists()
