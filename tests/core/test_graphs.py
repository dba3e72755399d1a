"""``compute.cuda_graph`` on a CPU (issue 29): the refusals (the CLI's one-line errors are in
tests/cli/test_bad_inputs.py), and the graphed step's static-buffer path
(:class:`~ablate.core.graphs.GraphedStep` with ``replay_eagerly``: the captured body run again
where a GPU would replay it) giving the eager step's numbers exactly. The capture itself
needs CUDA: benchmarks/device_check.sh compares captured and eager steps on a GPU."""

from __future__ import annotations

import copy

import pytest
import torch

from ablate.core.errors import ConfigError
from ablate.core.graphs import GraphedStep
from ablate.core.methods import get_method
from ablate.core.step import Divergence, StepMeans, step_tensors
from tests.core.test_trainer import make_trainer

ATTACK = dict(eps=0.2, step_size=0.05, steps=2)


def _run(step, small_digits, make_net, method: str, params: dict, sizes: list[int],
         keys: list[int]) -> tuple[list[dict], dict, torch.nn.Module, Divergence]:
    """Steps over batches of ``sizes`` (a smaller one runs eagerly when graphed), the key
    changing where ``keys`` does; returns the outputs, the state and the student."""
    student, clean, robust = make_net(0), make_net(1, 8), make_net(2, 8)
    spec = get_method(method)
    state, divergence = spec.init_state(), Divergence("cpu")
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    t_opt = torch.optim.SGD(robust.parameters(), lr=0.01, momentum=0.5)
    torch.manual_seed(7)  # the attack's random starts
    outs, start = [], 0
    for size, key in zip(sizes, keys, strict=True):
        x, y = small_digits.train.x[start:start + size], small_digits.train.y[start:start + size]
        start += size
        out = step(key, method=method, params=spec.params(**params).model_dump(), state=state,
                   student=student, clean_teacher=clean, robust_teacher=robust, x=x, y=y,
                   optimizer=opt, teacher_optimizer=t_opt, update_teacher=True,
                   divergence=divergence, **ATTACK)
        outs.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()})
    return outs, state, student, divergence


def _eager(key, **kw):  # noqa: ANN001, ANN202 (the same call without a graph)
    return step_tensors(**kw)


@pytest.mark.parametrize("method, params", [
    ("ciard", {"lam": "auto", "adaptive_temps": True}),  # temperatures: state written in place
    ("mtard", {}),  # the adaptive weights and their l0
    ("ciard", {"push": False}),
])
def test_the_graphed_path_equals_the_eager_step(small_digits, make_net, method, params) -> None:
    sizes, keys = [16, 16, 16, 16, 16, 8, 16, 16], [0, 0, 0, 0, 0, 0, 1, 1]
    want, want_state, want_student, want_div = _run(_eager, small_digits, make_net, method,
                                                    params, sizes, keys)
    graphed = GraphedStep(warmup=2, replay_eagerly=True)
    got, state, student, div = _run(graphed, small_digits, make_net, method, params, sizes, keys)
    # key 0: 2 warm-ups, a capture, 2 replays, an eager small batch; key 1: 2 warm-ups again
    assert graphed.captures == 1 and graphed.eager_steps == 2
    for w, g in zip(want, got, strict=True):
        assert w.keys() == g.keys()
        for k in w:
            assert torch.equal(torch.as_tensor(w[k]), torch.as_tensor(g[k])), k
    assert all(torch.equal(a, b) for a, b in zip(want_student.state_dict().values(),
                                                 student.state_dict().values(), strict=True))
    assert {k: float(v) for k, v in state.items()} == {k: float(v)
                                                       for k, v in want_state.items()}
    assert float(div.value) == float(want_div.value)


def test_replays_write_the_state_and_flag_in_place(small_digits, make_net) -> None:
    """What a real graph needs: after the capture, every replay leaves the method's state and
    the divergence flag in the same tensors (a replay cannot rebind a Python name)."""
    graphed = GraphedStep(warmup=1, replay_eagerly=True)
    _, state, _, div = _run(graphed, small_digits, make_net, "ciard",
                            {"adaptive_temps": True}, [16] * 4, [0] * 4)
    static = graphed.static["state"]
    assert state.keys() == static.keys() and all(state[k] is static[k] for k in state)
    assert div is graphed.static["divergence"] and graphed.captures == 1


def test_a_new_divergence_or_state_from_outside_captures_anew(small_digits, make_net) -> None:
    graphed = GraphedStep(warmup=1, replay_eagerly=True)
    _run(graphed, small_digits, make_net, "ciard", {}, [16] * 3, [0] * 3)
    _run(graphed, small_digits, make_net, "ciard", {}, [16] * 3, [0] * 3)  # same key, new flag
    assert graphed.captures == 2


def test_a_trainer_with_the_graphed_path_trains_as_the_eager_one(small_digits, make_net) -> None:
    """Two epochs (a cosine LR: a new key each epoch; ITT from epoch 1: a new phase; 192 images
    in batches of 40: an eager last batch of 32) give the eager trainer's history exactly."""
    kw = dict(optim={"epochs": 2, "batch_size": 40, "schedule": "cosine"},
              itt={"freeze_epochs": 1, "teacher_lr": 0.01},
              method_params={"lam": "auto", "adaptive_temps": True})
    eager = make_trainer(small_digits, make_net, **kw)
    graphed = make_trainer(small_digits, make_net, **kw)
    graphed.graphed = GraphedStep(warmup=1, replay_eagerly=True)
    for trainer in (eager, graphed):
        list(trainer.run())
    assert graphed.graphed.captures == 2  # one per epoch: each epoch's LR is a new key
    assert graphed.history == eager.history


def test_step_means_read_static_outputs_before_they_are_overwritten() -> None:
    out = {"loss": torch.tensor(1.0), "lam": torch.tensor(0.5, dtype=torch.float64),
           "lam@weight": torch.tensor(1.0)}
    means = StepMeans()
    means.add(out)
    for k in ("loss", "lam"):  # what the next replay does to the static outputs
        out[k].mul_(3.0)
    means.add(out)
    assert means.read() == {"loss": 2.0, "lam": 1.0}


def test_graphed_steps_are_refused_where_they_cannot_run(small_digits, make_net) -> None:
    with pytest.raises(ConfigError, match="compute.cuda_graph: CUDA graphs need a CUDA device"):
        make_trainer(small_digits, make_net, compute={"cuda_graph": True})
    with pytest.raises(ValueError, match="warmup must be at least 1"):
        GraphedStep(warmup=0)
    copy.deepcopy(GraphedStep())  # plain Python state: a trainer holding one can be copied
