"""The segregated-dendrite network (eLife 2017) computes the paper's dynamics, plateaus and
updates: checked against closed forms, direct convolution and hand-worked formulas."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from apical import keyed
from apical.dendrites import dynamics, learning, simulate
from apical.dendrites.config import dendrite_config
from apical.dendrites.dynamics import Params
from apical.dendrites.network import SegregatedNet
from apical.errors import ApicalError
from apical.rules import make_rule

RULE = make_rule("segregated_dendrites")


def sparse_images(batch: int, n: int = 784, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, generator=g) * (torch.rand(batch, n, generator=g) < 0.3)


def test_kernel_integrates_to_one_and_truncation_keeps_half():
    cfg = dendrite_config("paper")
    t = torch.arange(0, 300, 1e-3, dtype=torch.float64)
    assert float(torch.trapezoid(dynamics.kernel(cfg, t), t)) == pytest.approx(1.0, abs=1e-6)
    d = torch.arange(1, 11, dtype=torch.float64)
    assert float(dynamics.kernel(cfg, d).sum()) == pytest.approx(0.510, abs=1e-3)
    assert int(dynamics.kernel(cfg, torch.arange(1.0, 11)).argmax()) + 1 == 5  # peak at 5 ms


@pytest.mark.parametrize(
    "preset, scale", [("paper", 1.0), ("original-code", 1.0), ("paper", 0.512)]
)
def test_psp_filter_equals_direct_convolution(preset, scale):
    """... times `psp_scale` (which scales the kernel's mass)."""
    cfg = dendrite_config(preset, psp_scale=scale)
    g = torch.Generator().manual_seed(1)
    counts = torch.poisson(torch.full((120, 3, 4), 0.3, dtype=torch.float64), generator=g)
    state = dynamics.filter_init(cfg, 3, 4, "cpu", torch.float64)
    psps = []
    for n in counts:
        state = dynamics.filter_push(cfg, state, n)
        psps.append(dynamics.filter_value(cfg, state))
    ours = torch.stack(psps).numpy()
    taps = 120 if cfg.psp_steps is None else cfg.psp_steps
    kappa = dynamics.kernel(cfg, torch.arange(1, taps + 1, dtype=torch.float64)).numpy()
    for b in range(3):
        for j in range(4):  # s(t) = sum_{d>=1} kappa(d) n(t - d + 1)
            direct = scale * np.convolve(counts[:, b, j].numpy(), kappa)[:120]
            np.testing.assert_allclose(ours[:, b, j], direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "preset, scale", [("paper", 1.0), ("original-code", 1.0), ("original-code", 1.954)]
)
def test_input_chunk_equals_step_by_step_filtering(preset, scale):
    """The chunked input layer (one filter matrix, W applied before filtering) gives the
    per-step PSPs' drive W s(t) + b, the window sum of s(t) and the filter state after the
    chunk, from a filter state that is not at rest (chunks of 7 and 13 steps)."""
    cfg = dendrite_config(preset, n_inputs=6, hidden=(5,), n_outputs=3, psp_scale=scale)
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    params = Params((w, torch.zeros(3, 5, dtype=torch.float64)), (b, torch.zeros(3)), ())
    counts = torch.poisson(torch.full((20, 2, 6), 0.4, dtype=torch.float64), generator=g)
    state = dynamics.filter_init(cfg, 2, 6, "cpu", torch.float64)
    drives, psps = [], []
    for n in counts:
        state = dynamics.filter_push(cfg, state, n)
        psps.append(dynamics.filter_value(cfg, state))
        drives.append(psps[-1] @ w.T + b)
    window = (torch.tensor([[3], [9]]), torch.tensor([[12], [20]]))
    start = dynamics.filter_init(cfg, 2, 6, "cpu", torch.float64)
    active = dynamics.active_pixels(torch.ones(2, 6))  # every pixel: counts[:, example, pixel]
    chunk = partial(dynamics.input_chunk, cfg, params)
    _, start, _ = chunk(start, counts[:3, *active], active)  # 3 steps of history
    drive_a, mid, sum_a = chunk(start, counts[3:10, *active], active, window, 3)
    drive_b, end, sum_b = chunk(mid, counts[10:, *active], active, window, 10)
    torch.testing.assert_close(torch.cat((drive_a, drive_b)), torch.stack(drives[3:]))
    torch.testing.assert_close(end, state)
    psps = torch.stack(psps)
    for k in range(2):
        expected = psps[int(window[0][k]) : int(window[1][k]), k].sum(0)
        torch.testing.assert_close((sum_a + sum_b)[k], expected)


@pytest.mark.parametrize("preset", ["paper", "original-code"])
@pytest.mark.parametrize("n", [1, 4, 37])  # shorter and longer than the 10-step history
def test_filter_chunk_and_the_scan_equal_the_step_loop(preset, n):
    """`filter_chunk` gives the PSPs and end state of n pushes; `linear_recurrence` (the
    doubling scan) gives V(t) = c V(t-1) + u(t), for a constant c and a c per step."""
    cfg = dendrite_config(preset, psp_scale=1.3)
    g = torch.Generator().manual_seed(4)
    state = torch.poisson(torch.full((2 if preset == "paper" else 10, 3, 4), 0.5), generator=g)
    state = state.double()
    counts = torch.poisson(torch.full((n, 3, 4), 0.4, dtype=torch.float64), generator=g)
    psp, after = dynamics.filter_chunk(cfg, state, counts)
    torch.testing.assert_close(dynamics.filter_after(cfg, state, counts), after)
    for k in range(n):
        state = dynamics.filter_push(cfg, state, counts[k])
        torch.testing.assert_close(psp[k], dynamics.filter_value(cfg, state))
    torch.testing.assert_close(after, state)
    u, v0 = torch.randn(n, 3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4).double()
    c = torch.rand(n, 3, generator=g, dtype=torch.float64)
    for coefficient in (0.7, c):
        v, expected = v0, []
        for k in range(n):
            v = (coefficient if isinstance(coefficient, float) else c[k, :, None]) * v + u[k]
            expected.append(v)
        got = dynamics.linear_recurrence(coefficient, u, v0)
        torch.testing.assert_close(got, torch.stack(expected), rtol=1e-13, atol=1e-13)


def test_sparse_product_equals_the_dense_product():
    """The CPU's sum over the spiking inputs' weight columns (counts > 1 and silent rows
    included), and the dense fallback when many entries spike."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(8, 30, generator=g, dtype=torch.float64)
    sparse = torch.poisson(torch.full((40, 30), 0.03, dtype=torch.float64), generator=g)
    sparse[5], sparse[39], sparse[7, 3] = 0, 0, 3
    assert 0 < (sparse > 0).sum() * 8 < sparse.numel()
    dense = torch.poisson(torch.full((40, 30), 1.0, dtype=torch.float64), generator=g)
    for counts in (sparse, dense):
        torch.testing.assert_close(dynamics.sparse_product(counts, w.T.contiguous()), counts @ w.T)


def test_the_input_draws_only_where_pixels_can_spike():
    """`input_counts` draws, at the pixels with a nonzero rate, the counts the full draw
    has there, bit for bit, and the full draw is 0 everywhere else; `spike_product` of
    those counts equals `sparse_product` of the full (steps x examples, pixels) rows, to
    the last bit on the sparse path, to rounding on the dense one."""
    g = torch.Generator().manual_seed(5)
    rate = 0.2 * torch.rand(3, 40, generator=g) * (torch.rand(3, 40, generator=g) < 0.3)
    keys, t = torch.tensor([11, 2**32 - 5, 7]), torch.arange(4, 90)
    full = dynamics.keyed_counts(keys, 0, t, rate)  # (steps, examples, pixels)
    active = dynamics.active_pixels(rate)
    assert 0 < len(active[0]) < rate.numel() and full.sum() > 0
    counts = dynamics.input_counts(keys, t, rate, active)
    assert torch.equal(counts, full[:, *active])
    assert torch.equal(dynamics.scatter_pixels(counts, active, 3, 40), full)
    w_t = torch.randn(40, 9, generator=g)
    rows = full.flatten(0, 1)
    assert (rows > 0).sum() * 8 < rows.numel()  # the sparse path
    expected = dynamics.sparse_product(rows, w_t).view(len(t), 3, 9)
    assert torch.equal(dynamics.spike_product(counts, active, 3, w_t), expected)
    many = 10 * counts + 1  # every active entry spikes: the dense path
    dense = dynamics.scatter_pixels(many, active, 3, 40)
    torch.testing.assert_close(dynamics.spike_product(many, active, 3, w_t), dense @ w_t)


def test_chunked_presentation_does_not_depend_on_the_chunk():
    x, labels, keys = sparse_images(3, 30), torch.tensor([0, 2, 3]), torch.tensor([5, 6, 7])
    out = []
    for chunk in (5, 32, 400):  # 1, 10 and 133 steps per chunk
        cfg = dendrite_config(n_inputs=30, hidden=(6,), n_outputs=4, chunk=chunk)
        torch.manual_seed(0)
        avg, end = simulate.present(cfg, SegregatedNet(cfg).params(), x, labels, keys)
        out.append((avg, end))
    for avg, end in out[1:]:
        torch.testing.assert_close(avg, out[0][0])
        torch.testing.assert_close(end, out[0][1])


@pytest.mark.parametrize("preset", ["paper", "original-code"])
def test_test_presentation_equals_the_step_by_step_reference(preset):
    """A test presentation (input layer a chunk of steps at a time) gives the mean output
    soma over the test window that `step`, one step at a time from rest, gives."""
    cfg = dendrite_config(preset, n_inputs=30, hidden=(6,), n_outputs=4, chunk=33)  # 11 steps
    x, keys = sparse_images(3, 30).double(), torch.tensor([5, 6, 7])
    torch.manual_seed(0)
    params = SegregatedNet(cfg).double().params()
    state = dynamics.rest(cfg, 3, "cpu", torch.float64)
    sign, teach, somas = torch.ones(3, 4), torch.zeros(3, 1), []
    for t in torch.arange(cfg.test_steps):
        state, *_ = dynamics.step(cfg, params, state, 0.2 * x, sign, teach, keys, t)
        somas.append(state.soma[-1])
    window = cfg.test_window or cfg.test_steps - cfg.settle
    expected = torch.stack(somas[cfg.test_steps - window :]).mean(0)
    torch.testing.assert_close(simulate.present_test(cfg, params, x, keys), expected)


@pytest.mark.parametrize(
    "options",
    [
        {"preset": "original-code"},
        {"preset": "paper"},
        {"preset": "original-code", "hidden": (6, 5), "plateau_jitter": True},
        {"preset": "paper", "feedback": "rates", "chunk": 40},  # 14 steps per chunk
    ],
)
def test_all_steps_at_once_equals_the_step_loop(options):
    """With g_a = 0 a chunk of steps is simulated at once (linear recurrences, keyed draws
    for every step): the same window averages, end state and test output as the step
    loop, from a state that is not at rest."""
    x, labels, keys = (
        sparse_images(3, 30).double(),
        torch.tensor([0, 2, 3]),
        torch.tensor([5, 6, 7]),
    )
    options = {"n_inputs": 30, "hidden": (6,), "n_outputs": 4, **options}
    out = []
    for at_once in (False, True):
        cfg = dendrite_config(**options, all_at_once=at_once)
        torch.manual_seed(0)
        params = SegregatedNet(cfg).double().params()
        _, start = simulate.present(cfg, params, x, labels, keys + 10)
        avg, end = simulate.present(cfg, params, x, labels, keys, start)
        out.append((avg, end, simulate.present_test(cfg, params, x, keys)))
    assert float(out[0][0].rate_t.abs().sum()) > 0
    torch.testing.assert_close(out[1], out[0], rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_presentation_equals_the_cpu_one():
    """On a GPU (all steps of a chunk at once by default) the same keyed draws give the
    window averages, end state and test output of the CPU's step loop."""
    cfg = dendrite_config(n_inputs=30, hidden=(6,), n_outputs=4)
    x, labels = sparse_images(3, 30).double(), torch.tensor([0, 2, 3])
    keys = torch.tensor([5, 6, 7])
    torch.manual_seed(0)
    net = SegregatedNet(cfg).double()
    out = []
    for device in ("cpu", "cuda"):
        params = net.to(device).params()
        args = (x.to(device), labels.to(device), keys.to(device))
        avg, end = simulate.present(cfg, params, *args)
        test = simulate.present_test(cfg, params, args[0], args[2])
        out.append((avg, end, test))
    torch.testing.assert_close(out[1], out[0], rtol=1e-9, atol=1e-9, check_device=False)


def test_memory_does_not_grow_with_simulated_time():
    """The largest per-step tensors of a presentation are one input chunk's (at most
    `chunk` rows of (step, example)), however long the presentation; the state is a fixed
    number of (B, n) tensors."""
    seen = []

    def recording(keys, steps, *rest):
        seen.append((len(steps), len(keys)))  # (steps, examples) of a chunk's input draw
        return dynamics.input_counts(keys, steps, *rest)

    fns = simulate.EAGER._replace(counts=recording)
    x, keys = sparse_images(4, 30), torch.arange(4)
    for steps in (250, 2000):
        cfg = dendrite_config(n_inputs=30, hidden=(6,), n_outputs=4, test_steps=steps, chunk=64)
        torch.manual_seed(0)
        simulate.present_test(cfg, SegregatedNet(cfg).params(), x, keys, fns)
        assert sum(s[0] for s in seen) == steps
        assert max(s[0] * s[1] for s in seen) == 64  # 16 steps x 4 examples
        seen.clear()
    state = dynamics.rest(dendrite_config(), 4, "cpu")
    assert [tuple(f.shape) for f in state.filters] == [(10, 4, 784), (10, 4, 500), (10, 4, 10)]


def test_compiled_presentations_equal_the_eager_step_loop():
    """The presentations as the runs use them (torch.compile) simulate what the eager
    per-step loop does: the compiled step loop (`unroll` steps per call and the remainder
    one at a time; 104 steps: 34 calls of 3 steps, then 2 single steps) and the compiled
    chunk (every step at once, the default); training and test presentations."""
    x, labels, keys = sparse_images(3, 30), torch.tensor([0, 2, 3]), torch.tensor([5, 6, 7])
    out = []
    for compiled, unroll, at_once in ((False, 1, False), (True, 3, False), (True, 8, True)):
        cfg = dendrite_config(n_inputs=30, hidden=(6,), n_outputs=4, compile=compiled,
                              unroll=unroll, all_at_once=at_once)  # fmt: skip
        torch.manual_seed(0)
        net = SegregatedNet(cfg)
        presented = simulate.present(cfg, net.params(), x, labels, keys, fns=net._steps)
        out.append((presented, simulate.present_test(cfg, net.params(), x, keys, net._steps)))
    assert out[0][0][0].rate_t.abs().sum() > 0
    for other in out[1:]:
        torch.testing.assert_close(other, out[0])


def _silent_run(cfg, params, steps, teach, sign):
    """Run `step` with no input spikes; return the last state."""
    state = dynamics.rest(cfg, 2, "cpu", torch.float64)
    rate_in = torch.zeros(2, cfg.n_inputs, dtype=torch.float64)
    keys = torch.arange(2)
    for t in range(steps):
        state, *_ = dynamics.step(cfg, params, state, rate_in, sign, teach, keys, torch.tensor(t))
    return state


@pytest.mark.parametrize("g_a", [0.0, 0.05, 0.6])
def test_somata_reach_the_papers_steady_states(g_a):
    cfg = dendrite_config("paper", n_inputs=5, hidden=(4,), n_outputs=3, g_a=g_a)
    b_hidden = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
    b_out = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    params = Params(
        (torch.ones(4, 5, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64)),
        (b_hidden, b_out),
        (torch.zeros(4, 3, dtype=torch.float64),),  # no apical drive
    )
    sign = torch.tensor([[1.0, -1, -1], [-1, 1, -1]], dtype=torch.float64)
    state = _silent_run(cfg, params, 60, torch.zeros(2, 1, dtype=torch.float64), sign)
    # hidden soma: k_b V^b with k_b = g_b / (g_l + g_b + g_a); output: k_d V^b
    torch.testing.assert_close(state.soma[0], (cfg.k_b * b_hidden).expand(2, 4))
    torch.testing.assert_close(state.soma[1], (cfg.k_d * b_out).expand(2, 3))
    state = _silent_run(cfg, params, 60, torch.ones(2, 1, dtype=torch.float64), sign)
    # teaching current: (g_d V^b + g_E E_E + g_I E_I) / (g_l + g_d + g_E + g_I)
    target = (0.6 * b_out + torch.where(sign > 0, 8.0, -8.0)) / 1.7
    torch.testing.assert_close(state.soma[1], target)


@pytest.mark.parametrize(
    "preset,jitter", [("original-code", False), ("paper", False), ("original-code", True)]
)
def test_averages_are_window_means_and_plateaus_sigma_of_them(preset, jitter):
    cfg = dendrite_config(preset, n_inputs=30, hidden=(6,), n_outputs=4, plateau_jitter=jitter)
    torch.manual_seed(0)
    net = SegregatedNet(cfg)
    params = net.params()
    x, labels, keys = sparse_images(3, 30), torch.tensor([0, 2, 3]), torch.tensor([5, 6, 7])
    avg, _ = simulate.present(cfg, params, x, labels, keys)
    # independent reference: record every step, then average by hand
    forward, target = simulate.phase_lengths(cfg, keys)
    state = dynamics.rest(cfg, 3, "cpu", torch.float32)
    sign = 2 * torch.nn.functional.one_hot(labels, 4).float() - 1
    apicals, somas = [], []
    for t in range(int((forward + target).max())):
        teach = (t >= forward)[:, None].float()
        state, ap, _ = dynamics.step(
            cfg, params, state, 0.2 * x, sign, teach, keys, torch.tensor(t)
        )
        apicals.append(ap[0])
        somas.append(state.soma[0])
    apicals, somas = torch.stack(apicals), torch.stack(somas)
    for b in range(3):
        lf, lt = int(forward[b]), int(target[b])
        start_f = lf - 20 if cfg.window else cfg.settle
        torch.testing.assert_close(avg.soma_f[0][b], somas[start_f:lf, b].mean(0))
        d = (
            simulate.plateau_offsets(cfg, keys, 0, 1)[b]
            if jitter
            else torch.zeros(6, dtype=torch.long)
        )
        end = lf + lt
        start_t = end - 20 if cfg.window else lf + cfg.settle
        for i in range(6):
            s, e = (
                (start_t - int(d[i]), end - int(d[i])) if cfg.window else (start_t, end - int(d[i]))
            )
            expected = torch.sigmoid(apicals[s:e, b, i].mean())
            assert float(torch.sigmoid(avg.apical_t[0][b, i])) == pytest.approx(
                float(expected), abs=1e-5
            )


def test_phase_lengths_follow_the_papers_wald_draws():
    keys = torch.arange(20000)
    forward, target = simulate.phase_lengths(dendrite_config(), keys)
    extra = torch.cat([forward, target]).double() - 50
    # floor(Wald(2, 1)): mean about 1.5, about half of the draws add nothing (originals.md 1.4)
    assert float(extra.mean()) == pytest.approx(1.5, abs=0.06)
    assert float((extra == 0).double().mean()) == pytest.approx(0.49, abs=0.02)
    assert not torch.equal(forward, target)


def test_keyed_poisson_counts_have_the_poisson_moments():
    keys = keyed.step_keys(torch.arange(4000), 0, 3)
    rate = torch.full((4000, 50), 0.2)
    counts = keyed.poisson(keyed.uniform(keys, 50), rate)
    assert float(counts.mean()) == pytest.approx(0.2, abs=0.003)
    assert float(counts.var()) == pytest.approx(0.2, abs=0.005)
    assert float((counts >= 2).double().mean()) == pytest.approx(
        1 - math.exp(-0.2) * 1.2, abs=0.001
    )


def test_hand_computed_update_on_a_tiny_network():
    """Rate mode (deterministic): every quantity of eLife Eqs. 28 and 33 written out."""
    cfg = dendrite_config(n_inputs=3, hidden=(2,), n_outputs=2, mode="rate")
    w0 = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]
    b0, w1, b1 = [0.1, -0.2], [[1.0, -2.0], [0.5, 3.0]], [0.3, -0.1]
    y = [[2.0, -1.0], [-0.5, 1.5]]
    net = SegregatedNet(cfg)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor(w0))
        net.layers[0].bias.copy_(torch.tensor(b0))
        net.layers[1].weight.copy_(torch.tensor(w1))
        net.layers[1].bias.copy_(torch.tensor(b1))
        net.layers[0].feedback.copy_(torch.tensor(y))
    x, label = [0.2, 0.9, 0.5], 1
    step = RULE.directions(net, torch.tensor([x]), torch.tensor([label]))

    def sig(v):
        return 1 / (1 + math.exp(-v))

    kb, kd, phi = 0.6 / 0.7, 0.6 / 0.7, 0.2
    r_in = [phi * v for v in x]
    vh = [kb * (sum(w0[i][j] * r_in[j] for j in range(3)) + b0[i]) for i in range(2)]
    rh = [phi * sig(v) for v in vh]
    vb_out = [sum(w1[k][i] * rh[i] for i in range(2)) + b1[k] for k in range(2)]
    v_f = [kd * v for v in vb_out]
    v_t = [(0.6 * vb_out[k] + (8.0 if k == label else -8.0)) / 1.7 for k in range(2)]
    r_f, r_t = [phi * sig(v) for v in v_f], [phi * sig(v) for v in v_t]
    e_out = [20 * kd / phi * (r_t[k] - r_f[k]) * sig(v_f[k]) * (1 - sig(v_f[k])) for k in range(2)]
    alpha_f = [sig(sum(y[i][k] * r_f[k] for k in range(2))) for i in range(2)]
    alpha_t = [sig(sum(y[i][k] * r_t[k] for k in range(2))) for i in range(2)]
    e_h = [20 * kb * (alpha_t[i] - alpha_f[i]) * sig(vh[i]) * (1 - sig(vh[i])) for i in range(2)]
    dw1 = [[-e_out[k] * rh[i] for i in range(2)] for k in range(2)]
    dw0 = [[-e_h[i] * r_in[j] for j in range(3)] for i in range(2)]
    d = step.directions
    torch.testing.assert_close(d["layers.1.weight"], torch.tensor(dw1))
    torch.testing.assert_close(d["layers.1.bias"], -torch.tensor(e_out))
    torch.testing.assert_close(d["layers.0.weight"], torch.tensor(dw0))
    torch.testing.assert_close(d["layers.0.bias"], -torch.tensor(e_h))


