"""The `apical` command: demo, train, rules, reproduce, plot. It parses arguments and
formats results; the work is done by the library (apical.train, apical.experiments)."""

from __future__ import annotations

import json
import math
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from apical import __version__, distributed
from apical.errors import ApicalError, DivergedError, Interrupted, PeerFailed
from apical.experiments import Report, shipped
from apical.experiments import reproduce as reproduce_experiment
from apical.plots import load_runs, plot_runs
from apical.plots.base import check_figure_path
from apical.rules import RULES
from apical.run_folder import RunFolder, make_folder, write_json
from apical.train import TrainConfig, train_all
from apical.train import train as run_training
from apical.tune import RayOptions

DEMO_RULES = ("backprop", "fa", "dfa", "sign_symmetry")
HEADERS = {
    "test_error": "test err %", "test_top5_error": "top-5 err %", "val_error": "val err %",
    "test_error_sd": "sd", "epochs_to_threshold": "epochs to threshold", "apical": "|apical|",
    "solved_count": "solved", "simulated_per_wall_second": "simulated s per s",
}  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="apical")
def cli() -> None:
    """apical: biologically plausible credit assignment on PyTorch.

    Start with `apical demo`; `apical rules` lists the learning rules.
    """


@cli.command()
@click.option(
    "--epochs",
    default=40,
    show_default=True,
    type=click.IntRange(1),
    help="Training epochs per rule.",
)
@click.option(
    "--out",
    default="apical-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the figure (demo.png) and the results (demo.json).",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Random seed.")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
def demo(epochs: int, out: Path, seed: int, device: str) -> None:
    """Train a 64-128-128-10 MLP on scikit-learn's digits with backprop, FA, DFA and sign
    symmetry side by side (no download, under a minute on 2 CPU cores)."""
    make_folder(out)  # a place that cannot take the results is refused before training
    base = dict(
        dataset="digits", model="mlp", model_options={"hidden": [128, 128]}, lr=0.05,
        batch_size=32, epochs=epochs, seed=seed, probe_every=20, device=device,
    )  # fmt: skip
    configs = {r: TrainConfig.from_dict({**base, "rule": r}) for r in DEMO_RULES}
    runs = train_all(configs, progress=False, echo=lambda s: click.echo(s, err=True))
    rows, results = [], {}
    for label, run in runs.items():
        last = run.history[-1]
        angle = run.probes[-1]["mean_hidden_angle"] if run.probes else math.nan
        results[label] = {"test_error": 100 * (1 - last["test_accuracy"]),
                          "seconds": last["seconds"], "angle": angle}  # fmt: skip
        rows.append([label, 100 * last["test_accuracy"], last["seconds"], angle])
    click.echo(
        format_table(["rule", "test accuracy (%)", "seconds", "angle to backprop (deg)"], rows)
    )
    fig = plot_runs({k: (r.history, r.probes) for k, r in runs.items()}, out / "demo.png",
                    "apical demo: digits, MLP 64-128-128-10")  # fmt: skip
    write_json(out / "demo.json", results)
    click.echo(f"figure: {fig}")


def parse_assignments(items: tuple[str, ...] | list[str], flag: str) -> dict[str, Any]:
    """KEY=VALUE pairs with JSON values (a value that is not JSON is taken as a string)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApicalError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


def _parse_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ApicalError(
            f"--hidden takes comma-separated sizes like 500,500, got {text!r}"
        ) from None
    if any(s <= 0 for s in sizes):
        raise ApicalError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file of TrainConfig fields; the options below override it.",
)
@click.option(
    "--dataset", help="digits, xor, mnist, fashion-mnist, cifar10, imagefolder or imagenet."
)
@click.option("--data-dir", help="Folder with the dataset files (default: $APICAL_DATA).")
@click.option(
    "--model", help="mlp, convnet or a paper net (burstprop_mlp, burstprop_convnet, ...)."
)
@click.option("--hidden", help="Hidden sizes of the mlp, comma-separated (e.g. 500,500).")
@click.option("--activation", help="tanh, relu or sigmoid.")
@click.option("--rule", help="Learning rule (see `apical rules`).")
@click.option(
    "--rule-option",
    "rule_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="A rule option, e.g. learn_feedback=true (repeatable; JSON values).",
)
@click.option(
    "--model-option",
    "model_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="A model option, e.g. preset=paper or g_a=0.05 (repeatable; JSON values).",
)
@click.option(
    "--set",
    "set_field",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any config field, e.g. val_size=10000 or standardize=false (repeatable; JSON "
    "values); the options above override it.",
)
@click.option("--loss", help="cross_entropy or mse.")
@click.option("--optimizer", help="sgd, adam, adamw or decoupled_sgd (burstprop's).")
@click.option("--lr", type=float, help="Learning rate (hidden layers).")
@click.option("--output-lr", type=float, help="Learning rate of the output layer.")
@click.option("--momentum", type=float, help="SGD momentum.")
@click.option("--weight-decay", type=float, help="Weight decay (also of learned feedback).")
@click.option(
    "--schedule", help="constant, cosine or step (x step_factor every step_every epochs)."
)
@click.option("--grad-clip", type=float, help="Clip the update's global norm to this.")
@click.option("--epochs", type=int, help="Number of epochs (with --resume: extend the run).")
@click.option("--batch-size", type=int, help="Mini-batch size.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--probe-every", type=int, help="Alignment probe every N steps (0: never).")
@click.option("--device", help="auto, cpu or cuda.")
@click.option("--run-dir", help="Run folder (config, metrics, checkpoint).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its checkpoint.")
@click.option("--tensorboard", is_flag=True, default=None,
              help="Also write the rows as TensorBoard events in RUN/tensorboard.")  # fmt: skip
@click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
              help="Data-parallel processes on this machine (started as torchrun would; "
              "gloo on CPUs, NCCL on GPUs). Many machines: docs/distributed.md.")  # fmt: skip
def train(config_file: Path | None, hidden: str | None, activation: str | None, resume: bool,
          nproc: int, rule_option: tuple[str, ...], model_option: tuple[str, ...],
          set_field: tuple[str, ...], **options: Any) -> None:  # fmt: skip
    """Train one model with one rule and print its per-epoch metrics. Under torchrun, each
    process trains its shard of every batch (docs/distributed.md)."""
    fields: dict[str, Any] = {}
    if resume and options.get("run_dir") and config_file is None:
        saved = RunFolder(options["run_dir"]).config()
        if saved is None:
            raise ApicalError(f"nothing to resume: no config.json in {options['run_dir']}")
        fields = saved
    if config_file is not None:
        fields = _read_toml(config_file)
    fields.update(parse_assignments(set_field, "--set"))
    fields.update({k: v for k, v in options.items() if v is not None})
    model_options = parse_assignments(model_option, "--model-option")
    if hidden is not None:
        model_options["hidden"] = _parse_sizes(hidden)
    if activation is not None:
        model_options["activation"] = activation
    rule_options = parse_assignments(rule_option, "--rule-option")
    for key, given in (("model_options", model_options), ("rule_options", rule_options)):
        table = fields.get(key, {})
        if given and isinstance(table, dict):  # else the validator names what is wrong
            fields[key] = {**table, **given}
    config = TrainConfig.from_dict(fields)
    if nproc > 1:
        if distributed.environment() is not None:
            raise ApicalError("--nproc inside torchrun: give torchrun the process count only")
        sys.exit(distributed.launch(nproc, _without_nproc(sys.argv[1:])))

    def show(row: dict[str, Any]) -> None:
        angle, at = row.get("mean_hidden_angle"), row.get("angle_step")
        shown = "-" if angle is None else f"{angle:.1f}"
        if angle is not None and at is not None and at != row["step"]:
            shown += f" (probed at step {at})"
        click.echo(
            f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  "
            f"val acc {_percent(row.get('val_accuracy'))}  "
            f"test acc {_percent(row.get('test_accuracy'))}  "
            f"angle {shown}  {row['seconds']:.1f}s"
        )

    run_training(config, resume=resume, progress=sys.stderr.isatty(), on_epoch=show)
    if config.run_dir and distributed.speaks():
        click.echo(f"run folder: {config.run_dir}")


def _without_nproc(args: list[str]) -> list[str]:
    """The command line minus --nproc N (what each launched process runs)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _percent(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}%"


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ApicalError(f"config file {path} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ApicalError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ApicalError(f"config file {path} is not valid TOML: {e}") from None


@cli.command()
def rules() -> None:
    """List the learning rules with a one-line description each."""
    width = max(map(len, RULES))
    for name, cls in RULES.items():
        click.echo(f"{name.ljust(width)}  {cls.summary}")


@cli.command()
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the experiments and exit.")
@click.option("--data-dir", help="Folder with the dataset files (default: $APICAL_DATA).")
@click.option(
    "--out",
    default="runs",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Parent folder of the experiment's run folders.",
)
@click.option("--device", help="auto, cpu or cuda (default: the experiment's).")
@click.option(
    "--epochs",
    type=click.IntRange(1),
    help="Fewer epochs for a quick check (reported, not judged).",
)
@click.option("--resume", is_flag=True,
              help="Continue runs that have a checkpoint, report finished ones and start "
                   "those not yet run (limit it with --run).")  # fmt: skip
@click.option("--preset", help="A shorter protocol of the experiment (e.g. cpu, tiny).")
@click.option(
    "--run",
    "only",
    multiple=True,
    help="Train only this run of the experiment (repeatable; default: all).",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1),
              help="Train every run with this seed instead of the file's, into "
              "OUT/NAME-seed-N.")  # fmt: skip
@click.option("--export", type=click.Path(file_okay=False, path_type=Path),
              help="Also copy the report, figures and rows to EXPORT/NAME (for docs).")  # fmt: skip
@click.option("--ray", "on_ray", is_flag=True,
              help="Train the runs (grid points) as Ray Tune trials (pip install "
              "'apical[distributed]').")  # fmt: skip
@click.option("--ray-address", help="A Ray cluster's address (default: start Ray here).")
@click.option("--trial-cpus", type=click.FloatRange(0, min_open=True), default=1.0,
              show_default=True, help="CPUs of each Ray trial.")  # fmt: skip
@click.option("--trial-gpus", type=click.FloatRange(0), default=0.0, show_default=True,
              help="GPUs of each Ray trial (a fraction shares one).")  # fmt: skip
def reproduce(name: str | None, list_only: bool, data_dir: str | None, out: Path,
              device: str | None, epochs: int | None, resume: bool, preset: str | None,
              only: tuple[str, ...], seed: int | None, export: Path | None, on_ray: bool,
              ray_address: str | None, trial_cpus: float, trial_gpus: float) -> None:  # fmt: skip
    """Run a paper experiment or sweep by NAME (or a path to an experiment file) and print
    measured against published."""
    if list_only or name is None:
        for exp in shipped().values():
            presets = f"; presets: {', '.join(exp.presets)}" if exp.presets else ""
            click.echo(f"{exp.name} ({exp.kind}{presets}): {exp.title}")
            click.echo(f"  source: {exp.source}\n  claim: {exp.claim}")
            for r in exp.spec.runs if exp.kind == "train" else ():
                shared = f" (the run {r.same_as})" if r.same_as else ""
                click.echo(f"    {r.label}: published {r.published or '-'}{shared}")
        return
    report = reproduce_experiment(
        name, out=out, preset=preset, runs=only, resume=resume, export=export, seed=seed,
        progress=sys.stderr.isatty(), echo=lambda s: click.echo(s, err=True),
        data_dir=data_dir, device=device, epochs=epochs,
        ray=RayOptions(ray_address, trial_cpus, trial_gpus) if on_ray or ray_address else None,
    )  # fmt: skip
    click.echo(format_report(report))


def format_report(report: Report) -> str:
    """The report as the lines `apical reproduce` prints: a table of its runs (a single
    run's published number and tolerance on lines of their own), its notes and files."""
    lines = [report.title, f"source: {report.source}"]
    keys = list(dict.fromkeys(k for r in report.runs for k in r.values))
    texts = [c for c in ("published", "expected") if any(getattr(r, c) for r in report.runs)]
    if len(report.runs) == 1:
        lines += [f"{c}: {getattr(report.runs[0], c)}" for c in texts]
        texts = []
    rows = [[r.label, *(r.values.get(k) for k in keys), *(getattr(r, c) or "-" for c in texts),
             r.verdict] for r in report.runs]  # fmt: skip
    headers = ["run", *(HEADERS.get(k, k) for k in keys), *texts, "verdict"]
    lines += [format_table(headers, rows), *report.notes]
    lines += [f"{'figure' if p.suffix == '.png' else 'file'}: {p}" for n, p in report.files.items()
              if not n.endswith(".jsonl")]  # fmt: skip
    lines.append(f"report: {report.folder / 'report.json'}")
    return "\n".join(lines)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.2f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write (default: RUN/curves.png).")  # fmt: skip
def plot(run: Path, out: Path | None) -> None:
    """Plot learning curves, angles to backprop and apical potentials from RUN: a run
    folder, or an experiment folder holding several (e.g. runs/burstprop-mnist)."""
    if out is not None:
        check_figure_path(out)
    runs, skipped = load_runs(run)
    for line in skipped:
        click.echo(f"skipped: {line}", err=True)
    fig = plot_runs(runs, out or run / "curves.png", str(run))
    click.echo(f"figure: {fig}")


def main() -> None:
    """Entry point. A user's mistake, a path that cannot be used and memory that cannot be
    had each print one line and exit 2 (an interruption 130); anything else is a bug in
    apical and shows its traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _say("interrupted")
        sys.exit(130)
    except click.ClickException as e:
        command = e.ctx.command_path if getattr(e, "ctx", None) else "apical"
        _say(f"error: {e.format_message()} (see {command} --help)")
        sys.exit(2)
    except Interrupted as e:
        _say(f"stopped: {e}", peers_too=False)
        sys.exit(130)
    except (PeerFailed, DivergedError) as e:  # a distributed run's processes diverge together
        _say(f"error: {e}", peers_too=False)
        sys.exit(2)
    except ApicalError as e:
        _say(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
    except OSError as e:
        if e.filename is None:
            raise
        _say(f"error: cannot use {e.filename} ({e.strerror}); check the path and its permissions")
        sys.exit(2)
    except (MemoryError, RuntimeError) as e:
        line = out_of_memory(e)
        if line is None:
            raise
        _say(f"error: {line}")
        sys.exit(2)


def _say(line: str, peers_too: bool = True) -> None:
    """The one line of a failure. A distributed run's other processes stay silent where
    the lead says the same (`peers_too=False`); under `apical train --nproc` the line goes
    to the launcher, which prints one line for the run (apical.distributed.launch)."""
    if not (peers_too or distributed.speaks()):
        return
    if not distributed.tell_launcher(line):
        click.echo(line, err=True)


def out_of_memory(e: BaseException) -> str | None:
    """The one line for an allocation that failed (None for any other error)."""
    text = str(e)
    asked = re.search(r"allocate (\d+) bytes", text) or re.search(
        r"allocate (\d+(?:\.\d+)? [KMGT]iB)", text
    )
    if not (isinstance(e, MemoryError) or "allocate" in text or "out of memory" in text):
        return None
    if asked is None:
        size = "more memory than there is"
    elif asked.group(1).isdigit():
        size = _bytes(int(asked.group(1)))
    else:
        size = asked.group(1)
    return (
        f"out of memory: the run asked for {size} at once; make the model smaller (--hidden, "
        "model options), or the batch (--batch-size) or probe batch (probe_size) smaller"
    )


def _bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1000
    return f"{n} bytes"


if __name__ == "__main__":
    main()
