"""Continual learning on permuted digits (apical.continual): task datasets and their
contexts, prototype selection, runs that start from the task before, and the claim of
Iyer et al. 2022 in small: the active-dendrites network forgets less than an MLP."""

from __future__ import annotations

import pytest
import torch

from apical.continual import context_accuracy, permutation, task_data
from apical.data import load_dataset
from apical.errors import ApicalError
from apical.run_folder import RunFolder
from apical.train import TrainConfig, Trainer, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, val_size=0.2, seed=0)


def test_a_task_dataset_holds_its_permuted_images_and_contexts(digits):
    data = task_data(digits, 2, seed=0)
    n = 64
    order = permutation(2, n, 0)
    images = digits.x_train.reshape(-1, n)
    assert torch.equal(data.x_train[:, :n], images[:, order])
    prototype = images.mean(0)[order]
    assert torch.equal(data.x_train[:, n:], prototype.expand(len(images), n))
    # validation and test: every task seen so far (0, 1, 2), labels repeated
    assert data.x_test.shape == (3 * len(digits.x_test), 2 * n)
    assert torch.equal(data.y_test, digits.y_test.repeat(3))
    first = digits.x_test.reshape(-1, n)[:, permutation(0, n, 0)]
    assert torch.equal(data.x_test[: len(first), :n], first)
    assert len({tuple(permutation(t, n, 0).tolist()) for t in range(5)}) == 5


def test_task_rows_index_like_the_tensor_they_stand_for(digits):
    data = task_data(digits, 3, seed=1)
    rows = data.x_val
    whole = rows[:]  # every row made at once: the tensor the view stands for
    assert whole.shape == rows.shape == (4 * len(digits.x_val), 128) and len(rows) == len(whole)
    n = len(digits.x_val)
    for t in range(4):  # task t's block: its permutation, each image with its nearest context
        images = digits.x_val.reshape(n, 64)[:, permutation(t, 64, 1)]
        assert torch.equal(whole[t * n : (t + 1) * n, :64], images)
    picks = torch.tensor([0, n - 1, n, 3 * n + 5, len(rows) - 1])
    assert torch.equal(rows[picks], whole[picks])
    prototypes = torch.stack([digits.x_train.reshape(-1, 64).mean(0)[permutation(t, 64, 1)]
                              for t in range(4)])  # fmt: skip
    for row in whole[picks]:  # the context is the prototype nearest to the image
        nearest = (prototypes - row[:64]).norm(dim=1).argmin()
        assert torch.equal(row[64:], prototypes[nearest])
    assert torch.equal(rows[n - 3 : 2 * n + 4 : 2], whole[n - 3 : 2 * n + 4 : 2])
    assert torch.equal(rows[7], whole[7]) and torch.equal(rows[:5, 64:], whole[:5, 64:])
    assert torch.equal(rows.to("cpu")[-9:], whole[-9:])


def test_the_nearest_prototype_picks_the_task_of_held_out_images(digits):
    # test images were never used for the prototypes (means of training images)
    assert context_accuracy(digits, 9, seed=0) >= 0.99
    mnist = load_dataset("mnist", None, val_size=10000, seed=0)
    assert context_accuracy(mnist, 9, seed=0) >= 0.999


def _chain(
    tmp_path, label: str, options: dict, tasks: int = 3, **fields
) -> tuple[list[float], float]:
    """Train tasks 0..tasks-1 in turn (TrainConfig `fields` added); the mean test accuracy
    over the tasks seen after each task, and the final model's accuracy on task 0."""
    before, means = None, []
    for t in range(tasks):
        config = TrainConfig(
            dataset="digits", val_size=0.2, task=t, init_from=before, model="active_dendrites",
            model_options={"hidden": [512, 512], "context_size": 64, "segments": 3, **options},
            optimizer="adam", lr=1e-3, batch_size=32, epochs=20, probe_every=0, device="cpu",
            run_dir=str(tmp_path / label / f"task-{t + 1}"), **fields,
        )  # fmt: skip
        run = train(config, progress=False)
        before = config.run_dir
        means.append(run.history[-1]["test_accuracy"])
    first = task_data(load_dataset("digits", None, val_size=0.2, seed=0), 0, seed=0)
    with torch.no_grad():
        kept = (run.model(first.x_test[:]).argmax(1) == first.y_test).float().mean()
    return means, float(kept)


