"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017): the penalty's gradient against
autograd, the importance update (Eq. 5) by hand, the path integral against the loss it
accounts for, and the trainer's chain of tasks (importances carried by init_from,
checkpointed, and forgetting reduced)."""

from __future__ import annotations

import pytest
import torch

from apical import synaptic_intelligence as si
from apical.active_dendrites import DendriticLayer
from apical.errors import ApicalError
from apical.optim import SparseRowsAdam
from apical.run_folder import RunFolder
from apical.train import TrainConfig, train
from tests.test_continual import _chain


def test_the_penalty_gradient_is_the_gradient_of_eq_4():
    torch.manual_seed(0)
    theta = {"w": torch.randn(3, 4, requires_grad=True), "b": torch.randn(4, requires_grad=True)}
    state = si.SynapticState(
        importance={k: torch.rand_like(v) for k, v in theta.items()},
        anchor={k: torch.randn_like(v) for k, v in theta.items()},
        path={k: torch.zeros_like(v) for k, v in theta.items()},
    )
    c = 0.7
    surrogate = c * sum((state.importance[k] * (state.anchor[k] - theta[k]).square()).sum()
                        for k in theta)  # fmt: skip
    want = torch.autograd.grad(surrogate, list(theta.values()))
    got = si.penalty_gradient(state, theta, c)
    for k, g in zip(theta, want, strict=True):
        torch.testing.assert_close(got[k], g, rtol=1e-6, atol=1e-7)


def test_the_importance_of_a_task_is_its_path_over_its_squared_change_plus_damping():
    start = {"w": torch.tensor([1.0, 2.0, 3.0])}
    state = si.first_task(start)
    assert torch.equal(state.importance["w"], torch.zeros(3))
    state.path["w"].copy_(torch.tensor([0.5, 0.0, 2.0]))
    end = {"w": torch.tensor([2.0, 2.0, 1.0])}  # changes 1, 0, -2
    after = si.next_task(state, end, damping=0.1)
    torch.testing.assert_close(after.importance["w"], torch.tensor([0.5 / 1.1, 0.0, 2.0 / 4.1]))
    assert torch.equal(after.anchor["w"], end["w"]) and torch.equal(after.path["w"], torch.zeros(3))
    after.path["w"].fill_(1.0)  # a second task adds to the first's importance
    again = si.next_task(after, {"w": torch.tensor([2.0, 3.0, 1.0])}, damping=0.1)
    torch.testing.assert_close(
        again.importance["w"], torch.tensor([0.5 / 1.1 + 10.0, 1 / 1.1, 2.0 / 4.1 + 10.0])
    )


def test_the_path_integral_accounts_for_the_drop_in_loss():
    # small gradient steps on a quadratic: sum_k omega_k = L(start) - L(end) (Zenke Eq. 2-3)
    torch.manual_seed(1)
    a = torch.randn(6, 6)
    h = a @ a.T / 6 + torch.eye(6)
    theta = {"w": torch.randn(6, requires_grad=True)}

    def loss():
        return 0.5 * theta["w"] @ h @ theta["w"]

    state = si.first_task(theta)
    start = float(loss())
    for _ in range(400):
        (g,) = torch.autograd.grad(loss(), theta["w"])
        before = {"w": theta["w"].detach().clone()}
        with torch.no_grad():
            theta["w"] -= 0.002 * g
        si.add_path_(state, {"w": g}, before, theta)
    drop = start - float(loss())
    assert drop > 0.5 * start
    assert abs(float(state.path["w"].sum()) - drop) < 0.01 * drop


def test_si_carries_importances_from_task_to_task_and_keeps_the_first_task(tmp_path):
    mlp = {"dendrites": False, "kwta": False, "sparsity": 0}
    plain, plain_first = _chain(tmp_path, "plain", mlp)
    kept, kept_first = _chain(tmp_path, "si", mlp, si_strength=10.0)
    assert kept[0] == plain[0]  # the first task has no penalty: the same run
    # task 0 after tasks 1 and 2, MLP without and with SI (c = 10): measured 55.0 / 84.4 %
    # (seeds 1, 2: see test_continual's notes)
    assert kept_first - plain_first > 0.15, (plain_first, kept_first)
    record = RunFolder(tmp_path / "si" / "task-2").checkpoint()["si"]
    assert all(float(v.min()) >= -1e-3 for v in record["importance"].values())
    assert sum(float(v.sum()) for v in record["importance"].values()) > 0
    # a run with SI cannot start from one trained without it (its importances are unknown)
    config = TrainConfig(dataset="digits", val_size=0.2, task=1, model="active_dendrites",
                         model_options={"hidden": [512, 512], "context_size": 64, **mlp},
                         init_from=str(tmp_path / "plain" / "task-1"), si_strength=1.0,
                         epochs=1, device="cpu", probe_every=0)  # fmt: skip
    with pytest.raises(ApicalError, match="trained without Synaptic Intelligence"):
        train(config, progress=False)


def test_a_task_with_si_resumes_exactly_with_its_importances(tmp_path):
    def config(run_dir, task, epochs=3, init_from=None):
        return TrainConfig(dataset="digits", val_size=0.2, task=task, init_from=init_from,
                           model="active_dendrites", si_strength=1.0,
                           model_options={"hidden": [32, 32], "context_size": 64, "segments": 2},
                           optimizer="adam", lr=1e-3, batch_size=64, epochs=epochs,
                           probe_every=0, device="cpu", run_dir=str(run_dir))  # fmt: skip

    train(config(tmp_path / "task-1", 0), progress=False)
    first = str(tmp_path / "task-1")
    full = train(config(tmp_path / "full", 1, init_from=first), progress=False)
    train(config(tmp_path / "cut", 1, epochs=1, init_from=first), progress=False)
    resumed = train(config(tmp_path / "cut", 1, init_from=first), resume=True, progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = [RunFolder(tmp_path / f).checkpoint()["si"] for f in ("full", "cut")]
    for part in ("importance", "anchor", "path"):
        assert all(torch.equal(saved[0][part][k], saved[1][part][k]) for k in saved[0][part])
    assert any(float(v.abs().sum()) > 0 for v in saved[0]["path"].values())


def test_with_penalty_adds_the_penalty_gradient_to_dense_and_sparse_directions():
    torch.manual_seed(3)
    theta = {"w": torch.randn(5, 3)}
    state = si.SynapticState({"w": torch.rand(5, 3)}, {"w": torch.randn(5, 3)},
                             {"w": torch.zeros(5, 3)})  # fmt: skip
    penalty = si.penalty_gradient(state, theta, 0.3)["w"]
    dense = torch.randn(5, 3)
    torch.testing.assert_close(si.with_penalty(state, "w", theta["w"], dense, 0.3), dense + penalty)
    sparse = torch.sparse_coo_tensor(torch.tensor([[4, 1, 4]]), torch.randn(3, 3), (5, 3))
    # every row has moved (theta differs from the anchor everywhere): all rows, sparse
    got = si.with_penalty(state, "w", theta["w"], sparse, 0.3)
    assert got.is_sparse and got.coalesce().indices()[0].tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(got.to_dense(), sparse.to_dense() + penalty)
    # the path of a sparse direction: only its rows, as with the direction made dense
    before, after = {"w": torch.randn(5, 3)}, {"w": torch.randn(5, 3)}
    sparse_path, dense_path = si.first_task(theta), si.first_task(theta)
    rows = si.before_step({"w": sparse}, before)["w"]  # the sparse direction's rows only
    assert torch.equal(rows, before["w"][[1, 4]])
    si.add_path_(sparse_path, {"w": sparse}, {"w": rows}, after)
    si.add_path_(dense_path, {"w": sparse.to_dense()}, {"w": before["w"].clone()}, after)
    torch.testing.assert_close(sparse_path.path["w"], dense_path.path["w"])


def test_si_on_sparse_segment_rows_equals_the_dense_penalty_under_adam():
    # the second task of a dendritic layer whose segments moved in the first: the penalty
    # on the rows that moved (sparse, lazy Adam) against the dense penalty and dense Adam
    torch.manual_seed(7)
    x, context = torch.randn(16, 6, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    results = []
    for sparse in (True, False):
        torch.manual_seed(8)
        layer = DendriticLayer(6, 8, context_size=5, segments=3, density=0.5, sparsity=0.0,
                               mode="absmax", sparse_segments=sparse).double()  # fmt: skip
        params = dict(layer.named_parameters())
        state = si.first_task(params)
        with torch.no_grad():  # "task 1": some segments and weights moved, with a path
            layer.segments[:10].add_(torch.randn(10, 5, dtype=torch.float64))
            layer.linear.weight.add_(0.1)
        for k in params:
            state.path[k].copy_(torch.rand_like(params[k]))
        state = si.next_task(state, params, damping=0.1)
        opt = SparseRowsAdam(layer.parameters(), lr=0.05, fused=True)
        for _ in range(5):
            opt.zero_grad()
            layer(x, context.expand(16, 5)).sin().sum().backward()
            task = {k: p.grad for k, p in params.items()}
            for k, p in params.items():
                p.grad = si.with_penalty(state, k, p, task[k], 3.0)
            assert p.grad.is_sparse == (sparse and k == "segments")
            before = si.before_step(task, params)
            opt.step()
            si.add_path_(state, task, before, params)
        results.append((layer, state))
    (a, sa), (b, sb) = results
    assert int(sa.moved["segments"].sum()) < len(a.segments)  # rows that never moved: skipped
    for k, p in a.named_parameters():
        torch.testing.assert_close(p, dict(b.named_parameters())[k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sa.path[k], sb.path[k], rtol=1e-12, atol=1e-12)
