"""The nn.Module shell of the segregated-dendrite network: parameters, feedback, carried state.

`SegregatedNet(config)` holds W^l, b^l (trainable, with the roles of apical.params: hidden
layers, then the output) and the fixed feedback Y^l; the simulation itself is the pure
functions of `dynamics` and `simulate`. `model(x)` is a test presentation and returns
sigma(mean output soma) per class (the class is its arg-max; values in (0, 1), so an
"mse" loss against one-hot labels is meaningful). Training goes through the rule
`segregated_dendrites`.

Section numbers (§) refer to docs/models/segregated-dendrites.md.
"""

from __future__ import annotations

import functools
import itertools

import torch
from torch import Tensor, nn

from apical.compiled import compile_step
from apical.dendrites import dynamics, learning, simulate
from apical.dendrites.config import DendriteConfig, dendrite_config
from apical.dendrites.dynamics import Params, State
from apical.errors import ApicalError


class DendriticLayer(nn.Module):
    """One layer's forward weight (out, in) and bias; hidden layers also hold their fixed
    apical feedback Y (out, n_classes). `position` gives the parameters' roles."""

    def __init__(self, n_in: int, n_out: int, position: str, n_classes: int) -> None:
        super().__init__()
        self.position = position
        # stored input-major (W^T contiguous): the input layer's sparse product sums rows
        # of W^T, read in place instead of transposed at every presentation
        self.weight = nn.Parameter(torch.empty(n_in, n_out).T)
        self.bias = nn.Parameter(torch.empty(n_out))
        if position == "hidden":
            self.register_buffer("feedback", torch.zeros(n_out, n_classes))
            self.register_buffer("feedback_noise", torch.zeros(n_out, n_classes))