def test_active_dendrites_forget_less_than_an_mlp(tmp_path):
    active, active_first = _chain(tmp_path, "active", {})
    mlp, mlp_first = _chain(tmp_path, "mlp", {"dendrites": False, "kwta": False, "sparsity": 0})
    assert min(active[0], mlp[0]) > 0.9  # both learn the first task
    # task 0 after tasks 1 and 2: measured 68.9 % against 55.0 % (seeds 1, 2: 72.5 / 56.7,
    # 58.3 / 44.4)
    assert active_first - mlp_first > 0.08, (active_first, mlp_first)
    assert active[-1] > mlp[-1]


def test_init_from_needs_a_finished_run_of_the_same_model(tmp_path):
    base = dict(dataset="xor", epochs=2, batch_size=4, probe_every=0, device="cpu")
    with pytest.raises(ApicalError, match=r"init_from .* holds no finished run"):
        train(TrainConfig(**base, init_from=str(tmp_path / "none")), progress=False)
    train(TrainConfig(**base, run_dir=str(tmp_path / "a")), progress=False)
    other = TrainConfig(**base, model_options={"hidden": [3]}, init_from=str(tmp_path / "a"))
    with pytest.raises(ApicalError, match="does not fit this run's model"):
        train(other, progress=False)
    start = Trainer(TrainConfig(**base, init_from=str(tmp_path / "a"))).model.state_dict()
    saved = RunFolder(tmp_path / "a").checkpoint()["model"]
    assert start.keys() == saved.keys() and all(torch.equal(start[k], saved[k]) for k in saved)


def test_segment_tables_count_winners_per_task_and_shared_winners():
    from apical.experiments.continual import segment_tables

    winners = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 1]])  # 2 tasks, 4 units
    use, same = segment_tables(winners)
    assert use.tolist() == [[0.5, 0.25, 0.25], [0.25, 0.75, 0.0]]
    assert same.tolist() == [[1.0, 0.5], [0.5, 1.0]]  # units 0 and 2 keep their winner


def test_the_digits_preset_reports_every_run_with_its_task_curve_and_segment_tables(tmp_path):
    import json

    import apical

    report = apical.reproduce("active-dendrites-pmnist", preset="digits", out=tmp_path, epochs=1)
    assert [r.label for r in report.runs] == ["active-dendrites", "active-dendrites-si",
                                              "dendrites-only", "kwta-only", "mlp"]  # fmt: skip
    assert all(r.verdict.startswith("not checked") for r in report.runs)
    assert {"tasks.png", "segments.png", "segments.json"} <= set(report.files)
    tables = json.loads(report.files["segments.json"].read_text())
    # the networks with segments
    assert set(tables) == {"active-dendrites", "active-dendrites-si", "dendrites-only"}
    for layer in tables["active-dendrites"]:  # 2 layers: per task, the shares sum to 1
        assert len(layer["use"]) == 3 and all(abs(sum(row) - 1) < 1e-6 for row in layer["use"])
        assert [layer["same"][t][t] for t in range(3)] == [1.0, 1.0, 1.0]
        assert 0 <= layer["same_mean_between_tasks"] <= 1
    # checkpoints "last": only the last task keeps its checkpoint; every task keeps its rows
    run = tmp_path / "active-dendrites-pmnist-digits" / "mlp"
    assert [RunFolder(run / f"task-{t}").has_checkpoint() for t in (1, 2, 3)] == [
        False, False, True]  # fmt: skip
    assert all(RunFolder(run / f"task-{t}").is_finished() for t in (1, 2, 3))
    again = apical.reproduce("active-dendrites-pmnist", preset="digits", out=tmp_path, epochs=1,
                             resume=True)  # reported from the folders, nothing trained  # fmt: skip
    assert [r.values for r in again.runs] == [r.values for r in report.runs]
    with pytest.raises(ApicalError, match=r"task-1 holds nothing; its checkpoint is kept"):
        RunFolder(tmp_path / "task-1").drop_checkpoint()
