"""SparseRowsAdam: torch's Adam on dense gradients and on rows given as a sparse gradient
(active-dendrite segments), against torch.optim.Adam / AdamW on the same gradients made dense."""

from __future__ import annotations

import copy

import pytest
import torch

from apical.optim import SparseRowsAdam
from apical.train import clip_grads


def _rows_grad(values: torch.Tensor, rows: list[int], n: int) -> torch.Tensor:
    """A (n, C) gradient with `values` on `rows` (repeats summed), as a sparse COO tensor."""
    index = torch.tensor([rows])
    return torch.sparse_coo_tensor(index, values, (n, values.shape[1]), check_invariants=True)


@pytest.mark.parametrize("decay", [0.0, 0.1])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_rows_with_a_gradient_every_step_move_as_under_dense_adam(decay, decoupled, fused):
    torch.manual_seed(0)
    p0 = torch.randn(6, 4, dtype=torch.float64)
    ours, dense = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    w0 = torch.randn(3, dtype=torch.float64)
    ours_w, dense_w = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    options = dict(lr=0.01, weight_decay=decay, decoupled_weight_decay=decoupled)
    opt = SparseRowsAdam([ours, ours_w], fused=fused, **options)
    ref = torch.optim.Adam([dense, dense_w], **options)
    for _ in range(7):
        values = torch.randn(3, 4, dtype=torch.float64)
        g = _rows_grad(values, [1, 4, 1], 6)  # row 1 twice: summed; rows 0, 2, 3, 5 never
        gw = torch.randn(3, dtype=torch.float64)
        ours.grad, ours_w.grad = g, gw.clone()
        dense.grad, dense_w.grad = g.to_dense(), gw.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(ours_w, dense_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[[1, 4]], dense[[1, 4]], rtol=1e-12, atol=1e-12)
    never = [0, 2, 3, 5]  # unchanged; dense Adam leaves them too unless it decays them
    assert torch.equal(ours.detach()[never], p0[never])
    if not decay:
        assert torch.equal(dense.detach()[never], p0[never])


def test_a_row_that_stops_receiving_a_gradient_stops_and_state_dicts_round_trip():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = SparseRowsAdam([p], lr=0.1, fused=True)
    p.grad = _rows_grad(torch.randn(2, 3), [0, 2], 4)
    opt.step()
    kept = p.detach()[2].clone()
    p.grad = _rows_grad(torch.randn(1, 3), [0], 4)  # row 2 has no gradient now
    opt.step()
    assert torch.equal(p.detach()[2], kept)  # lazy: dense Adam would move it by momentum
    # save and restore into a fresh optimizer: the next step is the same
    twin = torch.nn.Parameter(p.detach().clone())
    restored = SparseRowsAdam([twin], lr=0.1, fused=True)
    restored.load_state_dict(copy.deepcopy(opt.state_dict()))
    g = _rows_grad(torch.randn(2, 3), [1, 2], 4)
    p.grad, twin.grad = g, g.clone()
    opt.step()
    restored.step()
    assert torch.equal(p, twin)
    assert float(opt.state[p]["step"]) == 3


def test_clipping_counts_sparse_rows_as_their_dense_gradient():
    torch.manual_seed(2)
    sparse_model, dense_model = torch.nn.Linear(3, 5), torch.nn.Linear(3, 5)
    dense_model.load_state_dict(sparse_model.state_dict())
    g = _rows_grad(10 * torch.randn(2, 3), [1, 3], 5)
    sparse_model.weight.grad, dense_model.weight.grad = g, g.to_dense()
    b = torch.randn(5)
    sparse_model.bias.grad, dense_model.bias.grad = b.clone(), b.clone()
    clip_grads(sparse_model, 1.0)
    clip_grads(dense_model, 1.0)
    assert sparse_model.weight.grad.is_sparse
    torch.testing.assert_close(sparse_model.weight.grad.to_dense(), dense_model.weight.grad)
    torch.testing.assert_close(sparse_model.bias.grad, dense_model.bias.grad)
    total = torch.cat([dense_model.weight.grad.flatten(), dense_model.bias.grad]).norm()
    assert abs(float(total) - 1.0) < 1e-5