def test_spiking_update_is_the_formula_on_the_window_averages():
    cfg = dendrite_config(n_inputs=20, hidden=(5,), n_outputs=3, compile=False)
    torch.manual_seed(2)
    net = SegregatedNet(cfg)
    x, labels, keys = sparse_images(2, 20), torch.tensor([1, 2]), torch.tensor([11, 12])
    step = RULE.directions(net, x, labels, keys=keys, carry=False)
    avg, _ = simulate.present(cfg, net.params(), x, labels, keys)
    sig = torch.sigmoid
    v_out, v_h = avg.soma_f[1], avg.soma_f[0]
    bracket = (avg.rate_t - 0.2 * sig(v_out)) * sig(v_out) * (1 - sig(v_out))
    dw1 = 500 * cfg.k_d * 0.2 * torch.einsum("bk,bi->ki", bracket, avg.basal_f[1])  # P_o = 20/0.04
    jump = sig(avg.apical_t[0]) - sig(avg.apical_f[0])
    dw0 = (
        100
        * cfg.k_b
        * 0.2
        * torch.einsum("bi,bj->ij", jump * sig(v_h) * (1 - sig(v_h)), avg.basal_f[0])
    )
    torch.testing.assert_close(step.directions["layers.1.weight"], -dw1)
    torch.testing.assert_close(step.directions["layers.0.weight"], -dw0)


