"""The ``mnistlab`` command: argument parsing and printing only; each command is one library call."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import MnistlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Neural-network ablation studies on MNIST: study files in, tables and reports out.")
data_app = typer.Typer(no_args_is_help=True, help="Get and inspect datasets.")
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)

StoreOpt = typer.Option(None, "--store", help="SQLAlchemy URL or SQLite file [default: mnistlab.db beside the study, "
                                             "or $MNISTLAB_STORE, or ./mnistlab.db]")


class CliError(MnistlabError):
    """Bad command-line input."""


def main() -> None:
    """Console entry point: library errors become one red line and exit status 2."""
    try:
        app(standalone_mode=False)
    except (typer.Exit, SystemExit) as exc:
        raise SystemExit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except typer.Abort:
        err.print("[red]aborted[/red]")
        raise SystemExit(130)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: finished epochs are saved; run the same command again to resume[/yellow]")
        raise SystemExit(130)
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, typer.TyperException):  # bad usage: typer's own message
            if hasattr(exc, "show"):
                exc.show()
            else:
                err.print(f"[red]error:[/red] {exc.format_message()}", highlight=False)
            raise SystemExit(exc.exit_code)
        if isinstance(exc, MnistlabError):
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise SystemExit(exc.exit_code)
        raise


def _store(url: Optional[str], study_path: Optional[Path] = None):
    from .api import Store
    url = url or os.environ.get("MNISTLAB_STORE")
    if study_path is not None and study_path.suffix == ".toml":
        return Store.for_study(study_path, url)
    return Store(url or "mnistlab.db")


def _study_name(study: str) -> str:
    """A study argument is a file (its ``name`` is read) or a name already in the store."""
    path = Path(study)
    if path.suffix == ".toml":
        from .api import read_study
        return read_study(path).name
    return study


@app.command()
def run(study: Path = typer.Argument(..., help="Study file (TOML)."), store: Optional[str] = StoreOpt,
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Train failed and diverged runs again."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress; only the table."),
        group: bool = typer.Option(True, "--group/--no-group", help="Train same-shape runs together as one "
                                                                   "vectorised group (default) or one by one."),
        table: bool = typer.Option(True, "--table/--no-table", help="Print the comparison table at the end."),
        workers: int = typer.Option(1, "--workers", "-j", help="Local worker processes sharing the store "
                                                                "(each with cores/N threads); 1 trains here."),
        executor: Optional[str] = typer.Option(None, "--executor", help="inline, processes or ray "
                                               "[default: inline; processes with --workers N]"),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto (one started with "
                                              "`ray start --head` here) or HOST:PORT [default: $RAY_ADDRESS, "
                                              "else a local cluster for this run]"),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda [default: the study's "
                                             "[train] device, auto: a CUDA GPU when there is one]"),
        precision: Optional[str] = typer.Option(None, "--precision", help="fp32 or bf16 (autocast, fp32 weights) "
                                                "[default: the study's [train] precision, fp32]")):
    """Train every run of STUDY not done yet, then print the comparison table."""
    from .api import EngineOptions, RunOptions, load_study, run as run_api
    spec = load_study(study)
    db = _store(store, study)
    executor = executor or ("processes" if workers > 1 else "inline")
    options = RunOptions(retry_failed=retry_failed, group=group, workers=workers, executor=executor, address=address)
    engine = EngineOptions.from_environment(settings=spec.train, device=device, precision=precision)
    reporter = _reporter(quiet or executor == "processes")
    if executor != "inline" and not quiet:
        cluster = address or os.environ.get("RAY_ADDRESS") or "a local cluster"
        where = f"{workers} worker processes" if executor == "processes" else f"Ray ({cluster})"
        err.print(f"training in {escape(where)}…", highlight=False)
    try:
        outcome = run_api(spec, db, reporter, options, engine)
    finally:
        reporter.close()
    if not quiet:
        again = f", resubmitted {len(outcome.resubmitted)}" if outcome.resubmitted else ""
        err.print(f"trained {len(outcome.trained)}, resumed {len(outcome.resumed)}, skipped {len(outcome.skipped)}"
                  f" (done or taken), diverged {len(outcome.diverged)}, failed {len(outcome.failed)}{again}; "
                  f"store: {db.url}", highlight=False)
    if table:
        _print_table(db, spec.name)


@app.command()
def summary(study: Path = typer.Argument(..., help="Study file (TOML).")):
    """Print a Keras-style summary of every model in STUDY (layers, output shapes, parameters)."""
    from .api import load_study, summaries
    for label, text in summaries(load_study(study)):
        out.print(f"[bold]{escape(label)}[/bold]")
        out.print(text, highlight=False, markup=False)
        out.print()


@app.command("ls")
def ls(study: Optional[str] = typer.Argument(None, help="Study file or name: list its runs."),
       store: Optional[str] = StoreOpt):
    """List studies (with run counts by status), or the runs of one study."""
    db = _store(store, Path(study) if study else None)
    if study is None:
        table = Table("study", "runs", "status", "updated", "file")
        for s in db.studies():
            counts = ", ".join(f"{n} {k}" for k, n in sorted(s["counts"].items()))
            table.add_row(s["name"], str(sum(s["counts"].values())), counts, f"{s['updated']:%Y-%m-%d %H:%M}",
                          s["path"] or "")
        out.print(table)
        return
    table = Table("run", "model", "repeat", "status", "epochs", "test acc", "seconds")
    for r in db.runs(study=_study_name(study)):
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "—"
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "—"
        table.add_row(r["id"][:8], escape(r["model"] + (f" [{r['point']}]" if r["point"] else "")), str(r["repeat"]),
                      r["status"], f"{r['epochs_done']}/{r['spec']['epochs']}", acc, secs)
    out.print(table)


@app.command()
def show(run_id: str = typer.Argument(..., help="Run id or an unambiguous prefix (as `ls` shows)."),
         store: Optional[str] = StoreOpt):
    """Show one run: its spec, its history epoch by epoch, its final metrics."""
    db = _store(store)
    full = db.resolve(run_id)
    run = db.runs(ids=[full], current=False)[0]
    spec = run["spec"]
    out.print(f"[bold]run {full}[/bold]  {run['model']} {run['point'] or ''}  status: {run['status']}")
    for key in ("dataset", "epochs", "batch_size", "optimizer", "loss", "seed", "train_size", "test_size"):
        out.print(f"  {key}: {spec.get(key)}", highlight=False)
    out.print("  layers:")
    for layer in spec["layers"]:
        out.print(f"    {layer}", highlight=False)
    history = Table("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
    for row in db.history(full):
        history.add_row(str(row["epoch"]), *(f"{row[k]:.4f}" if row[k] is not None else "—"
                                             for k in ("loss", "accuracy", "val_loss", "val_accuracy")),
                        f"{row['seconds']:.2f}")
    out.print(history)
    for key in ("params", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"):
        if run[key] is not None:
            out.print(f"  {key}: {run[key]:,}" if key == "params" else f"  {key}: {run[key]:.4f}")
    if run["error"]:
        out.print(f"  [red]error:[/red] {run['error']}", highlight=False)


@app.command("table")
def table_cmd(study: str = typer.Argument(..., help="Study file or a study name in the store."),
              store: Optional[str] = StoreOpt,
              fmt: str = typer.Option("text", "--format", "-f", help="text, markdown, csv or json")):
    """Print the comparison table of STUDY from the store (repeats as mean ± std (n))."""
    from .report.table import comparison, render
    db = _store(store, Path(study))
    name = _study_name(study)
    if db.study(name) is None:
        raise CliError(f"study {name!r} is not in {db.url}; run it first (mnistlab run STUDY.toml)")
    if fmt == "text":
        _print_table(db, name)
    elif fmt in ("markdown", "csv", "json"):
        print(render(comparison(db, name), fmt))
    else:
        raise CliError(f"--format {fmt!r} is unknown; use text, markdown, csv or json")


@app.command()
def report(study: str = typer.Argument(..., help="Study file or a study name in the store."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file [default: STUDY-report.html]"),
           png: Optional[Path] = typer.Option(None, "--png", help="Also write each figure as a PNG into this folder."),
           store: Optional[str] = StoreOpt):
    """Write a self-contained HTML report of STUDY (works offline), optionally PNG figures."""
    from .report.html import write_report
    db = _store(store, Path(study))
    name = _study_name(study)
    target = output or Path(f"{Path(study).stem if study.endswith('.toml') else name}-report.html")
    path = write_report(db, name, target, png_dir=png)
    out.print(f"report: {path}", highlight=False)


@app.command()
def predict(run_id: str = typer.Argument(..., help="Run id or an unambiguous prefix."),
            images: list[Path] = typer.Argument(..., help="28x28 images: .png or .npy (white digit on black, "
                                                          "or dark on light, which is inverted)."),
            store: Optional[str] = StoreOpt):
    """Classify images with a trained run: the predicted digit and its probability."""
    from .api import predict as predict_api
    for row in predict_api(_store(store), run_id, list(images)):
        print(f"{row['file']}: {row['predicted']} ({row['confidence']:.1%})")  # one line per image, unwrapped


@app.command()
def export(run_id: str = typer.Argument(..., help="Run id or an unambiguous prefix."),
           output: Path = typer.Option(Path("export"), "-o", "--output", help="Folder to write into."),
           store: Optional[str] = StoreOpt):
    """Write a run's weights (safetensors), spec (JSON) and history (CSV) into a folder."""
    from .api import export as export_api
    for path in export_api(_store(store), run_id, output):
        print(path)


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument("mnist"), force: bool = typer.Option(False, "--force")):
    """Download (or unpack the offline copy of) a dataset into the cache, checking its SHA-256."""
    from .api import fetch_data
    started = time.perf_counter()
    path = fetch_data(name, force=force)
    out.print(f"{name}: {path} ({time.perf_counter() - started:.1f} s)", highlight=False)


