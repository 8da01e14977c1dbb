"""Run folders as figures: probes are placed by training images, so batch sizes line up."""

import json

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
