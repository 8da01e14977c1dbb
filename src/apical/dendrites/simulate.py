"""Presentations of a batch of images: training (forward phase, then target phase) and test.

Training (eLife Fig. 4, "Simulation details"; §4): each image drives
the input through a forward phase of 50 + floor(Wald(2, 1)) steps and then a target phase
of another such length (drawn per example from its key), the teaching current on in the
second. Averages are taken over each phase's window (preset: its last 20 steps, or every
step after the 30 ms settling time). In a batch the phases end at different steps: an
example that is done idles in its target phase until the longest ends (outside its
windows, so its averages are exact; with `carry_state` its next image starts from there).
Test: one forward phase of `test_steps` from rest; class = largest mean output soma.

Section numbers (§) refer to docs/models/segregated-dendrites.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from apical.dendrites.config import DendriteConfig
from apical.dendrites.dynamics import (
    Params,
    State,
    Sums,
    Windows,
    active_pixels,
    driven_chunk,
    input_counts,
    input_filter,
    input_products,
    rest,
    test_tick,
    tick,
    ticks,
    window_sums,
)
from apical.dendrites.dynamics import step as dynamics_step
from apical.keyed import JITTER_STREAM, normal, step_keys, wald


class Averages(NamedTuple):
    """Window means per example (B, n): forward-phase somatic voltage (hidden layers, then
    the output), apical potential in each phase (hidden layers), PSPs at each layer's basal
    synapses in the forward phase (the input's first), and the output's target-phase rate
    phi_max sigma(V(t)) (the output target phi^{1*}, eLife Eq. 22)."""

    soma_f: tuple[Tensor, ...]
    apical_f: tuple[Tensor, ...]
    apical_t: tuple[Tensor, ...]
    basal_f: tuple[Tensor, ...]
    rate_t: Tensor


def phase_lengths(config: DendriteConfig, keys: Tensor) -> tuple[Tensor, Tensor]:
    """Forward and target phase lengths (B,) in steps: phase_min + floor(Wald) each."""
    mean, scale = config.phase_extra_mean, config.phase_extra_scale
    return tuple(config.phase_min + wald(keys, mean, scale, draw).floor().long() for draw in (0, 1))


def plateau_offsets(config: DendriteConfig, keys: Tensor, layer: int, phase: int) -> Tensor:
    """Per-neuron plateau offsets d = min(|trunc(z)|, 5), z ~ N(0, 3^2), in steps before the
    phase end (eLife Fig. 6-suppl. 1; §4)."""
    z = 3.0 * normal(step_keys(keys, JITTER_STREAM, 2 * layer + phase), config.hidden[layer])
    return z.trunc().abs().clamp_max(5).long()


def windows(config: DendriteConfig, keys: Tensor, forward: Tensor, target: Tensor) -> Windows:
    """Window bounds of every example (and, with `plateau_jitter`, every hidden neuron)."""
    f_end, t_end = forward[:, None], (forward + target)[:, None]
    if config.window is None:
        f_start, t_start = torch.full_like(f_end, config.settle), f_end + config.settle
    else:
        f_start, t_start = f_end - config.window, t_end - config.window
    fixed = config.window is not None

    def apical(start: Tensor, end: Tensor, phase: int) -> tuple[tuple[Tensor, Tensor], ...]:
        if not config.plateau_jitter:
            return tuple((start, end) for _ in config.hidden)
        out = []
        for layer in range(len(config.hidden)):
            d = plateau_offsets(config, keys, layer, phase)
            out.append((start - d if fixed else start.expand_as(d), end - d))
        return tuple(out)

    return Windows(
        (f_start, f_end),
        (t_start, t_end),
        f_end,
        apical(f_start, f_end, 0),
        apical(t_start, t_end, 1),
    )


def train_chunk(
    config: DendriteConfig,
    params: Params,
    state: State,
    sums: Sums,
    weighted: tuple[Tensor, Tensor],
    counts: Tensor,
    active: tuple[Tensor, Tensor],
    sign: Tensor,
    win: Windows,
    keys: Tensor,
    steps: Tensor,
) -> tuple[State, Sums]:
    """Every step of a chunk of a training presentation at once (g_a = 0), given the input
    layer's products (`dynamics.input_products`): the input's filter, the layers above
    (`dynamics.driven_chunk`) and the window sums, one compiled graph."""
    drive, after, basal_in = input_filter(
        config, params, state.filters[0], weighted, counts, active, win.forward, steps[0]
    )
    teach = (steps[:, None, None] >= win.teach_from).to(drive.dtype)  # (n, B, 1)
    state, series = driven_chunk(config, params, state, drive, sign, teach, keys, steps)
    sums = window_sums(config, params, sums, series, win, steps)
    sums = sums._replace(basal_f=(sums.basal_f[0] + basal_in, *sums.basal_f[1:]))
    return state._replace(filters=(after, *state.filters[1:])), sums


def test_chunk(
    config: DendriteConfig,
    params: Params,
    state: State,
    total: Tensor,
    weighted: tuple[Tensor, Tensor],
    counts: Tensor,
    active: tuple[Tensor, Tensor],
    keys: Tensor,
    steps: Tensor,
    start: int,
) -> tuple[State, Tensor]:
    """Every step of a chunk of a test presentation at once (g_a = 0): `train_chunk`
    without teacher, summing the output soma from step `start`."""
    drive, after, _ = input_filter(config, params, state.filters[0], weighted, counts, active)
    ones, off = torch.ones_like(total), torch.zeros_like(drive[..., :1])
    state, series = driven_chunk(config, params, state, drive, ones, off, keys, steps)
    total = total + ((steps >= start)[:, None, None] * series.soma[-1]).sum(0)
    return state._replace(filters=(after, *state.filters[1:])), total


class Steps(NamedTuple):
    """The functions of a presentation (`torch.compile`d ones with `config.compile`): the
    step loop's (g_a > 0, or `all_at_once` off) and the chunk's (every step at once)."""

    train: Callable = tick
    test: Callable = test_tick
    counts: Callable = input_counts
    block: Callable = ticks  # `config.unroll` training steps per call
    phases: Callable = phase_lengths
    inputs: Callable = input_filter
    chunk: Callable = train_chunk
    test_chunk: Callable = test_chunk


EAGER = Steps()


def present(
    config: DendriteConfig,
    params: Params,
    x: Tensor,
    labels: Tensor,
    keys: Tensor,
    state: State | None = None,
    fns: Steps = EAGER,
    batch_keys: Tensor | None = None,
) -> tuple[Averages, State]:
    """Simulate one training presentation of each image of `x` (B, n_in) in [0, 1] from
    `state` (rest when None); return the window averages and the end state. Every image
    is simulated for the batch's longest presentation (the end state depends on it): the
    batch is `keys`, or `batch_keys` when x is a distributed process's shard of it."""
    batch, device, dtype = x.shape[0], x.device, x.dtype
    if state is None:
        state = rest(config, batch, device, dtype)
    forward, target = fns.phases(config, keys)
    win = windows(config, keys, forward, target)
    whole = (forward, target) if batch_keys is None else fns.phases(config, batch_keys)
    total = int((whole[0] + whole[1]).max())  # one sync per batch
    zeros = [torch.zeros(batch, n, device=device, dtype=dtype) for n in config.sizes]
    sums = Sums(
        tuple(zeros[1:]), tuple(zeros[1:-1]), tuple(zeros[1:-1]), tuple(zeros[:-1]), zeros[-1]
    )
    rate_in = config.rate_max * x
    active = active_pixels(rate_in)
    sign = 2 * F.one_hot(labels, config.n_outputs).to(dtype) - 1
    size = max(1, config.chunk // batch)
    for t0 in range(0, total, size):
        steps = torch.arange(t0, min(t0 + size, total), device=device)
        counts = fns.counts(keys, steps, rate_in, active)
        weighted = input_products(params, state.filters[0], counts, active)
        if _all_at_once(config):
            args = (weighted, counts, active, sign, win, keys, steps)
            state, sums = fns.chunk(config, params, state, sums, *args)
            continue
        drive, after, basal_in = fns.inputs(
            config, params, state.filters[0], weighted, counts, active, win.forward, t0
        )
        sums = sums._replace(basal_f=(sums.basal_f[0] + basal_in, *sums.basal_f[1:]))
        k, blocks = config.unroll, len(steps) // config.unroll
        for i in range(0, blocks * k, k):
            state, sums = fns.block(
                config, params, state, sums, drive[i : i + k], sign, win, keys, steps[i]
            )
        for i in range(blocks * k, len(steps)):
            t = steps[i]
            state, sums = fns.train(config, params, state, sums, drive[i], sign, win, keys, t)
        state = state._replace(filters=(after, *state.filters[1:]))

    def mean(total: Tensor, bounds: tuple[Tensor, Tensor]) -> Tensor:
        return total / (bounds[1] - bounds[0]).to(dtype)

    averages = Averages(
        tuple(mean(s, win.forward) for s in sums.soma_f),
        tuple(mean(s, w) for s, w in zip(sums.apical_f, win.apical_f, strict=True)),
        tuple(mean(s, w) for s, w in zip(sums.apical_t, win.apical_t, strict=True)),
        tuple(mean(s, win.forward) for s in sums.basal_f),
        mean(sums.rate_t, win.target),
    )
    return averages, state


def present_test(
    config: DendriteConfig,
    params: Params,
    x: Tensor,
    keys: Tensor,
    fns: Steps = EAGER,
) -> Tensor:
    """Mean output somatic voltage (B, n_out) over the test window of a test presentation
    from rest (the authors' code zeroes every layer before each test image)."""
    batch, device, dtype = x.shape[0], x.device, x.dtype
    state = rest(config, batch, device, dtype)
    window = config.test_window or config.test_steps - config.settle
    start = config.test_steps - window
    total = torch.zeros(batch, config.n_outputs, device=device, dtype=dtype)
    rate_in = config.rate_max * x
    active = active_pixels(rate_in)
    size = max(1, config.chunk // batch)
    for t0 in range(0, config.test_steps, size):  # the input layer a chunk at a time
        steps = torch.arange(t0, min(t0 + size, config.test_steps), device=device)
        counts = fns.counts(keys, steps, rate_in, active)
        weighted = input_products(params, state.filters[0], counts, active)
        if _all_at_once(config):
            args = (weighted, counts, active, keys, steps, start)
            state, total = fns.test_chunk(config, params, state, total, *args)
            continue
        drive, after, _ = fns.inputs(config, params, state.filters[0], weighted, counts, active)
        for i, t in enumerate(steps):
            state, total = fns.test(config, params, state, total, drive[i], keys, t, start)
        state = state._replace(filters=(after, *state.filters[1:]))
    return total / window


def _all_at_once(config: DendriteConfig) -> bool:
    """Every step of a chunk at once (`dynamics.driven_chunk`): exact when g_a = 0."""
    return config.all_at_once is not False and config.g_a == 0


def present_rates(config: DendriteConfig, params: Params, x: Tensor, labels: Tensor) -> Averages:
    """Rate mode (the authors' `nonspiking_mode`; §11), in closed form: no
    spikes, no conductance dynamics, hidden V = k_b V^b, output V = k_d V^b in the forward
    phase and (g_d V^b + E)/(g_l + g_d + 1) in the target phase (E = E_E for the correct
    class, E_I for the others); the apical dendrites see the output rate phi_max sigma(V)
    of the same phase; the basal "PSPs" are the rates of the layer below."""
    c = config
    below = c.rate_max * x
    basal, somas = [below], []
    for w, b in zip(params.weights[:-1], params.biases[:-1], strict=True):
        v = c.k_b * torch.addmm(b, below, w.T)
        below = c.rate_max * torch.sigmoid(v)
        basal.append(below)
        somas.append(v)
    v_basal = torch.addmm(params.biases[-1], below, params.weights[-1].T)
    v_f = c.k_d * v_basal
    sign = 2 * F.one_hot(labels, c.n_outputs).to(x.dtype) - 1
    reversal = torch.where(sign > 0, c.e_exc, c.e_inh)
    v_t = (c.g_d * v_basal + reversal) / (c.g_l + c.g_d + 1)
    rate_f, rate_t = c.rate_max * torch.sigmoid(v_f), c.rate_max * torch.sigmoid(v_t)
    return Averages(
        (*somas, v_f),
        tuple(rate_f @ y.T for y in params.feedback),
        tuple(rate_t @ y.T for y in params.feedback),
        tuple(basal),
        rate_t,
    )


def test_rates(config: DendriteConfig, params: Params, x: Tensor) -> Tensor:
    """Rate mode's output soma k_d V^b (the class is its arg-max)."""
    labels = torch.zeros(len(x), dtype=torch.long, device=x.device)  # no teacher is used
    return present_rates(config, params, x, labels).soma_f[-1]


def record(
    config: DendriteConfig, params: Params, x: Tensor, label: int, key: int, neurons: int = 3
) -> dict[str, Tensor]:
    """One training presentation of one image (1, n_in) from rest, step by step, for
    figures (eLife Fig. 4): basal, apical and somatic voltages of the first `neurons` of
    the first hidden layer, every output soma, the phase lengths and the plateaus."""
    keys = torch.tensor([key], device=x.device)
    labels = torch.tensor([label], device=x.device)
    forward, target = phase_lengths(config, keys)
    state = rest(config, 1, x.device, x.dtype)
    sign = 2 * F.one_hot(labels, config.n_outputs).to(x.dtype) - 1
    rows: dict[str, list[Tensor]] = {"basal": [], "apical": [], "soma": [], "output": []}
    for t in torch.arange(int(forward + target), device=x.device):
        teach = (t >= forward)[:, None].to(x.dtype)
        state, apicals, basals = dynamics_step(
            config, params, state, config.rate_max * x, sign, teach, keys, t
        )
        rows["basal"].append((basals[0] @ params.weights[0].T + params.biases[0])[0, :neurons])
        rows["apical"].append(apicals[0][0, :neurons])
        rows["soma"].append(state.soma[0][0, :neurons])
        rows["output"].append(state.soma[-1][0])
    averages, _ = present(config, params, x, labels, keys)
    out = {k: torch.stack(v) for k, v in rows.items()}
    win = windows(config, keys, forward, target)
    out["forward"], out["target"] = forward, target
    out["windows"] = torch.stack([b.flatten() for b in (*win.forward, *win.target)])
    out["plateau_f"] = torch.sigmoid(averages.apical_f[0][0, :neurons])
    out["plateau_t"] = torch.sigmoid(averages.apical_t[0][0, :neurons])
    return out