@pytest.mark.parametrize("preset", ["original-code", "paper"])
def test_a_batch_of_four_equals_four_runs_alone(preset):
    cfg = dendrite_config(preset, hidden=(30,), compile=False)
    torch.manual_seed(3)
    net = SegregatedNet(cfg)
    x, labels = sparse_images(4), torch.tensor([3, 1, 4, 1])
    keys = keyed.example_keys(0, 0, torch.tensor([10, 20, 30, 40]))
    batch = RULE.directions(net, x, labels, keys=keys, carry=False).directions
    alone = [
        RULE.directions(net, x[i : i + 1], labels[i : i + 1], keys=keys[i : i + 1], carry=False)
        for i in range(4)
    ]
    for name, value in batch.items():
        total = sum(a.directions[name] for a in alone)
        torch.testing.assert_close(value, total, rtol=1e-4, atol=1e-5)
    assert any(float(v.abs().max()) > 0 for v in batch.values())


def test_symmetric_feedback_is_closer_to_backprop_than_random():
    torch.manual_seed(4)
    random_net = SegregatedNet(dendrite_config(hidden=(100,), compile=False))
    torch.manual_seed(4)
    symmetric_net = SegregatedNet(
        dendrite_config(hidden=(100,), feedback_init="symmetric", compile=False)
    )
    torch.testing.assert_close(symmetric_net.layers[0].feedback, symmetric_net.layers[1].weight.T)
    x, labels = sparse_images(32, seed=5), torch.arange(32) % 10
    keys = torch.arange(32)
    steps = [
        RULE.directions(net, x, labels, keys=keys, carry=False, diagnose=True)
        for net in (random_net, symmetric_net)
    ]
    angles = [step.diagnostics["layers.0"]["angle"] for step in steps]
    assert float(angles[1]) < float(angles[0]) - 20, angles
    assert 80 < float(angles[0]) < 100  # random feedback starts near 90 degrees


