"""Run folders as figures: probes are placed by training images, so batch sizes line up."""

import json

import pytest

from apical.plots import load_runs, plot_runs


def _run_folder(path, batch_size, probes):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"rule": "fa", "batch_size": batch_size}))
    (path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_accuracy": 0.9}) + "\n")
    (path / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))


def test_probes_without_images_get_steps_times_the_batch_size(tmp_path):
    row = {"mean_hidden_angle": 80.0, "layers": {}}
    _run_folder(tmp_path / "B-1", 1, [{**row, "step": 0}, {**row, "step": 2000}])
    _run_folder(tmp_path / "B-4", 4, [{**row, "step": 0}, {**row, "step": 500}])
    runs, skipped = load_runs(tmp_path)
    assert skipped == []
    images = {label: [p["images"] for p in probes] for label, (_, probes) in runs.items()}
    assert images == {"B-1 (fa)": [0, 2000], "B-4 (fa)": [0, 2000]}
    assert plot_runs(runs, tmp_path / "curves.png").stat().st_size > 10_000


def test_replicas_are_drawn_one_line_each_in_their_runs_colour(tmp_path, monkeypatch):
    from apical.plots import training

    drawn = []
    monkeypatch.setattr(training, "save", lambda fig, path, title: drawn.append(fig) or path)
    history = [{"epoch": e, "replica": r, "test_accuracy": 0.9 - e / 100 - r / 10}
               for e in (1, 2, 3) for r in (0, 1)]  # fmt: skip
    probes = [{"step": s, "images": s, "replica": r, "mean_hidden_angle": 40.0 + r,
               "layers": {"1": {"apical": 1.0 + r}, "3": {"apical": 5.0 + r}}}
              for s in (0, 10) for r in (0, 1)]  # fmt: skip
    plot_runs({"bp": (history, probes), "alone": (history[::2], [])}, tmp_path / "c.png")
    err, angle, apical = drawn[0].axes[:3]
    lines = {ax: [(ln.get_label(), ln.get_color(), list(ln.get_ydata())) for ln in ax.lines]
             for ax in (err, angle, apical)}  # fmt: skip
    assert [(lab, col) for lab, col, _ in lines[err]] == [
        ("bp (2 seeds)", "C0"), ("_child1", "C0"), ("alone", "C1")]  # fmt: skip
    assert lines[err][0][2] == pytest.approx([11.0, 12.0, 13.0])  # replica 0 alone, by epoch
    assert lines[err][1][2] == pytest.approx([21.0, 22.0, 23.0])
    assert [y for _, _, y in lines[angle][:2]] == [[40.0, 40.0], [41.0, 41.0]]  # then 90
    assert [t.get_text() for t in angle.get_legend().get_texts()] == ["bp (2 seeds)"]
    assert [y for _, _, y in lines[apical]] == [[1.0, 1.0], [2.0, 2.0], [5.0, 5.0], [6.0, 6.0]]
    # per-layer curves: the run's colour, a line style per layer
    assert [(col, ln.get_linestyle()) for (_, col, _), ln in zip(lines[apical], apical.lines,
            strict=True)] == [("C0", "-"), ("C0", "-"), ("C0", "--"), ("C0", "--")]  # fmt: skip
    # ... keyed by a run per colour and a layer per line style, not run x layer
    key = apical.get_legend()
    assert [t.get_text() for t in key.get_texts()] == ["bp", "layer 1", "layer 3"]
    assert [(h.get_color(), h.get_linestyle()) for h in key.legend_handles] == [
        ("C0", "-"), ("grey", "-"), ("grey", "--")]  # fmt: skip
