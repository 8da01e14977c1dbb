"""Spiking burst ensembles (Payeur et al. 2021): neuron, synapses, plasticity, XOR network."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from apical.compiled import compile_loop, compile_step
from apical.config import replace as configured
from apical.errors import ApicalError
from apical.keyed import mix, salts, step_keys, uniform
from apical.spiking import neurons, plasticity, population, protocols, raster, synapses, xor_net
from apical.spiking.config import BurstNeuron, BurstRule, XorConfig
from apical.spiking.multiplex import MultiplexConfig
from apical.spiking.xor import cost, input_current, run_segment, run_xor, teacher


def test_burst_fraction_follows_the_dendritic_sigmoid():
    """V_d clamped before each step (the step's own Euler update moves it a little, and p
    is read from the updated value): second spikes per first spike = the mean of
    sigma((V_d - E_d)/D) at the first spikes, within 4 s.e."""
    p, dt, per = BurstNeuron(), 0.5, 100
    v_d = torch.linspace(-80.0, -35.0, 10).repeat_interleave(per)[None]
    s = neurons.rest(p, torch.full_like(v_d, -60.0))
    gen = torch.Generator().manual_seed(0)
    first = second = expected = torch.zeros_like(v_d)
    drive = torch.full_like(v_d, 900.0)  # pA: the soma fires at tens of Hz
    for _ in range(4000):
        s = s._replace(v_d=v_d)
        u = torch.rand((2, *v_d.shape), generator=gen)
        s, f, b = neurons.step(s, p, dt, drive, torch.zeros_like(v_d), u[0], u[1])
        first, second = first + f, second + b
        expected = expected + f * torch.sigmoid((s.v_d - p.e_d) / p.slope_d)
    n = first.view(10, per).sum(1)
    frac = second.view(10, per).sum(1) / n
    expected = expected.view(10, per).sum(1) / n
    assert (expected[1:] > expected[:-1]).all() and expected[0] < 0.05 and expected[-1] > 0.9
    se = torch.sqrt(expected * (1 - expected) / n)
    assert n.min() > 1500
    assert ((frac - expected).abs() < 4 * se).all(), (frac, expected)


def test_burst_isi_and_refractoriness():
    p, dt = BurstNeuron(), 0.1
    s = neurons.rest(p, torch.full((1, 1), -49.0))
    spikes = []
    for t in range(400):  # u_burst = 0: always burst; u_isi = 0.5: n = floor(10 ms / dt)
        s, f, b = neurons.step(s, p, dt, torch.full((1, 1), 2000.0), torch.zeros(1, 1),
                               torch.zeros(1, 1), torch.full((1, 1), 0.5))  # fmt: skip
        if f.item() or b.item():
            spikes.append((t, "first" if f.item() else "second"))
    assert spikes[0] == (0, "first") and spikes[1] == (99, "second")  # ISI (n - 1) dt
    assert spikes[2] == (299, "first")  # 20 ms after the second spike


def test_raster_records_every_spike_of_the_watched_neurons():
    """`neurons.spiked` marks exactly the first and second spikes of a step; the recorder
    returns them as (time, neuron) pairs of replica 0; the 16-ms burst rule of the plots."""
    p, dt = BurstNeuron(), 0.5
    s = neurons.rest(p, torch.full((2, 40), -60.0))
    gen = torch.Generator().manual_seed(1)
    watched = torch.tensor([3, 17, 29])
    rec = raster.Recorder(watched, 2000, dt)
    expected = []
    for step in range(2000):
        u = torch.rand((2, 2, 40), generator=gen)
        s, f, b = neurons.step(s, p, dt, torch.full((2, 40), 900.0), torch.zeros(2, 40), *u)
        assert torch.equal(neurons.spiked(s, p, dt), (f + b) > 0)
        rec(neurons.spiked(s, p, dt))
        for j, k in enumerate(watched.tolist()):
            if f[0, k] + b[0, k] > 0:
                expected.append([(step + 1) * dt, j])
    assert len(expected) > 50 and rec.spikes() == expected
    train = [[0.0, 0], [10.0, 0], [50.0, 0], [100.0, 1], [110.0, 2], [120.0, 1], [130.0, 1]]
    assert raster.in_bursts(train).tolist() == [True, True, False, False, False, True, True]


def test_short_term_plasticity_reaches_closed_form_steady_state():
    dt = 1.0
    for tau_d, tau_f, big_u in ((20.0, 1000.0, 0.9), (100.0, 100.0, 0.02)):
        for rate in (10.0, 40.0):
            period = round(1000.0 / rate / dt)
            s = synapses.ShortTerm(torch.ones(1), torch.full((1,), 0.01))
            last = None
            for t in range(20000):
                spike = torch.tensor([1.0 if t % period == 0 else 0.0])
                s, eff = synapses.short_term_step(s, spike, dt, tau_d, tau_f, big_u)
                if spike.item():
                    last = eff.item()
            expected = synapses.short_term_steady(rate, tau_d, tau_f, big_u)
            assert last == pytest.approx(expected, rel=1e-4)


def test_event_burst_detection_follows_the_trace_rule():
    decay = math.exp(-1 / 16)  # dt = 1 ms
    d = neurons.detector((1, 1))
    kinds = []
    # 95: 20 ms after a burst's second spike the trace is 0.40 > 1/e (quirk 10); 130: event
    train = {0: 1, 10: 1, 12: 1, 60: 1, 75: 1, 95: 1, 130: 1}
    for t in range(140):
        x = torch.tensor([[float(train.get(t, 0))]])
        d, e, b = neurons.classify(d, x, decay)
        if x.item():
            kinds.append("event" if e.item() else "burst" if b.item() else "ignored")
    assert kinds == ["event", "burst", "ignored", "event", "burst", "ignored", "event"]


def test_plasticity_signs_of_figure_2():
    rule = protocols.ProtocolRule()
    trains = protocols.periodic_pairing([5.0, 100.0])
    dw = protocols.weight_change(trains, trains, rule, 5.0, 0.15)
    assert dw[0] < 0 < dw[1]  # LTD at low, LTP at high pairing frequency (b)
    gen = torch.Generator().manual_seed(3)
    rates = torch.tensor([2.0, 50.0], dtype=torch.float64).repeat_interleave(5)
    pre = protocols.renewal(rates, 30.0, 0.002, gen)
    post = protocols.renewal(rates, 30.0, 0.002, gen)
    dw = protocols.weight_change(pre, post, rule, 5.0, 0.3).view(2, 5).mean(1)
    assert dw[0] < 0 < dw[1]  # sign set by the postsynaptic rate (c)
    gen = torch.Generator().manual_seed(2)
    p = torch.tensor([0.05, 0.45], dtype=torch.float64).repeat_interleave(5)
    pre, post = protocols.burst_trains(5.0, p, 60.0, gen), protocols.burst_trains(5.0, p, 60.0, gen)
    dw = protocols.weight_change(pre, post, rule, 5.0, 0.2).view(2, 5).mean(1)
    assert dw[0] < 0 < dw[1]  # potentiation iff burst probability exceeds P-bar = 0.2 (d)


def test_protocol_rule_by_hand():
    """One presynaptic event at 0, a postsynaptic event at 10 ms and its burst at 15 ms."""
    rule = protocols.ProtocolRule()
    inf = float("inf")
    pre = torch.tensor([[0.0, inf]], dtype=torch.float64)
    post = torch.tensor([[0.010, 0.015]], dtype=torch.float64)
    e0, p0 = 5.0, 0.2
    dw = protocols.weight_change(pre, post, rule, e0, p0).item()
    decay = math.exp(-0.010 / rule.alpha)
    e_bar = e0 * decay
    b_bar = e0 * p0 * decay
    expected = rule.eta * (-(b_bar / e_bar) * math.exp(-10 / 50) + math.exp(-15 / 50))
    assert dw == pytest.approx(expected, rel=1e-12)


def test_sparse_delivery_equals_dense_and_late_spikes_arrive_next_step():
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(3, 40, 7, generator=gen)
    spikes = (torch.rand(3, 40, generator=gen) < 0.3).float()
    sel = synapses.select(spikes, 4)
    late = synapses.select(sel.rest, 40)
    marked = torch.where(torch.rand(3, 40, 7, generator=gen) < 0.5, w, -1.0)  # -1: absent
    now, later = (synapses.deliver(s, [w, marked], [False, True]) for s in (sel, late))
    torch.testing.assert_close(now[0] + later[0], torch.bmm(spikes[:, None], w)[:, 0])
    dense = torch.bmm(spikes[:, None], marked.clamp(min=0))[:, 0]
    torch.testing.assert_close(now[1] + later[1], dense)
    compiled = torch.compile(synapses.deliver, dynamic=False)(sel, [w, marked], [False, True])
    for a, b in zip(compiled, now, strict=True):  # one term per slot when compiled
        torch.testing.assert_close(a, b)
    assert sel.value.sum() == 12 and late.value.sum() == spikes.sum() - 12


def test_selection_pads_with_the_lowest_silent_indices():
    """Fewer spikes than slots: every spike is selected, and the free slots take the
    lowest indices of the silent neurons (the same few weight rows at every step)."""
    spikes = torch.zeros(2, 10)
    spikes[0, [7, 2]] = torch.tensor([1.0, 2.0])
    spikes[1, 0] = 1.0
    sel = synapses.select(spikes, 4)
    assert sorted(sel.index[0].tolist()) == [0, 1, 2, 7]
    assert sorted(sel.index[1].tolist()) == [0, 1, 2, 3]
    assert torch.equal(sel.value.sum(1), torch.tensor([3.0, 1.0])) and sel.rest.sum() == 0
    x = torch.zeros(1, 6).index_fill(1, torch.tensor([4]), -0.5)
    signed = synapses.select_signed(x, 3)
    assert sorted(signed.index[0].tolist()) == [0, 1, 4] and signed.value.sum() == -0.5


def test_the_compiled_plastic_step_equals_eager():
    """The compiled teaching step as run_xor runs it (one graph, then the weights written
    in place) gives the eager step's weights and spikes (2 replicas, 300 steps of 1 ms
    with input and teacher on, some spikes and updates beyond the capacity)."""
    cfg = XorConfig(n=40, p=0.5, dt=1.0, seeds=(1, 2), spike_capacity=1)
    keys = xor_net.replica_keys(cfg.seeds, "cpu")
    c = xor_net.constants(cfg, "cpu")
    i_s = input_current((1, 1), cfg, 2, "cpu")
    i_d = torch.zeros_like(i_s)
    i_d[:, 4 * cfg.n :] = 800.0  # teacher on the output dendrites
    runs = []
    for step in (xor_net.step, xor_net.engine(compile=True).step):
        w = xor_net.build(cfg, keys)
        s = xor_net.initial_state(cfg, 2, "cpu")
        with torch.no_grad():
            for _ in range(300):
                s = step(s, w, c, i_s, i_d, keys, cfg, True)
        runs.append((w, s))
    (w_eager, s_eager), (w_comp, s_comp) = runs
    assert s_eager.late.sum() > 0 and s_eager.late_updates.sum() > 0
    assert (w_eager.ih != xor_net.build(cfg, keys).ih).any()
    for a, b in zip(torch.utils._pytree.tree_leaves((w_eager, s_eager)),
                    torch.utils._pytree.tree_leaves((w_comp, s_comp)), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)


def test_plasticity_updates_equal_dense_reference():
    rule = BurstRule()
    gen = torch.Generator().manual_seed(1)
    r, n_pre, n_post = 2, 12, 9
    mask = (torch.rand(r, n_pre, n_post, generator=gen) < 0.5).float()
    w = torch.where(mask > 0, 0.5, -1.0)  # -1 marks an absent synapse
    pre_tr = torch.rand(r, n_pre, generator=gen)
    events = (torch.rand(r, n_post, generator=gen) < 0.3).float()
    bursts = (torch.rand(r, n_post, generator=gen) < 0.2).float() * (1 - events)
    e_hat, b_hat = (
        30 * torch.rand(r, n_post, generator=gen),
        5 * torch.rand(r, n_post, generator=gen),
    )
    tr = plasticity.Traces(pre_tr, e_hat, b_hat, torch.ones(r, n_post))
    val = plasticity.valence(tr, events, bursts, rule)
    # dense reference, written from Eq. 1 and spiking.md 3 items 3-5
    e_rate = tr.events * 1000 / rule.tau_avg
    h = torch.where(e_rate > rule.e_max, -(e_rate - rule.e_max) / e_rate, 0.0)
    p_bar = torch.clamp(tr.bursts / tr.events, max=1.0)
    ref_val = events * (h - p_bar) + bursts * (1 + h)
    torch.testing.assert_close(val, ref_val)
    # rows (lower homeostasis) first, then columns (Eq. 1), each clipped; every row and
    # column is selected, so each weight gets both changes
    pre_events = (torch.rand(r, n_pre, generator=gen) < 0.4).float()
    rate = torch.tensor([[0.5, 3.0, 1.0, 0.0, 2.5, 1.9, 0.1, 4.0, 2.0]]).expand(r, -1)
    boost = 0.01 * pre_events[:, :, None] * (rule.e_min - rate).clamp(min=0)[:, None]
    ref = (0.5 + boost).clamp(0, rule.w_max)
    ref = (ref + 0.01 * pre_tr[:, :, None] * ref_val[:, None, :]).clamp(0, rule.w_max)
    ref = torch.where(mask > 0, ref, -1.0)
    pre, post = synapses.select(pre_events, n_pre), synapses.select_signed(val, n_post)
    _write_both_ways(w, plasticity.updates(pre, rate, post, pre_tr, 0.01, rule), rule)
    torch.testing.assert_close(w, ref)
    # one presynaptic event (row 3) and one postsynaptic valence (-2 at column 5): the rest
    # of the matrix is untouched, and the column sees the row's change where they cross
    w0 = w.clone()
    one_pre = synapses.select(torch.zeros(r, n_pre).index_fill(1, torch.tensor([3]), 1.0), 1)
    v = torch.zeros(r, n_post).index_fill(1, torch.tensor([5]), -2.0)
    u = plasticity.updates(one_pre, rate, synapses.select_signed(v, 1), pre_tr, 0.01, rule)
    _write_both_ways(w, u, rule)
    ref = w0.clone()
    ref[:, 3] = (w0[:, 3] + 0.01 * (rule.e_min - rate).clamp(min=0)).clamp(0, rule.w_max)
    ref[:, :, 5] = (ref[:, :, 5] - 0.02 * pre_tr).clamp(0, rule.w_max)
    torch.testing.assert_close(w, torch.where(w0 < 0, -1.0, ref))
    assert (w != w0)[:, 3].any() and (w != w0)[:, :, 5].any()  # both changes happened


def _write_both_ways(w: torch.Tensor, u: plasticity.Writes, rule: BurstRule) -> None:
    """`plasticity.write` over the nonzero slots only (a CPU's default) and over every
    slot (fixed shapes, elsewhere): the same weights bit for bit, written into w."""
    every = w.clone()
    plasticity.write(every, u, rule, compact=False)
    plasticity.write(w, u, rule)
    assert torch.equal(w, every)


def test_teacher_and_cost_follow_the_code():
    cfg = XorConfig()
    rate = torch.tensor([[1.0, 2.5, 4.0, 8.0, 9.5, 12.0]])
    to_zero = torch.tensor([[0.0, 0.0, -1000 / 6, -500.0, -1000.0, -1000.0]])
    to_one = torch.tensor([[1000.0, 1000.0, 500.0, 1000 / 6, 0.0, 0.0]])
    torch.testing.assert_close(teacher(rate, 0, cfg), to_zero)
    torch.testing.assert_close(teacher(rate, 1, cfg), to_one)
    assert cost(torch.full((1, 5), 8.0), 1, cfg).item() == pytest.approx(-math.log(0.75))
    assert cost(torch.full((1, 5), 1.0), 0, cfg).item() == pytest.approx(-math.log(0.99))


def _tiny(**kw) -> XorConfig:
    base = dict(n=40, dt=1.0, example=200.0, examples=4, burn_in=100.0, checkpoint_every=2,
                compile=False, seeds=(1, 2, 3), bin=50.0, spike_capacity=1)  # fmt: skip
    return XorConfig(**{**base, **kw})


def _simulate(cfg: XorConfig, steps: int, plastic: bool) -> list[torch.Tensor]:
    keys = xor_net.replica_keys(cfg.seeds, "cpu")
    w, c = xor_net.build(cfg, keys), xor_net.constants(cfg, "cpu")
    s = xor_net.initial_state(cfg, len(cfg.seeds), "cpu")
    i_s = torch.zeros(len(cfg.seeds), 5 * cfg.n)
    i_s[:, : cfg.n] = cfg.i_on
    trace = []
    for _ in range(steps):
        s = xor_net.step(s, w, c, i_s, torch.zeros_like(i_s), keys, cfg, plastic)
        trace.append(s.counts.clone())
    return [torch.stack(trace), w.ih, s.neurons.v_s, s.late]


def test_same_seed_same_spikes_and_replicas_batched_equal_alone():
    cfg = _tiny()
    a = _simulate(cfg, 150, plastic=True)
    b = _simulate(cfg, 150, plastic=True)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert a[0][:, :, 0].sum() > 100  # the network spikes
    assert a[3].sum() > 0  # and some spikes waited for capacity (delivery still exact)
    alone = _simulate(replace(cfg, seeds=(2,)), 150, plastic=True)
    for x, y in zip(a, alone, strict=True):
        torch.testing.assert_close(x[..., 1:2, :, :] if x.dim() == 4 else x[1:2], y,
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    assert torch.equal(a[0][:, 1:2], alone[0])  # identical spike counts


def test_xor_run_resumes_exactly(tmp_path):
    cfg = _tiny()
    full = run_xor(cfg, tmp_path / "full")
    part = run_xor(cfg, tmp_path / "part", stop_after=2)
    assert part is None
    resumed = run_xor(cfg, tmp_path / "part", resume=True)
    assert resumed["post_test"] == full["post_test"]
    assert resumed["late_spikes"] == full["late_spikes"]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["weights"]["ih"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["weights"]["ih"]
    assert torch.equal(a, b) and (a[a >= 0] != cfg.w_ff).any()  # learned, identically


def test_background_is_at_most_one_spike_per_step_as_the_paper_code_delivers_it():
    """Bernoulli(rate dt) per neuron and step (Auryn's PoissonGroup); the Poisson option
    has the same mean and its variance rate dt (counts above one)."""
    u = uniform(mix(torch.arange(4)), 200_000)
    mean = torch.full_like(u, 0.3)
    one = synapses.background_spikes(u, mean, "bernoulli")
    counts = synapses.background_spikes(u, mean, "poisson")
    assert one.max() == 1 and abs(one.mean().item() - 0.3) < 3e-3
    assert abs(one.var().item() - 0.21) < 3e-3  # p (1 - p)
    assert counts.max() > 1 and abs(counts.mean().item() - 0.3) < 3e-3
    assert abs(counts.var().item() - 0.3) < 5e-3
    assert XorConfig().background == "bernoulli" and MultiplexConfig().background == "bernoulli"
    with pytest.raises(ApicalError, match="unknown background 'gauss'; use one of bernoulli"):
        XorConfig(background="gauss")


def test_bad_spiking_options_are_one_line():
    with pytest.raises(
        ApicalError, match="unknown config key tau; known keys: background, bg_hidden"
    ):
        configured(XorConfig(), {"tau": 1.0})
    with pytest.raises(ApicalError, match="coarser than 1 ms"):
        XorConfig(dt=2.0)
    with pytest.raises(ApicalError, match=r"w_ff = 1.5 lies outside \[0, rule.w_max = 1.0\]"):
        XorConfig(w_ff=1.5)
    assert configured(XorConfig(), {"rule.tau_avg": 500.0}).rule.tau_avg == 500.0
    with pytest.raises(ApicalError, match=r"neuron\.currents must be one of integrated, after-"):
        configured(XorConfig(), {"neuron.currents": "late"})


def test_reproduce_spiking_commands(tmp_path):
    from tests.test_cli import apical

    r = apical("reproduce", "spiking-plasticity", "--preset", "tiny", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    b = next(line for line in r.stdout.splitlines() if line.startswith("b (pairings)"))
    assert 62.5 < float(b.split("LTP from ")[1].split(" Hz")[0]) <= 100  # NN Fig. 2b
    assert (tmp_path / "spiking-plasticity-tiny" / "plasticity" / "figure2.png").read_bytes()[
        :4
    ] == b"\x89PNG"
    r = apical("reproduce", "spiking-xor", "--preset", "tiny", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()
            if line[:4].strip() in ("1", "2") and len(line.split()) == 6]  # fmt: skip
    assert len(rows) == 2 and all(0 < float(x) < 100 for row in rows for x in row[1:5])
    assert (tmp_path / "spiking-xor-tiny" / "xor" / "xor.png").read_bytes()[:4] == b"\x89PNG"
    r = apical("reproduce", "spiking-xor", "--preset", "tiny", "--out", str(tmp_path))
    assert r.returncode == 2 and "already holds a run; add --resume" in r.stderr
    r = apical("reproduce", "spiking-xor", "--preset", "tiny", "--out", str(tmp_path), "--resume")
    assert r.returncode == 0 and "solved" in r.stdout, r.stderr
    r = apical("reproduce", "spiking-xor", "--preset", "nope", "--out", str(tmp_path))
    presets = "presets: cpu, cpu-dt0.1, cpu-4s, paper-seed-1, tiny"
    assert r.returncode != 0 and r.stderr.strip().endswith(presets)
    r = apical("reproduce", "spiking-xor", "--epochs", "3", "--out", str(tmp_path))
    assert r.returncode != 0 and r.stderr.strip().startswith("error: --epochs does not apply")
    assert "Traceback" not in r.stderr


def test_multiplexing_rates_follow_their_inputs(tmp_path):
    """NN Fig. 3 on a small network (200 neurons per population, 2 seeds, 1 s after the
    burn-in): each of the four signals correlates with its reference."""
    from tests.test_cli import apical

    r = apical("reproduce", "spiking-multiplexing", "--preset", "tiny", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "spiking-multiplexing-tiny" / "multiplexing"
    res = json.loads((folder / "summary.json").read_text())
    corr = {k: v["mean"] for k, v in res["0.25"]["correlations"].items()}
    assert corr["pyr2 BP ~ I_d"] > 0.7 and corr["pyr1 ER ~ I_s"] > 0.7
    assert corr["pyr2 ER ~ pyr1 ER"] > 0.5 and corr["pyr1 BP ~ pyr2 BR"] > 0.3
    er = torch.tensor(res["0.25"]["er"])
    assert 1 < er.mean() < 20  # Hz, the figure's range


def test_a_teacher_pushing_the_output_up_potentiates_and_one_pushing_it_down_depresses():
    """The learning signal of NN Fig. 4 in the whole network: from the same state and
    random draws, a teaching window with the output's dendrites driven up (+I_0, the
    teacher of a target 1) moves the hidden->output weights up (bursts above their moving
    average), one driven down (-I_0, target 0) moves them down. The 30-s rate estimate
    starts at 5 Hz, inside [e_min, e_max], so the homeostatic terms stay off; tau_avg is
    0.2 s so that the burn-in (3 tau_avg, as in the protocol) sets the moving averages."""
    cfg = _tiny(n=100, spike_capacity=None)
    cfg = replace(cfg, rule=replace(cfg.rule, rate0=5.0, tau_avg=200.0))
    keys, r = xor_net.replica_keys(cfg.seeds, "cpu"), len(cfg.seeds)
    w0, c = xor_net.build(cfg, keys), xor_net.constants(cfg, "cpu")
    i_s = input_current((1, 0), cfg, r, "cpu")
    zero = torch.zeros_like(i_s)
    s0 = xor_net.initial_state(cfg, r, "cpu")
    for _ in range(600):
        s0 = xor_net.step(s0, w0, c, i_s, zero, keys, cfg, False)
    change = {}
    for sign in (1.0, -1.0):
        w = xor_net.Weights(*(m.clone() for m in w0))
        i_d = zero.clone()
        i_d[:, 4 * cfg.n :] = sign * cfg.teacher_max
        s = s0
        for _ in range(200):
            s = xor_net.step(s, w, c, i_s, i_d, keys, cfg, True)
        present = w0.ho >= 0
        change[sign] = ((w.ho - w0.ho) * present).sum((1, 2)) / present.sum((1, 2))
    assert (change[1.0] > 0).all() and (change[-1.0] < 0).all(), change


def test_isolated_population_batched_equals_alone_and_fires_at_its_operating_point():
    """The population the simulators are compared on (`apical.spiking.population`): R
    seeds batched give each seed's counts of a run alone (keyed draws), and with the
    side-by-side benchmark's currents the event rate and burst probability lie where
    Brian2 puts the same model (3.5 Hz, 0.31 at N = 1,000 over 1 s, within sampling)."""
    cfg = population.PopulationConfig(n=400, i_s=200.0, i_d=300.0)
    both = population.simulate(cfg, (1, 2), 0.5, compile=False, warm=0)
    alone = population.simulate(cfg, (2,), 0.5, compile=False, warm=0)
    assert both["event_rate_hz"][1] == alone["event_rate_hz"][0]
    assert both["burst_probability"][1] == alone["burst_probability"][0]
    assert both["event_rate_hz"][0] != both["event_rate_hz"][1]  # seeds differ
    rate = sum(both["event_rate_hz"]) / 2
    assert 2.5 < rate < 4.5, rate
    assert 0.2 < sum(both["burst_probability"]) / 2 < 0.42


def test_integrated_currents_follow_the_membrane_equation_exactly_at_coarse_dt():
    """With `currents = "integrated"` the exponential step solves C dV/dt = -g_L (V - E_L)
    + I exactly: V(t) = E_L + (I tau / C)(1 - e^(-t/tau)) at dt = 1 ms, soma and dendrite
    (no synaptic input, no spikes, adaptation off); the default order (the current after
    the threshold check) lags it by a fraction of a step."""
    p = BurstNeuron(currents="integrated", theta0=1e3, b_w=0.0, a_w=0.0)
    i_s, i_d = torch.full((1, 1), 150.0, dtype=torch.float64), torch.full((1, 1), 80.0).double()
    u = torch.ones(1, 1, dtype=torch.float64)
    s = neurons.rest(p, torch.full((1, 1), p.e_l, dtype=torch.float64))
    lag = neurons.rest(replace(p, currents="after-threshold"), s.v_s.clone())
    for _ in range(40):
        s, *_ = neurons.step(s, p, 1.0, i_s, i_d, u, u)
        lag, *_ = neurons.step(lag, replace(p, currents="after-threshold"), 1.0, i_s, i_d, u, u)
    t = 40.0
    v_s = p.e_l + 150.0 * p.tau_s / p.c_s * (1 - math.exp(-t / p.tau_s))
    v_d = p.e_l + 80.0 * p.tau_d / p.c_d * (1 - math.exp(-t / p.tau_d))
    assert s.v_s.item() == pytest.approx(v_s, abs=1e-9)
    assert s.v_d.item() == pytest.approx(v_d, abs=1e-9)
    assert abs(lag.v_d.item() - v_d) > 0.05  # the default's lag at dt = 1 ms


def test_the_dt_check_script_reports_each_setting_against_the_paper_codes_step():
    """`scripts/burst_neuron_dt_check.py` (tiny): every drive has each setting's rate and
    burst probability, and the differences are those numbers' (relative rate, absolute
    probability); bad input is one line."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "burst_neuron_dt_check.py"
    args = ["--n", "60", "--seconds", "0.2", "--seeds", "1", "--somatic", "200",
            "--dendritic", "400", "--json"]  # fmt: skip
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    grid = json.loads(r.stdout)["grid"]
    assert list(grid) == ["I_s 200 pA, I_d 400 pA"]
    for row in grid.values():
        fine = row["dt 0.1 ms (paper code)"]
        assert fine["er"] > 0
        for name, d in row["differences"].items():
            assert d["er_relative"] == pytest.approx(row[name]["er"] / fine["er"] - 1)
            assert d["bp"] == pytest.approx(row[name]["bp"] - fine["bp"])
    bad = subprocess.run([sys.executable, str(script), "--seeds", "x"], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().endswith("'x' is not a number")
    assert "Traceback" not in bad.stderr


def _mix_reference(x: int) -> int:
    """Wellons' 32-bit finaliser in Python integers (exact, no overflow)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x31848BAB) & 0xFFFFFFFF
    return x ^ (x >> 16)


@pytest.mark.parametrize("compiled", [False, True])
def test_the_int32_hash_equals_exact_integer_arithmetic(compiled):
    """`mix` and `uniform` hash in int32 (wrapping multiplies, masked shifts): the values
    of the finaliser in exact integers, for keys across [0, 2^32) (both halves of int32),
    eager and compiled, on sizes off the vector width (the kernels' scalar tails)."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1]),
                   torch.randint(0, 2**32, (1003,), generator=g)])  # fmt: skip
    keys = x[:3]
    mix_, uniform_ = (torch.compile(mix), torch.compile(uniform)) if compiled else (mix, uniform)
    assert mix_(x).tolist() == [_mix_reference(v) for v in x.tolist()]
    salt = [_mix_reference((i * 0x9E3779B9) & 0xFFFFFFFF) for i in range(37)]
    bits = torch.tensor([[_mix_reference(k ^ s) >> 8 for s in salt] for k in keys.tolist()])
    want = bits.float() * (1.0 / 2**24) + 2.0**-25  # (bits + 1/2) / 2^24 in float32
    assert torch.equal(uniform_(keys, salts(37)), want)