def test_initialisation_matches_the_authors_moments():
    cfg = dendrite_config()
    for fan_in, (w_avg, w_sd) in {
        784: (0.01871, 0.5049),
        500: (0.02933, 0.6321),
        100: (0.1467, 1.4104),
    }.items():
        ours = learning.init_moments(cfg, fan_in)
        assert ours == pytest.approx((w_avg, w_sd), rel=1e-3)
    net = SegregatedNet(dendrite_config(hidden=(500, 100)))
    y0, y1 = net.layers[0].feedback, net.layers[1].feedback
    assert (float(y0.min()), float(y0.max())) == pytest.approx((-2.16, 2.22), abs=0.01)
    assert (float(y1.min()), float(y1.max())) == pytest.approx((-4.74, 5.03), abs=0.03)


def test_sparse_feedback_keeps_a_rescaled_fraction():
    torch.manual_seed(0)
    dense = SegregatedNet(dendrite_config()).layers[0].feedback
    torch.manual_seed(0)
    net = SegregatedNet(dendrite_config(feedback_keep=0.2))
    sparse = net.layers[0].feedback
    kept = sparse != 0
    assert float(kept.double().mean()) == pytest.approx(0.2, abs=0.03)
    torch.testing.assert_close(sparse[kept], 5 * dense[kept])


