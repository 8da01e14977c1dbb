"""The spiking network of Guerguiev, Lillicrap & Richards (eLife 2017) as pure functions.

Time is in 1-ms steps (forward Euler), rates in spikes per step (phi_max = 0.2). One step
(eLife "Simulation details"; §2), for B examples at once:

1. input counts n ~ Poisson(phi_max x) (pixel intensities x in [0, 1]), filtered into PSPs;
2. hidden layers, bottom to top: basal V^b = W s_below + b (Eq. 11), apical
   V^a = Y s_out (Eq. 12, the output's PSP of the previous step, broadcast to every hidden
   layer), soma dV/dt = -g_l V + g_b (V^b - V) + g_a (V^a - V) (Eq. 14, C_m = 1), counts
   ~ Poisson(phi_max sigma(V)) (Eqs. 3-4, counts, so more than one spike per step is
   possible), filtered;
3. output: dendrite V^b = W s_hidden + b (Eq. 16), soma dV/dt = -g_l V + g_d (V^b - V) + I
   (Eq. 17), with the teaching current I = g_E (E_E - V) + g_I (E_I - V) of the previous
   step's soma in the target phase (Eqs. 19-20: g_E = 1 for the correct class, g_I = 1 for
   the others), counts, filtered.

PSPs (Eq. 10): s(t) = sum_d kappa(d) n(t - d + 1), kappa(t) = (e^{-t/tau_L} - e^{-t/tau_s})
/ (tau_L - tau_s), which integrates to 1. The full kernel is two exponential traces
(exact, constant memory); the authors' code truncates it to `psp_steps` past steps, kept
as a short history of counts. Memory grows with B x neurons, never with simulated time.
Presentations take the input layer a chunk of steps at a time (`input_chunk`: the spikes
of the pixels that can spike drawn at once, W s(t) by sparse products), at most
`config.chunk` rows of (step, example), which bounds that memory too. With g_a = 0 the
layers above can be taken a chunk at a time as well (`driven_chunk`: each soma is then a
linear recurrence in its basal input, since nothing flows back down within a step);
otherwise they step (`tick`).

Section numbers (§) refer to docs/models/segregated-dendrites.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from apical.dendrites.config import DendriteConfig
from apical.keyed import poisson, salts_of, step_keys, uniform, uniform_at


class Params(NamedTuple):
    """Forward weights W^l (out, in) and biases b^l, the output layer's last; feedback
    Y^l (n_l, n_out), one per hidden layer."""

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    feedback: tuple[Tensor, ...]


class State(NamedTuple):
    """PSP filter state of the input, every hidden layer and the output; somatic voltages
    of every hidden layer and the output."""

    filters: tuple[Tensor, ...]
    soma: tuple[Tensor, ...]


class Sums(NamedTuple):
    """Window sums per example: forward-phase somatic voltages (hidden, then output),
    apical potentials in each phase, the PSPs at each layer's basal synapses (forward
    phase), and the output's instantaneous rate in the target phase."""

    soma_f: tuple[Tensor, ...]
    apical_f: tuple[Tensor, ...]
    apical_t: tuple[Tensor, ...]
    basal_f: tuple[Tensor, ...]
    rate_t: Tensor


class Windows(NamedTuple):
    """Per-example step bounds [start, end) as (B, 1) tensors: the forward-phase window,
    the target-phase window, the first target-phase step, and the apical windows of each
    hidden layer ((B, 1), or (B, n_l) with per-neuron plateau times)."""

    forward: tuple[Tensor, Tensor]
    target: tuple[Tensor, Tensor]
    teach_from: Tensor
    apical_f: tuple[tuple[Tensor, Tensor], ...]
    apical_t: tuple[tuple[Tensor, Tensor], ...]


def kernel(config: DendriteConfig, t: Tensor) -> Tensor:
    """kappa(t) of eLife Eq. 10 (zero for t < 0)."""
    tl, ts = config.tau_l, config.tau_s
    return ((torch.exp(-t / tl) - torch.exp(-t / ts)) / (tl - ts)).clamp_min(0) * (t >= 0)


def filter_init(config: DendriteConfig, batch: int, n: int, device, dtype) -> Tensor:
    """Rest: no spikes in the filter's memory."""
    depth = 2 if config.psp_steps is None else config.psp_steps
    return torch.zeros(depth, batch, n, device=device, dtype=dtype)