class SegregatedNet(nn.Module):
    def __init__(self, config: DendriteConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        config.check()
        self.config = config
        sizes = config.sizes
        self.layers = nn.ModuleList(
            DendriticLayer(
                n_in, n_out, "output" if i == len(sizes) - 2 else "hidden", config.n_outputs
            )
            for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
        )
        self.carried: State | None = None
        self._initialise(generator)

    @torch.no_grad()
    def _initialise(self, generator: torch.Generator | None) -> None:
        """§7, 6: W = W_avg + 3.465 W_sd U(-1, 1) from the fan-in,
        b = 0.8 + 3.465e-3 U(-1, 1); Y^l drawn like the forward weights of a layer with
        fan-in n_l; sparse feedback keeps a fraction (rescaled by its inverse)."""
        c = self.config
        for layer in self.layers:
            mean, sd = learning.init_moments(c, layer.weight.shape[1])
            layer.weight.copy_(learning.spread_uniform(layer.weight.shape, mean, sd, generator))
            bias = learning.spread_uniform(
                layer.bias.shape, learning.B_AVG, learning.B_SD, generator
            )
            layer.bias.copy_(bias)
        for layer in self.hidden_layers:
            n = layer.weight.shape[0]
            mean, sd = learning.init_moments(c, n)
            y = learning.spread_uniform(layer.feedback.shape, mean, sd, generator)
            if c.feedback_keep < 1:
                keep = torch.rand(y.shape, generator=generator) < c.feedback_keep
                y = y * keep / (c.feedback_keep if c.feedback_rescale else 1.0)
            layer.feedback.copy_(y)
            if c.feedback_noise:
                noise = c.feedback_noise * torch.randn(y.shape, generator=generator)
                layer.feedback_noise.copy_(noise)
        self.sync_feedback()

    @property
    def hidden_layers(self) -> list[DendriticLayer]:
        return list(self.layers)[:-1]

    @torch.no_grad()
    def sync_feedback(self) -> None:
        """Symmetric feedback: re-set Y^l from the current forward weights (plus its fixed
        noise) after every update; random feedback never changes."""
        if self.config.feedback_init != "symmetric":
            return
        weights = tuple(layer.weight for layer in self.layers)
        for layer, y in zip(self.hidden_layers, learning.symmetric_feedback(weights), strict=True):
            layer.feedback.copy_(y + layer.feedback_noise)

    def params(self) -> Params:
        return Params(
            tuple(layer.weight.detach() for layer in self.layers),
            tuple(layer.bias.detach() for layer in self.layers),
            tuple(layer.feedback for layer in self.hidden_layers),
        )

    # -- the simulation -----------------------------------------------------------------
    @functools.cached_property
    def _steps(self) -> simulate.Steps:
        """The time-step loop's functions (compiled with `config.compile`)."""
        if not self.config.compile:
            return simulate.EAGER
        eager = simulate.EAGER
        return simulate.Steps(
            compile_step(eager.train),
            compile_step(eager.test),
            compile_step(eager.counts, dynamic=None),  # dynamic in the steps after a change
            compile_step(eager.block),
            # a presentation's length (steps) varies: dynamic from the start
            *(compile_step(f, dynamic=True) for f in eager[4:]),
        )

    def _flat(self, x: Tensor) -> Tensor:
        x = x.reshape(len(x), -1)
        if x.shape[1] != self.config.n_inputs:
            raise ApicalError(
                f"segregated dendrites: images have {x.shape[1]} pixels but the network has "
                f"{self.config.n_inputs} inputs; set model_options n_inputs"
            )
        if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
            raise ApicalError(
                "segregated dendrites: pixel intensities must lie in [0, 1] (they set Poisson "
                "rates); load the data with standardize = false"
            )
        return x

    @torch.no_grad()
    def present(
        self,
        x: Tensor,
        labels: Tensor,
        keys: Tensor,
        carry: bool,
        first: int = 0,
        batch_keys: Tensor | None = None,
    ) -> tuple[simulate.Averages, State | None]:
        """One training presentation of a batch; from the carried state when `carry`. A
        distributed process's shard of a batch starts at slot `first` of the carried
        state, and simulates as long as the whole batch (`batch_keys`)."""
        x = self._flat(x)
        if self.config.mode == "rate":
            return simulate.present_rates(self.config, self.params(), x, labels), None
        start = self._start_state(len(x), x, first) if carry else None
        return simulate.present(self.config, self.params(), x, labels, keys, start,
                                fns=self._steps, batch_keys=batch_keys)  # fmt: skip

    def _start_state(self, batch: int, x: Tensor, first: int = 0) -> State:
        """The carried state of slots first .. first + batch - 1 (rest for slots never
        used)."""
        fresh = dynamics.rest(self.config, batch, x.device, x.dtype)
        if self.carried is None:
            return fresh
        n = max(0, min(batch, self.carried.soma[0].shape[0] - first))

        def fill(new: Tensor, old: Tensor, dim: int) -> Tensor:
            lead = [slice(None)] * dim
            new[tuple([*lead, slice(0, n)])] = old[tuple([*lead, slice(first, first + n)])]
            return new

        return State(
            tuple(fill(a, b, 1) for a, b in zip(fresh.filters, self.carried.filters, strict=True)),
            tuple(fill(a, b, 0) for a, b in zip(fresh.soma, self.carried.soma, strict=True)),
        )

    @torch.no_grad()
    def forward(self, x: Tensor, keys: Tensor | None = None) -> Tensor:
        """A test presentation: sigma(mean output soma) (B, n_classes). `keys` (B,) key the
        Poisson draws per example (drawn from the global generator when None)."""
        x = self._flat(x)
        if self.config.mode == "rate":
            return torch.sigmoid(simulate.test_rates(self.config, self.params(), x))
        if keys is None:
            keys = torch.randint(0, 2**32, (len(x),), device=x.device)
        # on a CPU, 128 (32 steps per input chunk): 1.7 ms per image on one thread, 2.4x
        # faster than 512 images stepped one at a time (in chunks: 8 steps, 2.5 ms)
        chunk = 128 if x.device.type == "cpu" else 8192
        v = [
            simulate.present_test(self.config, self.params(), xs, ks, fns=self._steps)
            for xs, ks in zip(x.split(chunk), keys.split(chunk), strict=True)
        ]
        return torch.sigmoid(torch.cat(v))

    # -- carried state in checkpoints ---------------------------------------------------
    def get_extra_state(self) -> dict[str, list[Tensor]]:
        if self.carried is None:
            return {}
        return {"filters": list(self.carried.filters), "soma": list(self.carried.soma)}

    def set_extra_state(self, state: dict[str, list[Tensor]]) -> None:
        self.carried = State(tuple(state["filters"]), tuple(state["soma"])) if state else None


def segregated_dendrites(input_shape, n_classes: int, **options) -> SegregatedNet:
    """The eLife 2017 network for images of `input_shape` (flattened) and `n_classes`
    outputs; `options` are DendriteConfig fields (`preset` first: "original-code" or
    "paper"). Weights are drawn from the global generator (the trainer seeds it)."""
    n_inputs = 1
    for d in input_shape:
        n_inputs *= d
    config = dendrite_config(n_inputs=n_inputs, n_outputs=n_classes, **options)
    return SegregatedNet(config)