def test_rate_feedback_sends_the_output_rate_to_the_apical_dendrites():
    cfg = dendrite_config(n_inputs=4, hidden=(3,), n_outputs=2, feedback="rates")
    torch.manual_seed(1)
    net = SegregatedNet(cfg)
    state = dynamics.rest(cfg, 1, "cpu", torch.float32)
    state = state._replace(soma=(state.soma[0], torch.tensor([[1.0, -2.0]])))
    _, apicals, _ = dynamics.step(
        cfg, net.params(), state, torch.zeros(1, 4), torch.ones(1, 2), torch.zeros(1, 1),
        torch.zeros(1, dtype=torch.long), torch.tensor(0),
    )  # fmt: skip
    expected = 0.2 * torch.sigmoid(torch.tensor([[1.0, -2.0]])) @ net.layers[0].feedback.T
    torch.testing.assert_close(apicals[0], expected)


def test_bad_input_gives_one_clear_line():
    with pytest.raises(ApicalError, match="unknown preset"):
        dendrite_config("fast")
    with pytest.raises(ApicalError, match="unknown segregated dendrites option key g_apical"):
        dendrite_config(g_apical=1.0)
    with pytest.raises(ApicalError, match="psp_scale must be a finite number, got nan"):
        dendrite_config(psp_scale=float("nan"))
    net = SegregatedNet(dendrite_config(n_inputs=4, hidden=(3,), n_outputs=2))
    with pytest.raises(ApicalError, match=r"\[0, 1\].*standardize = false"):
        net(torch.full((2, 4), 3.0))
    with pytest.raises(ApicalError, match="4 inputs"):
        net(torch.zeros(2, 5))
    with pytest.raises(ApicalError, match="segregated_dendrites only"):
        RULE.directions(torch.nn.Linear(4, 2), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
