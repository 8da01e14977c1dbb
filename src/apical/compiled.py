"""`torch.compile` as apical's time-step loops use it.

The code inductor generates checks, at every call, the size, stride and alignment of each
buffer the graph returns or receives from an ATen kernel: debug assertions, which cost as
much as the arithmetic of a small step (one of the spiking XOR network, a presentation
chunk of a small batch) when a loop calls it tens of thousands of times. `compile_step`
leaves them out; the generated arithmetic is the same.

A compiled call still costs its own overhead: dynamo's guards, the Python wrapper around
the kernels, the packing of the state; at one seed of the spiking XOR network (0.1-ms
steps) that is most of a step. `compile_loop` runs many steps in one call: a
`torch.while_loop` over the same step graph, with inductor's C++ wrapper, so the loop
between steps runs in C++ and a step costs its kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch._higher_order_ops.while_loop import while_loop
from torch.utils._pytree import tree_flatten, tree_unflatten

LEAN = {"size_asserts": False, "alignment_asserts": False}

S = TypeVar("S")


def compile_step(fn: Callable, dynamic: bool | None = False, fullgraph: bool = False) -> Callable:
    """`torch.compile(fn, dynamic=dynamic, fullgraph=fullgraph)` without the per-call buffer
    assertions (`fullgraph`: a graph break is an error, not a second graph). With
    dynamic shapes (`dynamic` True or None) Python floats stay constants of the graph:
    otherwise dynamo passes each float a config holds as a double input, and the kernels
    recompute what depends on it (a filter's taps, a decay) in their inner loops."""
    compiled = torch.compile(fn, dynamic=dynamic, fullgraph=fullgraph, options=LEAN)
    if dynamic is False:
        return compiled

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with torch._dynamo.config.patch(specialize_float=True):
            return compiled(*args, **kwargs)

    return call


def compile_loop(step: Callable[..., S], compile: bool = True) -> Callable[..., S]:
    """`loop(state, n, *args)` = `step(...step(step(state, *args), *args)..., *args)`, n
    times, for a `step(state, *args) -> state` whose state is a pytree of tensors (named
    tuples nest) that keeps its shapes and dtypes. Compiled: one call for all n steps
    (n is a tensor inside, so every n shares one compiled loop), the same kernels as
    `compile_step(step)` and the same numbers (tested bit for bit on the spiking XOR
    network). Non-tensor arguments are constants of the compiled loop, as for any compiled
    function. The step must not write its arguments in place (a while loop cannot)."""
    if not compile:

        def eager(state: S, n: int, *args: Any) -> S:
            for _ in range(n):
                state = step(state, *args)
            return state

        return eager

    def run(leaves: tuple[torch.Tensor, ...], spec: Any, n: torch.Tensor, *args: Any):
        def cond(i: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
            return i < n

        def body(i: torch.Tensor, *now: torch.Tensor) -> tuple[torch.Tensor, ...]:
            after = tree_flatten(step(tree_unflatten(list(now), spec), *args))[0]
            inputs = {id(x) for x in now}  # a leaf passed through unchanged must be a copy
            return (i + 1, *(x.clone() if id(x) in inputs else x for x in after))

        return while_loop(cond, body, (torch.zeros_like(n), *leaves))[1:]

    compiled = torch.compile(run, dynamic=False, fullgraph=True,
                             options={**LEAN, "cpp_wrapper": True})  # fmt: skip

    def loop(state: S, n: int, *args: Any) -> S:
        leaves, spec = tree_flatten(state)
        if n <= 0:
            return state
        count = torch.tensor(n, device=leaves[0].device)
        return tree_unflatten(list(compiled(tuple(leaves), spec, count, *args)), spec)

    return loop
