"""The stop-signal rules of ablate.core.signals, in this process with real signals."""

from __future__ import annotations

import signal
import threading

import pytest

from ablate.core import signals


def _to_me(sig: int) -> None:
    """The signal to this (the main) thread: a process-directed one may land on another thread
    of the test process (torch's, MLflow's), which does not block it while ``held``."""
    signal.pthread_kill(threading.main_thread().ident, sig)


@pytest.fixture
def installed():
    before = {s: signal.getsignal(s) for s in (*signals.STOP_SIGNALS, signal.SIGINT)}
    signals.received.clear()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # not a Tune run's, left behind
    signals.install()
    yield
    for s, h in before.items():
        signal.signal(s, h)
    signals._state["installed"] = False
    signals.received.clear()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_is_ctrl_c_with_its_own_exit_code(installed, sig, code) -> None:
    with pytest.raises(KeyboardInterrupt, match=signal.Signals(sig).name):
        _to_me(sig)
        signal.sigtimedwait([], 0)  # let the handler run here, not in a later line
    assert signals.exit_code(130) == code and signals.exit_code(0) == 0


def test_ctrl_c_keeps_130(installed) -> None:
    with pytest.raises(KeyboardInterrupt):
        _to_me(signal.SIGINT)
        signal.sigtimedwait([], 0)
    assert signals.exit_code(130) == 130


def test_while_finishing_the_first_signal_waits_and_the_second_stops(installed) -> None:
    with signals.finishing():
        _to_me(signal.SIGTERM)
        signal.sigtimedwait([], 0)  # handled: nothing raised
        with pytest.raises(KeyboardInterrupt):
            _to_me(signal.SIGINT)  # a Ctrl-C counts too: the second signal
            signal.sigtimedwait([], 0)
    assert signals.received == [signal.SIGTERM, signal.SIGINT]


def test_finishing_one_signal_finishes_and_says_so(installed) -> None:
    done = False
    with signals.finishing():
        _to_me(signal.SIGHUP)
        signal.sigtimedwait([], 0)
        done = True
    assert done and signals.finished_note().startswith("SIGHUP received during the summary")
    assert signal.getsignal(signal.SIGINT) is not signals._on_signal  # restored


def test_a_tune_like_sigint_handler_gets_the_stop(installed) -> None:
    """While Ray Tune runs, its SIGINT handler (stop trials, save) is what SIGTERM calls."""
    called = []
    with signals.tuning():
        signal.signal(signal.SIGINT, lambda s, f: called.append(s))  # what Tune installs
        _to_me(signal.SIGTERM)
        signal.sigtimedwait([], 0)
    assert called == [signal.SIGINT] and signals.exit_code(130) == 143
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Tune's undone
    with pytest.raises(KeyboardInterrupt):  # after the run, a stop signal stops at once
        _to_me(signal.SIGTERM)
        signal.sigtimedwait([], 0)


def test_held_blocks_the_signals_for_children_and_delivers_them_after(installed) -> None:
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with signals.held():
            assert set(signal.pthread_sigmask(signal.SIG_BLOCK, [])) >= set(signals.STOP_SIGNALS)
            signal.signal(signal.SIGTERM, lambda s, f: None)  # what ray.init does: replaced
            _to_me(signal.SIGTERM)  # pending, not delivered, while held
        signal.sigtimedwait([], 0)
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
