"""The non-linear regression of Sacramento et al. 2018 (section 3.2): a 30-50-10 microcircuit
student (10 interneurons) learns the input-output map of a fixed 30-20-10 teacher network.

    python scripts/microcircuit_regression.py [--steps 20000] [--seed 0] [--json]

Both networks use the paper's soft rectifier phi(u) = 0.1 log(1 + e^(u - 3)); the
student's top-down weights are fixed and random, its pyramid-to-interneuron weights learn
(the rule `microcircuit`, simplified dynamics, batches of 10, SGD). Inputs are rates
uniform in [0, 1]^30. The teacher's weights are Xavier-normal with gain `--teacher-gain`
and its thresholds put each unit's mean potential at the rectifier's knee (u = 3), so that
its outputs are non-linear in the inputs; the student starts with the same kind of
thresholds. Reports the test mean squared error of the output rates against the teacher's
(and the error of always answering the teacher's mean rate), and the angle between the
forward weights W_2^T and the top-down weights B_1 (the paper: about 45 degrees).
"""

from __future__ import annotations

import argparse
import json

import torch

from apical.metrics import angle
from apical.microcircuit import dynamics
from apical.microcircuit.config import microcircuit_config
from apical.microcircuit.network import Microcircuit
from apical.rules import make_rule

N_IN, N_OUT = 30, 10


@torch.no_grad()
def _centre_on_knee(net: Microcircuit, x: torch.Tensor) -> None:
    """Thresholds that put every unit's mean potential over `x` at 3, layer by layer."""
    rates = x
    for gain, layer in zip(net.config.basal_gains, net.layers, strict=True):
        layer.bias.copy_(3.0 / gain - (rates @ layer.weight.T).mean(0))
        rates = dynamics.soft_rectifier(gain * (rates @ layer.weight.T + layer.bias))
    if net.config.self_predicting:
        net.make_self_predicting()


def _network(hidden: int, gain: float, seed: int, x: torch.Tensor) -> Microcircuit:
    torch.manual_seed(seed)
    config = microcircuit_config(n_inputs=N_IN, hidden=(hidden,), n_outputs=N_OUT,
                                 activation="soft_rectifier", init_gain=gain)  # fmt: skip
    net = Microcircuit(config)
    _centre_on_knee(net, x)
    return net


def run(steps: int, seed: int, lr: float, teacher_gain: float, probe_every: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x_train, x_test = torch.rand(10_000, N_IN, generator=g), torch.rand(2_000, N_IN, generator=g)
    teacher = _network(20, teacher_gain, seed + 1000, x_train)
    y_train, y_test = teacher(x_train), teacher(x_test)
    student = _network(50, 1.0, seed, x_train)
    rule = make_rule("microcircuit", loss="mse")
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=lr)
    params = dict(student.named_parameters())

    def measure(step: int) -> dict:
        inter = student.interneurons[0]
        return {
            "step": step,
            "test_mse": float((student(x_test) - y_test).pow(2).sum(1).mean()),
            "top_down_angle": angle(inter.top_down, student.layers[1].weight.T),
            "apical_free": float(student.settle(x_test[:200], None).apical[0].pow(2).mean()),
        }

    rows = [measure(0)]
    order = torch.randperm(len(x_train), generator=g)
    for step in range(1, steps + 1):
        i = (step - 1) * 10 % len(x_train)
        idx = order[i : i + 10]
        result = rule.directions(student, x_train[idx], y_train[idx])
        for name, d in result.directions.items():
            params[name].grad = d
        opt.step()
        rule.after_step(student, result)
        if step % probe_every == 0 or step == steps:
            rows.append(measure(step))
    baseline = float((y_test - y_train.mean(0)).pow(2).sum(1).mean())
    return {"steps": steps, "seed": seed, "lr": lr, "teacher_gain": teacher_gain,
            "mean_rate_mse": baseline, "rows": rows}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=40_000, help="training steps of 10 examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--teacher-gain", type=float, default=10.0)
    p.add_argument("--probe-every", type=int, default=4_000)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = run(args.steps, args.seed, args.lr, args.teacher_gain, args.probe_every)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"always the mean rate: test MSE {result['mean_rate_mse']:.3g}")
    for r in result["rows"]:
        print(f"step {r['step']:6d}  test MSE {r['test_mse']:.3g}  W2^T vs B angle "
              f"{r['top_down_angle']:5.1f}  apical (no target) {r['apical_free']:.2g}")  # fmt: skip


if __name__ == "__main__":
    main()