def test_precomputed_salts_give_the_same_draws():
    keys = step_keys(mix(torch.tensor([3, 4])), 1, torch.tensor(17))
    assert torch.equal(uniform(keys, salts(1000)), uniform(keys, 1000))


def test_many_steps_in_one_compiled_call_equal_the_compiled_step_bit_for_bit():
    """`compile_loop` (a while loop over the step graph, C++ wrapper) and `compile_step`
    called once per step give the same state to the last bit on the XOR network (2
    replicas, 300 steps of 1 ms with input on: spikes, delivery, late spikes), and
    `run_segment` bins what a per-step loop bins."""
    cfg = XorConfig(n=40, p=0.5, dt=1.0, seeds=(1, 2), spike_capacity=1)
    keys = xor_net.replica_keys(cfg.seeds, "cpu")
    w, c = xor_net.build(cfg, keys), xor_net.constants(cfg, "cpu")
    i_s = input_current((1, 1), cfg, 2, "cpu")
    args = (w, c, i_s, torch.zeros_like(i_s), keys, cfg, False)
    s0 = xor_net.initial_state(cfg, 2, "cpu")
    step = compile_step(xor_net.step)
    with torch.no_grad():
        looped = compile_loop(xor_net.step)(s0, 300, *args)
        s = s0
        for _ in range(300):
            s = step(s, *args)
        assert s.counts.sum() > 0 and s.late.sum() > 0  # spikes, some a step late
        for a, b in zip(torch.utils._pytree.tree_leaves(looped),
                        torch.utils._pytree.tree_leaves(s), strict=True):  # fmt: skip
            assert torch.equal(a, b)
        engine = xor_net.engine(compile=False)
        _, bins = run_segment(s0, args[:-1], engine, 250, False, 100)
        s, ref = s0, []
        for t in range(250):
            s = xor_net.step(s, *args)
            if (t + 1) % 100 == 0 or t == 249:
                ref.append(s.counts / (cfg.n * ((t % 100) + 1) * cfg.dt / 1000.0))
                s = s._replace(counts=torch.zeros_like(s.counts))
    assert len(bins) == 3 and all(torch.equal(a, b) for a, b in zip(bins, ref, strict=True))
