"""Random numbers keyed per example or per replica: a counter-based generator.

Every draw is a pure function of (key, stream, time step, neuron index), so an example's
(or a spiking replica's) draws do not depend on what else shares its batch: B examples at
once equal B runs alone, and a resumed run continues the same draws with no generator
state to save. The hash is the
32-bit integer finaliser (xorshift-multiply) of C. Wellons' "hash prospector". Keys are
int64 tensors holding values in [0, 2^32); the hash itself runs on int32 tensors holding
the same 32 bits (multiplies wrap modulo 2^32, shifts are masked to act as logical
shifts): the same values as exact int64 arithmetic (tested against a pure-Python
reference, eager and compiled), and several times faster in a compiled CPU kernel, where
int64 vector multiplies are slow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9

# Streams of the segregated-dendrite model: input spikes use 0, hidden layer l uses 1 + l,
# the output 1 + n_hidden (at most 64 populations); these two sit above every population.
PHASE_STREAM = 100
JITTER_STREAM = 101


def mix32(x: Tensor) -> Tensor:
    """The hash on an int32 tensor holding 32-bit values (two's complement): the bits of
    `mix`. `(x >> k) & (2^(32-k) - 1)` is the logical shift of the 32 bits."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x31848BAB
    return x ^ ((x >> 16) & 0xFFFF)


def mix(x: Tensor) -> Tensor:
    """A 32-bit integer hash of each entry of an int64 tensor with values in [0, 2^32)."""
    return mix32(x.to(torch.int32)).long() & _MASK


def example_keys(seed: int, epoch: int, index: Tensor) -> Tensor:
    """One key per example: from the run's seed, the epoch and the example's index in the
    dataset (so a batch's composition never changes an example's draws)."""
    base = mix(torch.tensor([(seed * 7919 + epoch) & _MASK], device=index.device))
    return mix(base ^ (index.long() & _MASK))


def step_keys(keys: Tensor, stream: int, t: Tensor | int) -> Tensor:
    """Keys (B,) for one stream at time step t (a Python int or a 0-d int64 tensor)."""
    return mix(keys ^ mix(torch.as_tensor(t, device=keys.device) + (stream << 20)))


def salts(n: int, device: torch.device | str = "cpu") -> Tensor:
    """The per-index salts of `uniform` (n,), int32 (the bits of `mix`'s values): the same
    at every step, so a time-step loop computes them once and passes them in (half the
    hashing of a draw)."""
    return salts_of(torch.arange(n, device=device))


def salts_of(index: Tensor) -> Tensor:
    """The salts of `uniform` at the given indices (int64, any shape), int32."""
    return mix32(((index * _GOLDEN) & _MASK).to(torch.int32))


def uniform(keys: Tensor, n: int | Tensor) -> Tensor:
    """(B, n) uniforms in (0, 1) from step keys (B,): 24 random bits, centred in their bin.
    `n` may be `salts(n)` computed beforehand; the draws are the same."""
    salt = salts(n, keys.device) if isinstance(n, int) else n.to(torch.int32)
    return uniform_at(keys[:, None], salt)


def uniform_at(keys: Tensor, salt: Tensor) -> Tensor:
    """The uniforms of `uniform` for step keys and salts broadcast against each other: the
    draw of index i under key k is `uniform_at(k, salts_of(i))`, whatever else is drawn,
    so a sparse set of (key, index) pairs draws what the full draw has there."""
    bits = (mix32(keys.to(torch.int32) ^ salt) >> 8) & 0xFFFFFF
    return bits.float() * (1.0 / 2**24) + 2.0**-25


def poisson(u: Tensor, rate: Tensor, terms: int = 7) -> Tensor:
    """Poisson counts with mean `rate` by inversion of the CDF at uniforms `u`.

    Exact to the 2^-24 resolution of `u` for the rates of this model (at most 0.2 per
    step, where P(N >= 7) = 2.5e-9); larger counts are cut at `terms`.
    """
    p = torch.exp(-rate)
    cdf = p
    count = (u > cdf).to(rate.dtype)
    for k in range(1, terms):
        p = p * rate / k
        cdf = cdf + p
        count = count + (u > cdf).to(rate.dtype)
    return count


def normal(keys: Tensor, n: int) -> Tensor:
    """(B, n) standard normals (Box-Muller on two keyed uniforms)."""
    u = uniform(keys, 2 * n)
    return torch.sqrt(-2 * torch.log(u[:, :n])) * torch.cos(2 * math.pi * u[:, n:])


def wald(keys: Tensor, mean: float, scale: float, draw: int = 0) -> Tensor:
    """One inverse-Gaussian (Wald) draw per key (Michael, Schucany & Haas 1976), as NumPy's
    `wald(mean, scale)` defines it; `draw` numbers independent draws of the same key."""
    nu = normal(step_keys(keys, PHASE_STREAM, 2 * draw), 1)[:, 0]
    u = uniform(step_keys(keys, PHASE_STREAM, 2 * draw + 1), 1)[:, 0].double()
    y = nu.double() ** 2
    x = (
        mean
        + mean**2 * y / (2 * scale)
        - mean / (2 * scale) * torch.sqrt(4 * mean * scale * y + mean**2 * y**2)
    )
    return torch.where(u <= mean / (mean + x), x, mean**2 / x)
