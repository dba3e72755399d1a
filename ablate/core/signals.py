"""SIGTERM and SIGHUP take the Ctrl-C path: what SLURM, Kubernetes and every preemptible queue
send must stop a job the way Ctrl-C does (trials stopped and saved, runs marked interrupted, the
``--resume`` line), and exit 128 + the signal's number (143, 129) instead of Ctrl-C's 130.

The CLI calls :func:`install` once; Ray starts inside :func:`held`, which keeps the signals
from Ray's own processes and restores the handlers ``ray.init`` replaced with its own
(``sys.exit(15)`` from wherever the driver happens to be). While a Ray Tune
run is in flight (:func:`tuning`) Tune's SIGINT handler is in place and this calls it, so Tune
stops the trials and saves the experiment as after Ctrl-C; elsewhere it raises
:class:`KeyboardInterrupt`.
Inside :func:`finishing` (a job's summary, once every trial has ended) a signal is recorded,
the work finishes and exits 0, and :func:`finished_note` says so; a second signal stops it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT

_state: dict[str, bool] = {"installed": False, "finishing": False, "tuning": False}
received: list[int] = []  # the stop signals this process got, in order (SIGINT included)


def install() -> None:
    """Route SIGTERM and SIGHUP to :func:`_on_signal` (only from the main thread)."""
    _state["installed"] = True
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)


@contextmanager
def held() -> Iterator[None]:
    """Start Ray inside this: SIGTERM and SIGHUP are blocked meanwhile, so the processes Ray
    starts (GCS, raylet, and through it the workers) inherit them blocked. A batch system's
    signal to the whole process group then reaches only the driver, which stops the trials and
    saves the experiment; otherwise the GCS dies under the driver, which aborts a minute later.
    (Ray blocks SIGINT in its processes for the same reason. Cost: Ray's shutdown waits 1 s for
    each of its processes before killing them, ~4 s.) On the way out ours are installed again,
    as ``ray.init`` sets its own SIGTERM handler, then a signal that arrived is delivered."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        if _state["installed"]:
            install()
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    received.append(signum)
    if _state["finishing"]:
        if len(received) == 1:
            return  # the summary finishes first; finished_note says so
    elif _state["tuning"]:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler not in (signal.default_int_handler, _on_signal):
            handler(signal.SIGINT, frame)  # Ray Tune's: stop the trials, save the experiment
            return
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def tuning() -> Iterator[None]:
    """Around a Ray Tune run: a stop signal calls the SIGINT handler Tune installs (which stops
    the trials and saves the experiment). Tune leaves that handler in place after the run, where
    it would swallow a later Ctrl-C; the one from before is put back on the way out."""
    before = signal.getsignal(signal.SIGINT)
    _state["tuning"] = True
    try:
        yield
    finally:
        _state["tuning"] = False
        if before is not None:
            signal.signal(signal.SIGINT, before)


@contextmanager
def finishing() -> Iterator[None]:
    """The last stretch of a job (its summary): the first stop signal, Ctrl-C included, is
    recorded and the work goes on; a second one raises :class:`KeyboardInterrupt`."""
    received.clear()
    before = signal.getsignal(signal.SIGINT)
    _state["finishing"] = True
    signal.signal(signal.SIGINT, _on_signal)
    try:
        yield
    finally:
        _state["finishing"] = False
        signal.signal(signal.SIGINT, before)


def finished_note() -> str | None:
    """The line to print when a stop signal arrived inside :func:`finishing` and the work was
    finished all the same, else None."""
    if not received:
        return None
    return (f"{signal.Signals(received[0]).name} received during the summary: finished it "
            "first, nothing is left to resume")


def exit_code(code: int) -> int:
    """An interrupted command's code: 128 + the first stop signal's number when SIGTERM or
    SIGHUP (not Ctrl-C) stopped it; any other code unchanged."""
    if code == EXIT_INTERRUPTED and received and received[0] != signal.SIGINT:
        return 128 + received[0]
    return code