def filter_push(config: DendriteConfig, state: Tensor, counts: Tensor) -> Tensor:
    """Add this step's counts. Full kernel: traces a_tau <- e^{-1/tau} (a_tau + n), so that
    a_tau(t) = sum_{d>=1} e^{-d/tau} n(t-d+1). Truncated: the newest `psp_steps` counts."""
    if config.psp_steps is None:  # Python-float decays: no host-to-device copy per step
        slow = math.exp(-1 / config.tau_l) * (state[0] + counts)
        fast = math.exp(-1 / config.tau_s) * (state[1] + counts)
        return torch.stack((slow, fast))
    return torch.cat([counts[None], state[:-1]])


def filter_value(config: DendriteConfig, state: Tensor) -> Tensor:
    """The PSP s(t) = sum_d kappa(d) n(t - d + 1) (d >= 1; the current count weighs kappa(1)),
    times `psp_scale`."""
    if config.psp_steps is None:
        tl, ts = config.tau_l, config.tau_s
        return (state[0] - state[1]) / ((tl - ts) / config.psp_scale)  # as before at scale 1
    # Python-float weights and a plain sum: fused into the compiled step, no matrix call
    return sum(w * s for w, s in zip(taps(config, len(state)), state, strict=True))


def taps(config: DendriteConfig, depth: int) -> list[float]:
    """The truncated kernel's weights psp_scale kappa(d), d = 1..depth, as Python floats."""
    tl, ts, scale = config.tau_l, config.tau_s, config.psp_scale
    return [
        scale * (math.exp(-d / tl) - math.exp(-d / ts)) / (tl - ts) for d in range(1, depth + 1)
    ]


