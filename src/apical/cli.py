"""The `apical` command: demo, train, rules, reproduce."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from apical import __version__
from apical.compare import (
    format_table,
    history_summary,
    summary,
    train_all,
)
from apical.errors import ApicalError
from apical.experiments import (
    Experiment,
    experiments,
    get_experiment,
    spiking_experiments,
    sweeps,
    verdicts,
)
from apical.plots import load_runs, plot_runs, plot_sweep
from apical.rules import RULES
from apical.runs import Rows, folder_rows
from apical.sweeps import run_sweep, summarize
from apical.train import Run, TrainConfig, resolve_device
from apical.train import train as run_training

DEMO_RULES = ("backprop", "fa", "dfa", "sign_symmetry")


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
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
def demo(epochs: int, out: Path, seed: int, device: str) -> None:
    """Train a 64-128-128-10 MLP on scikit-learn's digits with backprop, FA, DFA and sign
    symmetry side by side (no download, under a minute on 2 CPU cores)."""
    base = dict(
        dataset="digits", model="mlp", model_options={"hidden": [128, 128]}, lr=0.05,
        batch_size=32, epochs=epochs, seed=seed, probe_every=20, device=device,
    )  # fmt: skip
    configs = {r: TrainConfig.from_dict({**base, "rule": r}) for r in DEMO_RULES}
    runs = train_all(configs, progress=False, echo=lambda s: click.echo(s, err=True))
    rows = []
    for label, run in runs.items():
        s = summary(run)
        rows.append([label, 100 - s["test_error"], s["seconds"], s["angle"]])
    click.echo(
        format_table(["rule", "test accuracy (%)", "seconds", "angle to backprop (deg)"], rows)
    )
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_runs({k: (r.history, r.probes) for k, r in runs.items()}, out / "demo.png",
                    "apical demo: digits, MLP 64-128-128-10")  # fmt: skip
    (out / "demo.json").write_text(json.dumps({k: summary(r) for k, r in runs.items()}, indent=2))
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
@click.option("--epochs", type=int, help="Number of epochs.")
@click.option("--batch-size", type=int, help="Mini-batch size.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--probe-every", type=int, help="Alignment probe every N steps (0: never).")
@click.option("--device", help="auto, cpu or cuda.")
@click.option("--run-dir", help="Run folder (config, metrics, checkpoint).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its checkpoint.")
def train(config_file: Path | None, hidden: str | None, activation: str | None, resume: bool,
          rule_option: tuple[str, ...], model_option: tuple[str, ...],
          set_field: tuple[str, ...], **options: Any) -> None:  # fmt: skip
    """Train one model with one rule and print its per-epoch metrics."""
    fields: dict[str, Any] = {}
    if resume and options.get("run_dir") and config_file is None:
        saved = Path(options["run_dir"]) / "config.json"
        if not saved.is_file():
            raise ApicalError(f"nothing to resume: no config.json in {options['run_dir']}")
        fields = json.loads(saved.read_text())
    if config_file is not None:
        if not config_file.is_file():
            raise ApicalError(f"config file {config_file} not found")
        try:
            fields = tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ApicalError(f"config file {config_file} is not valid TOML: {e}") from None
    fields.update(parse_assignments(set_field, "--set"))
    fields.update({k: v for k, v in options.items() if v is not None})
    model_options = dict(fields.get("model_options", {}))
    model_options.update(parse_assignments(model_option, "--model-option"))
    if hidden is not None:
        model_options["hidden"] = _parse_sizes(hidden)
    if activation is not None:
        model_options["activation"] = activation
    if model_options:
        fields["model_options"] = model_options
    if rule_option:
        fields["rule_options"] = {
            **fields.get("rule_options", {}),
            **parse_assignments(rule_option, "--rule-option"),
        }
    config = TrainConfig.from_dict(fields)

    def show(row: dict[str, Any]) -> None:
        click.echo(
            f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  "
            f"val acc {100 * row['val_accuracy']:.2f}%  "
            f"test acc {100 * row['test_accuracy']:.2f}%  "
            f"angle {row['mean_hidden_angle']:.1f}  {row['seconds']:.1f}s"
        )

    run_training(config, resume=resume, progress=sys.stderr.isatty(), on_epoch=show)
    if config.run_dir:
        click.echo(f"run folder: {config.run_dir}")


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
    help="Fewer epochs for a quick check (the verdict then says so).",
)
@click.option("--resume", is_flag=True, help="Continue runs that have a checkpoint.")
@click.option("--preset", help="A sweep's shorter protocol (e.g. cpu, tiny).")
@click.option(
    "--run",
    "only",
    multiple=True,
    help="Train only this run of the experiment (repeatable; default: all).",
)
def reproduce(name: str | None, list_only: bool, data_dir: str | None, out: Path,
              device: str | None, epochs: int | None, resume: bool,
              preset: str | None, only: tuple[str, ...]) -> None:  # fmt: skip
    """Run a paper experiment or sweep by NAME and print measured against published."""
    if list_only or name is None:
        for exp in experiments().values():
            click.echo(f"{exp.name}: {exp.title}\n  source: {exp.source}\n  claim: {exp.claim}")
            for r in exp.runs:
                shared = f" (the run {r.same_as})" if r.same_as else ""
                click.echo(f"    {r.label}: published {r.published or '-'}{shared}")
        for sp in spiking_experiments().values():
            presets = ", ".join(sp.presets) or "none"
            click.echo(f"{sp.name} (spiking; presets: {presets}): {sp.title}")
            click.echo(f"  source: {sp.source}\n  claim: {sp.claim}\n    published {sp.published}")
        for sw in sweeps().values():
            presets = ", ".join(sw.presets) or "none"
            click.echo(f"{sw.name} (sweep; presets: {presets}): {sw.title}\n  claim: {sw.claim}")
        return
    if only and (name in spiking_experiments() or name in sweeps()):
        raise ApicalError(f"--run picks runs of an experiment; {name} has none to pick")
    if name in spiking_experiments():
        for flag, value in (("--epochs", epochs), ("--data-dir", data_dir)):
            if value is not None:
                raise ApicalError(f"{flag} does not apply to the spiking simulation {name}; "
                                  "use --preset for a shorter protocol")  # fmt: skip
        device = str(resolve_device(device or "cpu"))
        _reproduce_spiking(spiking_experiments()[name], preset, out, device, resume)
        return
    if name in sweeps():
        overrides = {"data_dir": data_dir, "device": device, "epochs": epochs}
        _reproduce_sweep(sweeps()[name].preset(preset), preset, out, overrides, resume)
        return
    if preset is not None:
        raise ApicalError(f"--preset is for sweeps; {name} is an experiment")
    exp = get_experiment(name)
    picked = [r.label for r in exp.select(only).runs]
    configs = exp.configs(out / exp.name, data_dir=data_dir, device=device, epochs=epochs)
    for r in exp.runs:
        if r.same_as and r.label in picked:
            where = configs[r.label].run_dir
            click.echo(f"[{r.label}] is the run {r.same_as}, in {where}", err=True)
    runs = train_all(
        {k: configs[k] for k in picked}, resume=resume, progress=sys.stderr.isatty(),
        echo=lambda s: click.echo(s, err=True),
    )  # fmt: skip
    results, final, verdict = _experiment_results(exp, configs, picked, runs)
    rows = []
    for r in exp.runs:
        expected = []
        if r.max_error is not None:
            expected.append(f"err <= {r.max_error:g}%")
        if r.within is not None:
            expected.append(f"err <= {r.reference} + {r.within:g}")
        if r.max_angle is not None:
            expected.append(f"angle <= {r.max_angle:g}")
        f = final.get(r.label, dict.fromkeys(("val_error", "angle", "seconds"), "-"))
        if r.label not in final:
            err = "-"
        elif r.metric == "test_error":
            err = f[r.metric]
        else:
            err = f"{f[r.metric]:.2f} (top-5)"
        rows.append([r.label, err, f["val_error"], f["angle"], f["seconds"],
                     r.published or "-", ", ".join(expected) or "-", verdict[r.label]])  # fmt: skip
    click.echo(f"{exp.title}\nsource: {exp.source}")
    click.echo(format_table(["run", "test err %", "val err %", "angle", "seconds", "published",
                             "expected", "verdict"], rows))  # fmt: skip
    if epochs is not None:
        click.echo(f"(shortened to {epochs} epochs: not the published protocol)")
    fig = plot_runs(results, out / exp.name / "curves.png", exp.title)
    (out / exp.name / "summary.json").write_text(
        json.dumps({"final": final, "verdict": verdict}, indent=2)
    )
    click.echo(f"figure: {fig}")


def _experiment_results(
    exp: Experiment, configs: dict[str, TrainConfig], picked: list[str], runs: dict[str, Run]
) -> tuple[dict[str, Rows], dict[str, dict], dict[str, str]]:
    """Every run of the experiment, not only those trained now: rows (history, probes) of
    each run folder that has any, the final metrics of the finished ones (all epochs of
    their config), and a verdict each ('pass'/'FAIL'/'-', or why there is none)."""
    results, final, status = {}, {}, {}
    for r in exp.runs:
        cfg = configs[r.label]
        rows = (runs[r.label].history, runs[r.label].probes) if r.label in runs else None
        rows = rows or (None if r.label in picked else folder_rows(cfg.run_dir))
        if rows is None:
            status[r.label] = "diverged" if r.label in picked else "not run"
            continue
        results[r.label] = rows
        done = rows[0][-1]["epoch"]
        if done >= cfg.epochs:
            final[r.label] = history_summary(*rows)
        else:
            status[r.label] = f"epoch {done} of {cfg.epochs}"
    return results, final, {**verdicts(exp, final), **status}


def _reproduce_spiking(exp, preset, out: Path, device: str, resume: bool) -> None:
    from apical.spiking.reproduce import reproduce as run_protocol

    out_dir = out / (exp.name + (f"-{preset}" if preset else ""))
    lines, fig = run_protocol(exp.protocol, exp.preset_options(preset), out_dir, device, resume,
                              lambda s: click.echo(s, err=True))  # fmt: skip
    click.echo(f"{exp.title}\nsource: {exp.source}")
    for line in lines:
        click.echo(line)
    click.echo(f"published: {exp.published}\nfigure: {fig}")


def _reproduce_sweep(sweep, preset, out: Path, overrides: dict, resume: bool) -> None:
    out_dir = out / (sweep.name + (f"-{preset}" if preset else ""))
    results, layers = run_sweep(sweep, out_dir, overrides=overrides, resume=resume,
                                progress=sys.stderr.isatty(),
                                echo=lambda s: click.echo(s, err=True))  # fmt: skip
    axes = list(sweep.axes)
    summary_rows = summarize(results, layers, axes)
    headers = [*axes, "lr", "test err %", "sd", f"epochs to {sweep.threshold:g}%", "|apical|",
               "angle"]  # fmt: skip
    rows = [[*(r[a] for a in axes), r["lr"], r["test_error"], r["test_error_sd"],
             r["epochs_to_threshold"], r["apical"], r["angle"]] for r in summary_rows]  # fmt: skip
    click.echo(f"{sweep.title}\nclaim: {sweep.claim}")
    click.echo(format_table(headers, rows))
    for path in plot_sweep(summary_rows, layers, out_dir, sweep.title):
        click.echo(f"figure: {path}")
    click.echo(f"tables: {out_dir / 'results.csv'}, {out_dir / 'layers.csv'}, "
               f"{out_dir / 'summary.csv'}")  # fmt: skip


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write (default: RUN/curves.png).")  # fmt: skip
def plot(run: Path, out: Path | None) -> None:
    """Plot learning curves, angles to backprop and apical potentials from RUN: a run
    folder, or an experiment folder holding several (e.g. runs/burstprop-mnist)."""
    runs = load_runs(run)
    fig = plot_runs(runs, out or run / "curves.png", str(run))
    click.echo(f"figure: {fig}")


def main() -> None:
    """Entry point: a user's mistake prints one line, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted; continue later with --resume", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ApicalError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; continue later with --resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
