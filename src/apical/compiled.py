"""`torch.compile` as apical's time-step loops use it.

The code inductor generates checks, at every call, the size, stride and alignment of each
buffer the graph returns or receives from an ATen kernel: debug assertions, which cost as
much as the arithmetic of a small step (one of the spiking XOR network, a presentation
chunk of a small batch) when a loop calls it tens of thousands of times. `compile_step`
leaves them out; the generated arithmetic is the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LEAN = {"size_asserts": False, "alignment_asserts": False}


def compile_step(fn: Callable, dynamic: bool | None = False) -> Callable:
    """`torch.compile(fn, dynamic=dynamic)` without the per-call buffer assertions."""
    return torch.compile(fn, dynamic=dynamic, options=LEAN)