def filter_chunk(config: DendriteConfig, filters: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """The PSPs (n, ...) of the n steps of `counts` (n, ...) from the filter state
    `filters`, and the state after them: the values n calls of `filter_push` and
    `filter_value` give (the map `filter_matrix` writes as a matrix), in O(n x depth) work:
    a depth-tap sum of shifted counts (truncated kernel) or the two traces' first-order
    recurrences (full kernel; `linear_recurrence`)."""
    if config.psp_steps is None:
        tl, ts = config.tau_l, config.tau_s
        traces = []
        for i, tau in enumerate((tl, ts)):  # a(t) = e (a(t-1) + n(t))
            decay = math.exp(-1 / tau)
            traces.append(linear_recurrence(decay, decay * counts, filters[i]))
        psp = (traces[0] - traces[1]) / ((tl - ts) / config.psp_scale)
        return psp, torch.stack((traces[0][-1], traces[1][-1]))
    n, depth = len(counts), len(filters)
    seq = torch.cat((filters.flip(0), counts))  # oldest first: count of step t at depth + t
    psp = sum(
        w * seq[depth + 1 - d : depth + 1 - d + n] for d, w in enumerate(taps(config, depth), 1)
    )
    return psp, seq[n:].flip(0)


def filter_after(
    config: DendriteConfig,
    filters: Tensor,
    counts: Tensor,
    place: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The filter state after the n steps of `counts` (`filter_chunk`'s second value), without
    the PSPs: a(n-1) = e^n a(-1) + sum_k e^(n-k) n(k) per trace, or the newest counts.
    `place`, where counts (n, E) are of some of the filter's entries only (the input's
    active pixels), puts values (..., E) in the filter's shape, zero elsewhere."""
    n, place = len(counts), place or (lambda values: values)
    if config.psp_steps is None:
        tl, ts = config.tau_l, config.tau_s
        lag = torch.arange(n, 0, -1, device=counts.device, dtype=counts.dtype)  # n - k
        decayed = [torch.tensordot(torch.exp(-lag / tau), counts, 1) for tau in (tl, ts)]
        return torch.stack([
            math.exp(-n / tau) * memory + place(d)
            for memory, d, tau in zip(filters, decayed, (tl, ts), strict=True)
        ])  # fmt: skip
    recent = place(counts[-len(filters) :])  # the newest counts the filter keeps
    return torch.cat((filters.flip(0), recent))[len(recent) :].flip(0)


def rest(config: DendriteConfig, batch: int, device, dtype=torch.float32) -> State:
    sizes = config.sizes
    return State(
        tuple(filter_init(config, batch, n, device, dtype) for n in sizes),
        tuple(torch.zeros(batch, n, device=device, dtype=dtype) for n in sizes[1:]),
    )


def filter_matrix(config: DendriteConfig, n: int, device, dtype) -> Tensor:
    """The PSP filter over `n` steps as one linear map (exact: the filter is linear).

    With the filter state S (depth, ...) before and the counts N (n, ...) of the next n
    steps, ``A @ cat(S, N)`` gives the n PSPs s(0..n-1) (the values `filter_value` returns
    after each `filter_push`) and then the filter state after the n-th step. Full kernel
    (S = the two traces a_L, a_s): s(t) = sum_{k<=t} kappa(t-k+1) n(k) + (e^{-(t+1)/tau_L}
    a_L - e^{-(t+1)/tau_s} a_s) / (tau_L - tau_s). Truncated (S = the last `psp_steps`
    counts, newest first): s(t) = sum_{d=1}^{psp_steps} kappa(d) n(t-d+1), where counts
    before the chunk come from S. The PSP rows are scaled by `psp_scale`.
    """
    t = torch.arange(n, device=device, dtype=dtype)
    if config.psp_steps is None:
        tl, ts = config.tau_l, config.tau_s
        lag = t[:, None] - t[None, :] + 1  # t - k + 1
        psp = torch.cat(
            (
                torch.exp(-(t[:, None] + 1) / tl) / (tl - ts),
                -torch.exp(-(t[:, None] + 1) / ts) / (tl - ts),
                kernel(config, lag),
            ),
            dim=1,
        )
        age = n - t  # a count at step k has decayed n - k times after the n-th push
        state = torch.stack(
            (
                torch.cat((t.new_tensor([math.exp(-n / tl), 0.0]), torch.exp(-age / tl))),
                torch.cat((t.new_tensor([0.0, math.exp(-n / ts)]), torch.exp(-age / ts))),
            )
        )
        return torch.cat((config.psp_scale * psp, state))
    depth = config.psp_steps
    when = torch.cat((-1 - torch.arange(depth, device=device, dtype=dtype), t))  # columns
    lag = t[:, None] - when[None, :] + 1
    psp = config.psp_scale * kernel(config, lag) * (lag <= depth)
    newest_first = (n - 1 - torch.arange(depth, device=device, dtype=dtype))[:, None]
    state = (when[None, :] == newest_first).to(dtype)
    return torch.cat((psp, state))


def keyed_counts(keys: Tensor, stream: int, t: Tensor, rate: Tensor) -> Tensor:
    """Keyed Poisson counts (len(t), B, n) of steps `t` for one stream (0: the input, 1 + l:
    layer l above it), the draws `step` makes a step at a time; `rate` is (B, n) or
    (len(t), B, n)."""
    u = uniform(step_keys(keys[None, :], stream, t[:, None]).flatten(), rate.shape[-1])
    return poisson(u.view(len(t), len(keys), -1), rate)


def active_pixels(rate_in: Tensor) -> tuple[Tensor, Tensor]:
    """The (example, pixel) pairs of the input with a nonzero rate (E,) each, example-major:
    the only input neurons that can spike (MNIST: about a fifth)."""
    return rate_in.nonzero(as_tuple=True)


def input_counts(keys: Tensor, t: Tensor, rate_in: Tensor, active: tuple[Tensor, Tensor]) -> Tensor:
    """Keyed Poisson counts (len(t), E) of the input's active pixels (`active_pixels`) at
    steps `t`: the entries at `active` of `keyed_counts(keys, 0, t, rate_in)`, bit for bit;
    every other pixel's count is 0 (its rate is). A fifth of the draws on MNIST."""
    example, pixel = active
    step = step_keys(keys[None, :], 0, t[:, None])[:, example]  # (n, E)
    return poisson(uniform_at(step, salts_of(pixel)), rate_in[example, pixel])


def scatter_pixels(values: Tensor, active: tuple[Tensor, Tensor], batch: int, n_in: int) -> Tensor:
    """`values` (..., E) of the active pixels as (..., B, n_in), zero elsewhere."""
    out = values.new_zeros(*values.shape[:-1], batch, n_in)
    out[..., active[0], active[1]] = values
    return out


def _column_sums(row: Tensor, column: Tensor, value: Tensor, rows: int, weight_t: Tensor) -> Tensor:
    """out[r] = sum of value x weight_t[column] over the entries of row r (rows ascending):
    one embedding_bag."""
    offsets = torch.searchsorted(row, torch.arange(rows, device=row.device))
    return F.embedding_bag(column, weight_t, offsets, mode="sum", per_sample_weights=value)


def sparse_product(rows: Tensor, weight_t: Tensor) -> Tensor:
    """rows (m, n_in) @ weight_t (n_in, n_out, contiguous) for rows of spike counts. On a
    CPU, where under an eighth of the entries are nonzero (MNIST: about 1 %), as the sum
    of the weight rows of the entries that spiked, weighted by their counts (embedding_bag:
    3-4x faster than the dense product at B = 4); elsewhere one dense product (no host
    sync on a GPU)."""
    if rows.device.type != "cpu":
        return rows @ weight_t
    hit, column = rows.nonzero(as_tuple=True)  # row-major: hit ascending
    if len(hit) * 8 > rows.numel():
        return rows @ weight_t
    return _column_sums(hit, column, rows[hit, column], len(rows), weight_t)


def spike_product(
    counts: Tensor, active: tuple[Tensor, Tensor], batch: int, weight_t: Tensor
) -> Tensor:
    """`sparse_product` of the input's counts (n, E) of the active pixels, (n, B, n_out):
    the same sums, in the same order (pixels ascending within a row (step, example)), with
    no dense (n, B, n_in) array on the sparse path."""
    n, n_in = len(counts), len(weight_t)
    if counts.device.type == "cpu":
        t, entry = counts.nonzero(as_tuple=True)  # (t, entry) ascending: so is t B + example
        if len(t) * 8 <= n * batch * n_in:
            row = t * batch + active[0][entry]
            out = _column_sums(row, active[1][entry], counts[t, entry], n * batch, weight_t)
            return out.view(n, batch, -1)
    return scatter_pixels(counts, active, batch, n_in) @ weight_t


def input_products(
    params: Params, filters: Tensor, counts: Tensor, active: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """W^1 times the input's filter memory (depth, B, n_in) and times the chunk's counts
    (n, E) of the active pixels: (depth, B, n_1) and (n, B, n_1), by sparse products
    (shapes that depend on the spikes: run eagerly, outside a compiled graph)."""
    batch = filters.shape[1]
    weight_t = params.weights[0].T.contiguous()  # (n_in, n_1): the rows the products sum
    memory = sparse_product(filters.flatten(0, 1), weight_t).view(len(filters), batch, -1)
    return memory, spike_product(counts, active, batch, weight_t)


def input_filter(
    config: DendriteConfig,
    params: Params,
    filters: Tensor,
    weighted: tuple[Tensor, Tensor],
    counts: Tensor,
    active: tuple[Tensor, Tensor],
    window: tuple[Tensor, Tensor] | None = None,
    t0: int = 0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """`input_chunk` given its products `weighted` (`input_products`): the dense rest."""
    n, (depth, batch, n_in) = len(counts), filters.shape
    drive = filter_chunk(config, *weighted)[0] + params.biases[0]
    place = partial(scatter_pixels, active=active, batch=batch, n_in=n_in)
    after = filter_after(config, filters, counts, place)
    if window is None:
        return drive, after, None
    a = filter_matrix(config, n, counts.device, counts.dtype)
    steps = (t0 + torch.arange(n, device=counts.device))[:, None]  # (n, 1); t0 int or 0-d
    inside = ((steps >= window[0].T) & (steps < window[1].T)).to(counts.dtype)  # (n, B)
    per_column = inside.T @ a[:n]  # (B, depth + n): how much each count enters the sum
    total = torch.einsum("bc,cbi->bi", per_column[:, :depth], filters)
    in_chunk = (per_column[active[0], depth:] * counts.T).sum(1)  # (E,)
    return drive, after, total.index_put(active, in_chunk, accumulate=True)


def input_chunk(
    config: DendriteConfig,
    params: Params,
    filters: Tensor,
    counts: Tensor,
    active: tuple[Tensor, Tensor],
    window: tuple[Tensor, Tensor] | None = None,
    t0: int = 0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """n = len(counts) steps of the input layer at once (step 1 of the module docstring),
    from its filter state (depth, B, n_in) and the steps' counts (n, E) of the active pixels
    `active` (`input_counts`): the drive of the first layer above, W^1 s(t) + b^1 (n, B,
    n_1), the filter state after the chunk and, with `window` ((B, 1) step bounds [start,
    end)), the sum of the input PSPs s(t) over the chunk's steps t0 .. t0+n-1 inside it
    (B, n_in). Up to rounding the same values as n calls of `step`: since the filter is
    linear, W s(t) = filter(W S, W N), filtered in the n_1 dimensions of the layer above
    after sparse products (`input_products`, then `input_filter`)."""
    weighted = input_products(params, filters, counts, active)
    return input_filter(config, params, filters, weighted, counts, active, window, t0)


def step(
    config: DendriteConfig,
    params: Params,
    state: State,
    rate_in: Tensor,
    target_sign: Tensor,
    teach: Tensor,
    keys: Tensor,
    t: Tensor,
) -> tuple[State, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One time step (module docstring), the reference for `input_chunk` and `driven_step`.
    `rate_in` (B, n_in): input rates per step; `target_sign` (B, n_out): +1 for the correct
    class, -1 for the others; `teach` (B, 1): 1 in the target phase; `keys` (B,):
    per-example keys; `t` (0-d int64): the step.

    Returns the new state, the step's hidden apical potentials and the PSPs at each
    layer's basal synapses (input first).
    """
    counts = poisson(uniform(step_keys(keys, 0, t), config.n_inputs), rate_in)
    input_filter = filter_push(config, state.filters[0], counts)
    below = filter_value(config, input_filter)
    drive = torch.addmm(params.biases[0], below, params.weights[0].T)
    state = state._replace(filters=(input_filter, *state.filters[1:]))
    state, apicals, basals = driven_step(config, params, state, drive, target_sign, teach, keys, t)
    return state, apicals, (below, *basals)


def driven_step(
    config: DendriteConfig,
    params: Params,
    state: State,
    drive: Tensor,
    target_sign: Tensor,
    teach: Tensor,
    keys: Tensor,
    t: Tensor,
) -> tuple[State, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Steps 2-3 of one time step, given the first layer's basal potential `drive` (B, n_1)
    = W^1 s_in + b^1 (from `input_chunk`); the input's filter state is passed through.
    Returns the new state, the hidden apical potentials and the PSPs at the basal
    synapses of the layers above the first hidden layer."""
    c = config
    n_hidden = len(c.hidden)
    if c.feedback == "spikes":
        top = filter_value(c, state.filters[-1])  # output PSP of the previous step
    else:
        top = c.rate_max * torch.sigmoid(state.soma[-1])  # its rate (eLife Fig. 7A red)
    filters = [state.filters[0]]
    v_basal = drive
    basal_psps, apicals, somas = [], [], []
    for layer in range(n_hidden):
        # Eq. 12 as a broadcast sum over the few outputs: fused, no matrix call per step
        v_apical = (top[:, None, :] * params.feedback[layer]).sum(-1)
        v = state.soma[layer]
        dv = -c.g_l * v + c.g_b * (v_basal - v)
        if c.g_a:
            dv = dv + c.g_a * (v_apical - v)
        v = v + dv
        rate = c.rate_max * torch.sigmoid(v)
        counts = poisson(uniform(step_keys(keys, 1 + layer, t), c.hidden[layer]), rate)
        filters.append(filter_push(c, state.filters[1 + layer], counts))
        below = filter_value(c, filters[-1])
        basal_psps.append(below)
        apicals.append(v_apical)
        somas.append(v)
        v_basal = torch.addmm(params.biases[layer + 1], below, params.weights[layer + 1].T)
    v = state.soma[-1]
    reversal = torch.where(target_sign > 0, c.e_exc, c.e_inh)
    v = v + (-c.g_l * v + c.g_d * (v_basal - v) + teach * (reversal - v))
    rate = c.rate_max * torch.sigmoid(v)
    counts = poisson(uniform(step_keys(keys, 1 + n_hidden, t), c.n_outputs), rate)
    filters.append(filter_push(c, state.filters[-1], counts))
    somas.append(v)
    return State(tuple(filters), tuple(somas)), tuple(apicals), tuple(basal_psps)


def ticks(
    config: DendriteConfig,
    params: Params,
    state: State,
    sums: Sums,
    drives: Tensor,
    target_sign: Tensor,
    windows: Windows,
    keys: Tensor,
    t0: Tensor,
) -> tuple[State, Sums]:
    """`tick` for len(drives) consecutive steps from t0: compiled, one call runs them all
    (unrolled), which spreads the per-call overhead of a small batch over the steps."""
    for i, drive in enumerate(drives):
        state, sums = tick(config, params, state, sums, drive, target_sign, windows, keys, t0 + i)
    return state, sums


def _inside(t: Tensor, bounds: tuple[Tensor, Tensor]) -> Tensor:
    return ((t >= bounds[0]) & (t < bounds[1])).float()


def tick(
    config: DendriteConfig,
    params: Params,
    state: State,
    sums: Sums,
    drive: Tensor,
    target_sign: Tensor,
    windows: Windows,
    keys: Tensor,
    t: Tensor,
) -> tuple[State, Sums]:
    """One step of a training presentation given the first layer's drive (`input_chunk`),
    adding what falls in each window to `sums` (all but the input's PSPs, which
    `simulate.present` sums per chunk)."""
    teach = (t >= windows.teach_from).float()
    state, apicals, basals = driven_step(config, params, state, drive, target_sign, teach, keys, t)
    in_f, in_t = _inside(t, windows.forward), _inside(t, windows.target)
    out_rate = config.rate_max * torch.sigmoid(state.soma[-1])
    sums = Sums(
        tuple(s + in_f * v for s, v in zip(sums.soma_f, state.soma, strict=True)),
        tuple(
            s + _inside(t, w) * a
            for s, a, w in zip(sums.apical_f, apicals, windows.apical_f, strict=True)
        ),
        tuple(
            s + _inside(t, w) * a
            for s, a, w in zip(sums.apical_t, apicals, windows.apical_t, strict=True)
        ),
        (sums.basal_f[0], *(s + in_f * p for s, p in zip(sums.basal_f[1:], basals, strict=True))),
        sums.rate_t + in_t * out_rate,
    )
    return state, sums


def test_tick(
    config: DendriteConfig,
    params: Params,
    state: State,
    total: Tensor,
    drive: Tensor,
    keys: Tensor,
    t: Tensor,
    window_from: int,
) -> tuple[State, Tensor]:
    """One step of a test presentation (no teacher) given the first layer's drive
    (`input_chunk`), summing the output soma in the window."""
    sign = torch.ones_like(state.soma[-1])
    teach = torch.zeros_like(sign[:, :1])
    state, *_ = driven_step(config, params, state, drive, sign, teach, keys, t)
    return state, total + (t >= window_from).float() * state.soma[-1]


# -- every step of a chunk at once (g_a = 0) ---------------------------------------------
class Series(NamedTuple):
    """Per-step values of a chunk of n steps, each (n, B, size): somatic voltages (hidden
    layers, then the output), what the apical dendrites see (the output's PSP or rate of
    the step before; every hidden layer's V^a is Y^l times it, Eq. 12), and the PSPs at the
    basal synapses of the layers above the first hidden layer."""

    soma: tuple[Tensor, ...]
    top: Tensor
    basal: tuple[Tensor, ...]


def linear_recurrence(c: Tensor | float, u: Tensor, v0: Tensor) -> Tensor:
    """V(t) = c(t) V(t-1) + u(t) for t = 0..n-1 from V(-1) = v0, every t at once, by a
    doubling scan (Hillis & Steele 1986) of the affine maps V -> c V + u: after the round
    of shift s, entry k holds the composition of the 2s maps ending at k, so log2(n + 1)
    rounds of elementwise work. c: a Python float, or (n, B) / (n, 1) per step; u:
    (n, B, m); v0: (B, m)."""
    b = torch.cat((v0[None], u))  # entry 0 is V(-1) itself (a map with c = 0)
    a = c if isinstance(c, float) else torch.cat((torch.zeros_like(c[:1]), c))[..., None]
    shift = 1
    while shift < len(b):
        if isinstance(a, float):  # every composed map of this round has c^shift
            b = torch.cat((b[:shift], b[shift:] + a * b[:-shift]))
            a = a * a
        else:
            b = torch.cat((b[:shift], b[shift:] + a[shift:] * b[:-shift]))
            a = torch.cat((a[:shift], a[shift:] * a[:-shift]))
        shift *= 2
    return b[1:]


def driven_chunk(
    config: DendriteConfig,
    params: Params,
    state: State,
    drive: Tensor,
    target_sign: Tensor,
    teach: Tensor,
    keys: Tensor,
    t: Tensor,
    counts=keyed_counts,
) -> tuple[State, Series]:
    """`driven_step` for the n = len(t) steps of `drive` (n, B, n_1) at once; `teach`
    (n, B, 1). Exact (up to rounding) when g_a = 0: the hidden somata then do not depend on
    the apical input, so within a step nothing flows back down, and each layer's somatic
    voltages (Eqs. 14, 17) are linear recurrences in its basal input (`linear_recurrence`),
    its spike counts keyed draws for all steps, its PSPs one filter matrix. The apical
    potential of step t is Y times the output's PSP (or rate) of step t - 1. `counts` draws
    the spikes (`keyed_counts`, compiled by the caller where that pays)."""
    c = config
    if c.g_a:
        raise ValueError("driven_chunk needs g_a = 0 (apical input reaches the soma otherwise)")
    if c.feedback == "spikes":
        top_before = filter_value(c, state.filters[-1])  # output PSP of the previous step
    else:
        top_before = c.rate_max * torch.sigmoid(state.soma[-1])
    filters, somas, basals = [state.filters[0]], [], []
    v_basal = drive
    decay = 1 - c.g_l - c.g_b
    for layer in range(len(c.hidden)):
        v = linear_recurrence(decay, c.g_b * v_basal, state.soma[layer])
        spikes = counts(keys, 1 + layer, t, c.rate_max * torch.sigmoid(v))
        psp, after = filter_chunk(c, state.filters[1 + layer], spikes)
        filters.append(after)
        somas.append(v)
        basals.append(psp)
        v_basal = psp @ params.weights[layer + 1].T + params.biases[layer + 1]
    reversal = torch.where(target_sign > 0, c.e_exc, c.e_inh)
    v = linear_recurrence(
        1 - c.g_l - c.g_d - teach[..., 0], c.g_d * v_basal + teach * reversal, state.soma[-1]
    )
    spikes = counts(keys, 1 + len(c.hidden), t, c.rate_max * torch.sigmoid(v))
    psp, after = filter_chunk(c, state.filters[-1], spikes)
    filters.append(after)
    somas.append(v)
    top = psp if c.feedback == "spikes" else c.rate_max * torch.sigmoid(v)
    top = torch.cat((top_before[None], top[:-1]))  # what the apical dendrites see at each step
    end = State(tuple(filters), tuple(v[-1] for v in somas))
    return end, Series(tuple(somas), top, tuple(basals))


def window_sums(
    config: DendriteConfig,
    params: Params,
    sums: Sums,
    series: Series,
    windows: Windows,
    t: Tensor,
) -> Sums:
    """`sums` plus what falls in each window over the steps `t` of `series` (as `tick` adds
    it a step at a time; the input's PSPs are summed by `input_chunk`). An apical window
    that is one per example sums what the dendrites see and applies Y^l once (Eq. 12 is
    linear); per-neuron windows (`plateau_jitter`) sum V^a itself."""
    when = t[:, None, None]

    def inside(bounds: tuple[Tensor, Tensor]) -> Tensor:  # (n, B, 1) or (n, B, n_l)
        return ((when >= bounds[0]) & (when < bounds[1])).to(series.soma[-1].dtype)

    def apical(total: Tensor, y: Tensor, bounds: tuple[Tensor, Tensor]) -> Tensor:
        if bounds[0].shape[-1] == 1:
            return total + (inside(bounds) * series.top).sum(0) @ y.T
        return total + (inside(bounds) * (series.top @ y.T)).sum(0)

    in_f, in_t = inside(windows.forward), inside(windows.target)
    out_rate = config.rate_max * torch.sigmoid(series.soma[-1])
    feedback = params.feedback
    return Sums(
        tuple(s + (in_f * v).sum(0) for s, v in zip(sums.soma_f, series.soma, strict=True)),
        tuple(map(apical, sums.apical_f, feedback, windows.apical_f)),
        tuple(map(apical, sums.apical_t, feedback, windows.apical_t)),
        (
            sums.basal_f[0],
            *(s + (in_f * p).sum(0) for s, p in zip(sums.basal_f[1:], series.basal, strict=True)),
        ),
        sums.rate_t + (in_t * out_rate).sum(0),
    )