@data_app.command("info")
def data_info(name: str = typer.Argument("mnist")):
    """Where a dataset is cached, its shapes, class counts and source."""
    from .api import data_info
    for key, value in data_info(name).items():
        out.print(f"{key}: {value}", highlight=False)


def _print_table(db, study: str) -> None:
    from .report.table import HEADERS, best, comparison, text_cells
    rows = comparison(db, study)
    winners = best(rows)
    table = Table(*HEADERS, title=f"study {study}")
    metric_of = {2: "train_loss", 3: "train_accuracy", 4: "test_loss", 5: "test_accuracy"}
    for row in rows:
        cells = [escape(cell) for cell in text_cells(row)]  # labels hold [grid points]: not markup
        for col, metric in metric_of.items():
            if winners.get(metric) == row.label and len(rows) > 1:
                cells[col] = f"[bold green]{cells[col]}[/bold green]"
        table.add_row(*cells)
    out.print(table)


class _Reporter:
    """Rich progress: one bar for the study, one for the current run; plain lines off a terminal."""

    def __init__(self, quiet: bool):
        self.quiet, self.live = quiet, (not quiet and err.is_terminal)
        self.progress = None
        self.spec = None
        if self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=err, transient=False)
            self.progress.start()

    def study_started(self, total: int, done: int) -> None:
        if self.progress:
            self.study = self.progress.add_task("runs", total=total, completed=done, info="")
            self.run = self.progress.add_task("run", total=1, info="", visible=False)
        elif not self.quiet:
            err.print(f"{total} runs, {done} done already", highlight=False)

    def run_started(self, specs, resumed_from: int) -> None:
        self.specs, self.spec = specs, specs[0]
        label = self.spec.label + (f" r{self.spec.repeat}" if len(specs) == 1 else f" +{len(specs) - 1} grouped")
        self.label = label
        note = f" (resuming after epoch {resumed_from})" if resumed_from else ""
        if self.progress:
            self.progress.update(self.run, description=f"{label} epoch {resumed_from + 1}/{self.spec.epochs}",
                                 completed=0, total=1, info="", visible=True)
        elif not self.quiet:
            ids = ", ".join(s.id[:8] for s in specs)
            err.print(f"{'group' if len(specs) > 1 else 'run'} {ids}: {label}{note}", highlight=False)

    def batch(self, batch: int, batches: int, loss: float, accuracy: float) -> None:
        if self.progress:
            self.progress.update(self.run, completed=batch, total=batches, info=f"loss {loss:.4f} acc {accuracy:.4f}")

    def epoch(self, spec, row) -> None:
        val = f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}" if "val_loss" in row else ""
        line = (f"{spec.label} r{spec.repeat} epoch {row['epoch']}/{spec.epochs} loss {row['loss']:.4f} "
                f"acc {row['accuracy']:.4f}{val} {row['seconds']:.1f}s")
        if self.progress:
            self.progress.console.print(f"  {escape(line)}", highlight=False)
            if spec is self.specs[-1] and row["epoch"] < spec.epochs:
                self.progress.update(self.run, description=f"{self.label} epoch {row['epoch'] + 1}/{spec.epochs}")
        elif not self.quiet:
            err.print(f"  {line}", highlight=False)

    def run_finished(self, spec, status: str, detail: str) -> None:
        colour = {"done": "green", "diverged": "yellow"}.get(status, "red")
        if self.progress:
            self.progress.advance(self.study)
            self.progress.console.print(f"[{colour}]{status}[/{colour}] {escape(spec.label)}: {escape(detail)}",
                                        highlight=False)
        elif not self.quiet:
            err.print(f"{status} {spec.label}: {detail}", highlight=False)

    def notice(self, text: str) -> None:  # the Ray driver: a worker or node died, its run resubmitted
        if self.progress:
            self.progress.console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)
        else:
            err.print(text, highlight=False, markup=False)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()


def _reporter(quiet: bool) -> _Reporter:
    return _Reporter(quiet)


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
