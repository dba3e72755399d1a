"""The training step captured as a CUDA graph and replayed (``compute.cuda_graph``).

A small model's step on a GPU is launch-bound: the CPU spends longer queueing the few thousand
kernels of a PGD-10 step than the GPU spends running them. A CUDA graph records them once and
replays them with one launch. What makes that correct here:

- The step reads nothing back to the host (:func:`~ablate.core.step.step_tensors`, proven by
  tests/core/test_sync_free.py), so it can be captured at all.
- Every Python value the step branches on or bakes into a kernel (the ITT phase, the method's
  epoch params, the learning rates, the IGDM weight) is part of the graph's *key*; a new key
  runs a few eager steps (optimizer buffers, lazy initialisation) and captures a new graph, so
  the ITT-off/on and adaptive-temperature phases are separate graphs, not branches.
- Inputs and state live in static tensors: each batch is copied into the captured ``x``/``y``,
  the method's state (temperatures, MTARD weights) and the divergence flag are written back in
  place, so every replay reads what the previous one left.
- Batches have the captured size: a smaller last batch of an epoch runs eagerly.

SGD has no step counter, so it needs no ``capturable`` flag; its momentum buffers exist from the
eager warm-up steps on. Autocast's weight cache is off during capture (a cached cast would be
a stale copy on replay).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch

from ablate.core.step import Divergence, step_tensors

WARMUP_STEPS = 3  # eager steps of a new key before its capture (the PyTorch docs use 3)


class GraphedStep:
    """:func:`step_tensors` as CUDA graphs, one per key; call it like ``step_tensors`` plus a
    ``key`` (every Python value the step's kernels depend on). Returns the step's outputs:
    static tensors that the next call overwrites, so read or copy them before it.

    ``replay_eagerly`` runs the captured body again instead of replaying a graph: the same
    static-buffer path without CUDA, for tests of this class on a CPU."""

    def __init__(self, *, warmup: int = WARMUP_STEPS, replay_eagerly: bool = False) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 (optimizer buffers), got {warmup}")
        self.warmup, self.replay_eagerly = warmup, replay_eagerly
        self.key: Hashable | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.body: Callable[[], None] | None = None  # the captured step (eager replay)
        self.static: dict[str, Any] = {}
        self.eager_steps = 0  # of the current key, before its capture
        self.captures = 0  # graphs captured so far (one per key that reached capture)

    def __call__(self, key: Hashable, *, x: torch.Tensor, y: torch.Tensor,
                 state: dict[str, Any], divergence: Divergence, **kw: Any
                 ) -> dict[str, torch.Tensor | float]:
        if key != self.key or (self.body is not None and (
                divergence is not self.static["divergence"]
                or state.keys() != self.static["state"].keys())):
            self._reset(key)
        if self.body is not None and x.shape != self.static["x"].shape:
            return step_tensors(x=x, y=y, state=state, divergence=divergence, **kw)
        if self.body is None and self.eager_steps < self.warmup:
            self.eager_steps += 1
            return self._eager(x=x, y=y, state=state, divergence=divergence, **kw)
        if self.body is None:
            self._capture(x, y, state, divergence, kw)
        self.static["x"].copy_(x)
        self.static["y"].copy_(y)
        for k, v in state.items():  # set from outside since the last replay (an eager step)
            if v is not self.static["state"][k]:
                self.static["state"][k].copy_(_as_tensor(v, x.device))
        self._replay()
        state.update(self.static["state"])
        return self.static["out"]

    def _reset(self, key: Hashable) -> None:
        self.key, self.graph, self.body, self.static, self.eager_steps = key, None, None, {}, 0

    def _eager(self, **kw: Any) -> dict[str, torch.Tensor | float]:
        x = kw["x"]
        if x.device.type != "cuda":
            return step_tensors(**kw)
        # Warm-up on a side stream, as torch.cuda.graphs asks: what the first steps allocate
        # and initialise must not land in the stream the capture records from.
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            out = step_tensors(**kw)
        torch.cuda.current_stream(x.device).wait_stream(side)
        return out

    def _capture(self, x: torch.Tensor, y: torch.Tensor, state: dict[str, Any],
                 divergence: Divergence, kw: dict[str, Any]) -> None:
        device = x.device
        static_state = {k: _as_tensor(v, device) for k, v in state.items()}
        self.static = {"x": x.clone(), "y": y.clone(), "state": static_state, "out": {},
                       "divergence": divergence}

        def body() -> None:
            live = dict(static_state)  # the step rebinds entries; copy them back in place
            out = step_tensors(x=self.static["x"], y=self.static["y"], state=live,
                               divergence=divergence, **kw)
            if live.keys() != static_state.keys():
                raise RuntimeError(f"compute.cuda_graph: the step's state changed keys "
                                   f"({sorted(static_state)} -> {sorted(live)}) after "
                                   f"{self.warmup} warm-up steps")
            for k, v in live.items():
                static_state[k].copy_(v)
            self.static["out"] = out

        self.body = body
        self.captures += 1
        if self.replay_eagerly:
            return
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a Ray actor's other threads (reporting, logging) may use CUDA's API
        # while this one captures; only this thread's calls must be capture-safe.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            body()  # records the kernels; nothing runs until the first replay

    def _replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            assert self.body is not None
            self.body()


def _as_tensor(value: Any, device: torch.device) -> torch.Tensor:
    """A state entry as a tensor of its own on the device (floats as float64, as the method's
    device-side arithmetic keeps them), so a replay can write it in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device).clone()
    return torch.tensor(value, dtype=torch.float64, device=device)
