"""Predictive coding in apical against pcx (Pinchetti et al. 2024, JAX), side by side in one
process: seconds per training epoch of pcx's MNIST MLP protocol.

    pip install pcx   # a CPU JAX comes with it; not a dependency of apical
    python benchmarks/pcx_side_by_side.py [--epochs-of 60000] [--reps 3] [--json]

Both train the pcx MLP (784-128-128-128-10, exact GELU, cross-entropy output energy)
with T = 5 inference steps per batch of 128 and AdamW on the weights, on the same
synthetic inputs (the cost does not depend on the pixel values): pcx with its own training
step (value nodes relaxed by SGD, momentum 0.35, rate 0.018; the step jit-compiled, as in
pcx's experiment scripts), apical with its `predictive_coding` rule taking the trainer's
step (directions, .grad, fused AdamW), eager and with its learning step compiled
(`compiled`: feed-forward pass, inference, error signals and weight gradients in one
torch.compile'd function; the optimiser step is the trainer's, outside it). The time of
`--batches` steps is scaled to a 60,000-image epoch; medians over `--reps` interleaved
repetitions after a warm-up (pcx's compilation is not counted). Skips with one line where
pcx or JAX is absent.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import sys
import time

import torch
from rules_vs_backprop import machine, training_step

import apical
from apical.models import mlp

SIZES, T, BATCH = (784, 128, 128, 128, 10), 5, 128


def pcx_epoch_fn(batches: int):
    """pcx's training step on the pcx MLP (the library's documented API), as a closure that
    runs `batches` steps."""
    import jax
    import jax.numpy as jnp
    import optax
    import pcx
    import pcx.functional as pxf
    import pcx.nn as pxnn
    import pcx.predictive_coding as pxc
    import pcx.utils as pxu

    class Net(pxc.EnergyModule):
        def __init__(self) -> None:
            super().__init__()
            # the exact GELU, apical's (pcx's scripts use jax.nn.gelu's default, the tanh
            # approximation; in development runs pcx took about as long with either)
            self.act = pcx.static(functools.partial(jax.nn.gelu, approximate=False))
            self.layers = [pxnn.Linear(a, b) for a, b in itertools.pairwise(SIZES)]
            self.vodes = [pxc.Vode() for _ in SIZES[1:-1]] + [pxc.Vode(pxc.ce_energy)]
            self.vodes[-1].h.frozen = True

        def __call__(self, x, y):
            for vode, layer in zip(self.vodes[:-1], self.layers[:-1], strict=True):
                x = vode(self.act(layer(x)))
            x = self.vodes[-1](self.layers[-1](x))
            if y is not None:
                self.vodes[-1].set("h", y)  # beta = 1: the output value node at the target
            return self.vodes[-1].get("u")

    nodes = pxu.M(pxc.VodeParam | pxc.VodeParam.Cache)

    @pxf.vmap(nodes.to((None, 0)), in_axes=(0, 0), out_axes=0)
    def forward(x, y, *, model):
        return model(x, y)

    @pxf.vmap(nodes.to((None, 0)), in_axes=(0,), out_axes=(None, 0), axis_name="batch")
    def energy(x, *, model):
        out = model(x, None)
        return jax.lax.psum(model.energy(), "batch"), out

    free_nodes = pxu.M(pxc.VodeParam).hasnot(frozen=True)

    @pxf.jit(static_argnums=0)
    def train_step(t, x, y, *, model, optim_w, optim_h):
        model.train()
        with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
            forward(x, y, model=model)
        optim_h.init(pxu.M(pxc.VodeParam)(model))
        for _ in range(t):
            with pxu.step(model, clear_params=pxc.VodeParam.Cache):
                _, g = pxf.value_and_grad(free_nodes.to([False, True]), has_aux=True)(energy)(
                    x, model=model
                )
            optim_h.step(model, g["model"], allow_none=True)
        optim_h.clear()
        with pxu.step(model, clear_params=pxc.VodeParam.Cache):
            _, g = pxf.value_and_grad(pxu.M(pxnn.LayerParam).to([False, True]), has_aux=True)(
                energy
            )(x, model=model)
        optim_w.step(model, g["model"])

    model = Net()
    x = jnp.asarray(torch.rand(BATCH, SIZES[0]).numpy())
    y = jax.nn.one_hot(jnp.asarray(torch.randint(0, 10, (BATCH,)).numpy()), 10)
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(x, None, model=model)
        optim_h = pxu.Optim(lambda: optax.sgd(0.018, momentum=0.35))
        optim_w = pxu.Optim(
            lambda: optax.adamw(3e-4, weight_decay=3.3e-3), pxu.M(pxnn.LayerParam)(model)
        )

    def run() -> None:
        for _ in range(batches):
            train_step(T, x, y, model=model, optim_w=optim_w, optim_h=optim_h)
        jax.block_until_ready(model.layers[-1].nn.weight.get())

    return run


def apical_epoch_fn(batches: int, compiled: bool):
    torch.manual_seed(0)
    rule = apical.make_rule("predictive_coding", steps=T, rate=0.1, compiled=compiled)
    x, y = torch.rand(BATCH, SIZES[0]), torch.randint(0, 10, (BATCH,))
    model = apical.convert(mlp((SIZES[0],), 10, hidden=SIZES[1:-1], activation="gelu"), rule, x)
    step = training_step(rule, model, x, y, 3e-4, optimizer="adam")

    def run() -> None:
        for _ in range(batches):
            step()

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batches", type=int, default=50, help="training steps per timed call")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        import jax
        import pcx  # noqa: F401
    except ImportError:
        print("skipped: pcx (and JAX) not installed; pip install pcx")
        sys.exit(0)
    fns = {
        "pcx": pcx_epoch_fn(args.batches),
        "apical": apical_epoch_fn(args.batches, compiled=False),
        "apical, compiled step": apical_epoch_fn(args.batches, compiled=True),
    }
    for fn in fns.values():
        fn()  # warm-up (pcx compiles here)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.reps):
        for label, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    per_epoch = {k: statistics.median(v) / args.batches * (60000 / BATCH) for k, v in times.items()}
    result = {
        **machine(),
        "jax": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "protocol": "pcx MLP 784-128-128-128-10 exact GELU, CE energy, T = 5, batch 128",
        "seconds per 60,000-image epoch": per_epoch,
        "apical / pcx": per_epoch["apical"] / per_epoch["pcx"],
        "apical compiled / pcx": per_epoch["apical, compiled step"] / per_epoch["pcx"],
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for k, v in per_epoch.items():
        print(f"{k:28s} {v:.2f} s per epoch")
    ratios = result["apical / pcx"], result["apical compiled / pcx"]
    print(f"apical / pcx: {ratios[0]:.2f}, compiled: {ratios[1]:.2f}")


if __name__ == "__main__":
    main()
