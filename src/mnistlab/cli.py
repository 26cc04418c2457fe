"""The ``mnistlab`` command: argument parsing and printing only; each command is one library call."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .console import err, fitted_table, make_reporter as _reporter, out, print_table, say_outcome
from .errors import MnistlabError, UsageError
from .wording import duration, environment_lines, group_label

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Neural-network ablation studies on MNIST: study files in, tables and reports out.")
data_app = typer.Typer(no_args_is_help=True, help="Get and inspect datasets.")
app.add_typer(data_app, name="data")

StoreOpt = typer.Option(None, "--store", help="SQLAlchemy URL or SQLite file [default: mnistlab.db beside the study, "
                                             "or $MNISTLAB_STORE, or ./mnistlab.db]")


ModelOpt = typer.Option(None, "--model", help="Only this model's runs: its name or a glob such as 'model 3*' "
                                              "(repeatable) [default: every model].")
YesOpt = typer.Option(False, "--yes", "-y", help="Accept a study of more than 10,000 runs (refused otherwise, "
                                                "as a likely typo in a sweep).")


def main() -> None:
    """Console entry point. Exit status: 0 done; 1 some runs failed, diverged or are damaged; 2 bad
    input (library errors become one red line); 130 interrupted."""
    global _interrupt_said, _argv
    _interrupt_said, _argv = False, sys.argv[1:]
    try:
        code = app(standalone_mode=False)  # returns a command's typer.Exit code (typer's 130 on Ctrl-C)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
    except (typer.Abort, KeyboardInterrupt):
        code = 130
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
    finally:  # only the command line being run may be restarted
        _argv = None
    code = code if isinstance(code, int) else 0
    if code == 130 and not _interrupt_said:
        err.print("[yellow]interrupted[/yellow]", highlight=False)
    raise SystemExit(code)


_interrupt_said = False  # `run` says what was kept itself
_argv: Optional[list[str]] = None  # the command line, when main() parsed it (`run --background` restarts it)


def _store(url: Optional[str], study_path: Optional[Path] = None, read_only: bool = True):
    """The store named by --store, $MNISTLAB_STORE, or beside the study; ``read_only``: must exist, no writes."""
    from .store import Store  # not through api: reading the store needs no torch
    url = url or os.environ.get("MNISTLAB_STORE")
    if study_path is not None and study_path.suffix == ".toml":
        return Store.for_study(study_path, url, read_only=read_only)
    return Store(url or "mnistlab.db", read_only=read_only)


def _study_name(study: str) -> str:
    """A study argument is a file (its ``name`` is read) or a name already in the store."""
    path = Path(study)
    if path.suffix == ".toml":
        from .spec import load_study  # parsed and validated; its calls are checked only by `run`
        return load_study(path).name
    return study


@app.command()
def run(study: Path = typer.Argument(..., help="Study file (TOML)."), store: Optional[str] = StoreOpt,
        models: Optional[list[str]] = ModelOpt,
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Train failed, diverged and damaged runs again."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress; only the table."),
        group: bool = typer.Option(True, "--group/--no-group", help="Train same-shape runs together as one "
                                                                   "vectorised group (default) or one by one."),
        table: bool = typer.Option(True, "--table/--no-table", help="Print the comparison table at the end."),
        workers: int = typer.Option(1, "--workers", "-j", help="Local worker processes sharing the store "
                                                                "(each with cores/N threads); 1 trains here."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads of each training process "
                                              "(default: all cores; with --workers N, cores/N)."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Start even above 10,000 runs or 24 hours of estimated "
                                                             "training (refused otherwise)."),
        executor: Optional[str] = typer.Option(None, "--executor", help="inline, processes or ray "
                                               "(default: inline; processes with --workers N)"),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto (one started with "
                                              "`ray start --head` here) or HOST:PORT (default: $RAY_ADDRESS, "
                                              "else a local cluster for this run)"),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda (default: the study's "
                                             "[train] device; auto: a CUDA GPU when there is one)"),
        precision: Optional[str] = typer.Option(None, "--precision", help="fp32 or bf16 (autocast, fp32 weights; "
                                                "default: the study's [train] precision, fp32)"),
        background: bool = typer.Option(False, "--background", help="Train at the lowest CPU priority, your other "
                                        "work first (nice 19 in a session of its own, OMP_WAIT_POLICY=PASSIVE).")):
    """Train every run of STUDY not done yet, then print the comparison table."""
    if background:  # this process restarts the command at low priority and waits: the child says everything
        from .processes import background as restarted
        if (code := restarted(_argv)) is not None:
            global _interrupt_said
            _interrupt_said = True
            raise typer.Exit(code)
    from .api import EngineOptions, RunOptions, load_study, plan as plan_api, run as run_api
    spec = load_study(study, yes=yes)
    executor = executor or ("processes" if workers > 1 else "inline")  # bad options fail before the plan
    options = RunOptions(retry_failed=retry_failed, group=group, workers=workers, executor=executor, address=address,
                         models=models or ())
    engine = EngineOptions.from_environment(settings=spec.train, device=device, precision=precision, threads=threads)
    engine.check_available()
    db = _store(store, study, read_only=False)
    estimate = plan_api(spec, db, group=group, retry_failed=retry_failed,
                        workers=workers if executor == "processes" else 1, threads=threads, models=options.models)
    if not quiet:
        err.print(escape(estimate.line()), highlight=False, soft_wrap=True)
    if estimate.over_limit() and not yes:
        raise UsageError(f"{estimate.over_limit()}: pass --yes to start it (`mnistlab plan` shows the estimate)")
    reporter = _reporter(quiet or executor == "processes")
    if executor != "inline" and not quiet:
        cluster = address or os.environ.get("RAY_ADDRESS") or "a local cluster"
        where = f"{workers} worker processes" if executor == "processes" else f"Ray ({cluster})"
        err.print(f"training in {where}…", highlight=False, markup=False)
    try:
        outcome = run_api(spec, db, reporter, options, engine)
    except KeyboardInterrupt:
        reporter.close()
        if table:
            print_table(db, spec.name)
        _say_interrupted(db, spec.name)
        raise typer.Exit(130)
    finally:
        reporter.close()
    if not quiet:
        say_outcome(outcome, db.where)
    if table:
        print_table(db, spec.name)
    unfinished = {r["status"] for r in db.runs(study=spec.name)} & {"failed", "diverged", "damaged"}
    if unfinished or outcome.failed or outcome.diverged:
        if not quiet:
            err.print(f"some runs are {', '.join(sorted(unfinished))}: exit status 1; "
                      "`mnistlab run --retry-failed` trains them again", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _say_interrupted(db, name: str) -> None:
    """One line: what the store kept, and the command that resumes."""
    global _interrupt_said
    runs, kept = db.runs(study=name), db.resumable(name)
    done = sum(r["status"] == "done" for r in runs)
    partial = ", ".join(f"{r['id'][:8]} after epoch {r['epochs_done']}/{r['spec']['epochs']}" for r in kept[:4])
    partial += f" and {len(kept) - 4} more" if len(kept) > 4 else ""
    err.print(f"interrupted: {done} of {len(runs)} runs done and kept"
              + (f"; kept at their last finished epoch: {partial}" if kept else "")
              + "; run the same command again to resume", highlight=False, markup=False, soft_wrap=True)
    _interrupt_said = True


@app.command()
def summary(study: Path = typer.Argument(..., help="Study file (TOML)."), yes: bool = YesOpt):
    """Print a Keras-style summary of every model in STUDY (layers, output shapes, parameters)."""
    from .api import load_study, summaries
    for label, text in summaries(load_study(study, yes=yes)):
        out.print(f"[bold]{escape(label)}[/bold]")
        out.print(text, highlight=False, markup=False)
        out.print()


@app.command("ls")
def ls(study: Optional[str] = typer.Argument(None, help="Study file or name: list its runs."),
       store: Optional[str] = StoreOpt):
    """List studies (with run counts by status), or the runs of one study."""
    from .store import shown_status  # "interrupted": left running by a process that is gone
    db = _store(store, Path(study) if study else None)
    if study is None:
        headers = ["study", "runs", "status", "updated", "file"]
        rows = [[s["name"], str(sum(s["counts"].values())),
                 ", ".join(f"{n} {k}" for k, n in sorted(s["counts"].items())),
                 f"{s['updated']:%Y-%m-%d %H:%M}", s["path"] or ""] for s in db.studies()]
    else:
        headers = ["model", "run", "repeat", "status", "epochs", "test acc", "seconds"]
        rows = [[r["model"] + (f" [{r['point']}]" if r["point"] else ""), r["id"][:8], str(r["repeat"]),
                 shown_status(r), f"{r['epochs_done']}/{r['spec']['epochs']}",
                 f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "—",
                 f"{r['seconds']:.1f}" if r["seconds"] is not None else "—"] for r in db.runs(study=_study_name(study))]
    table = Table()
    for head in headers:  # too wide for the terminal (or 80 columns off one): fold, never cut to `seed000-mlp-de…`
        table.add_column(head, overflow="fold")
    for row in rows:
        table.add_row(*map(escape, row))
    out.print(table)


@app.command()
def show(run_id: str = typer.Argument(..., help="Run id or an unambiguous prefix (as `ls` shows)."),
         store: Optional[str] = StoreOpt):
    """Show one run: its spec, its history epoch by epoch, its final metrics."""
    from .store import shown_status
    db = _store(store)
    run = db.runs(ids=[full := db.resolve(run_id)], current=False)[0]
    spec = run["spec"]
    point = f" [{run['point']}]" if run["point"] else ""  # as `ls` and `table` label a grid point
    out.print(f"[bold]run {full}[/bold]  {escape(run['model'] + point)}  status: {escape(shown_status(run))}")
    for key in ("dataset", "epochs", "batch_size", "optimizer", "loss", "validation", "callbacks", "seed",
                "train_size", "test_size"):
        if key != "callbacks" or spec.get(key):
            out.print(f"  {key}: {spec.get(key)}", highlight=False, markup=False)
    out.print("  layers:")
    for layer in spec["layers"]:
        out.print(f"    {layer}", highlight=False, markup=False)
    history = Table("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
    rates = db.load_json(full, "lr") or []
    for i, row in enumerate(db.history(full)):
        history.add_row(str(row["epoch"]), *(f"{row[k]:.4f}" if row[k] is not None else "—"
                                             for k in ("loss", "accuracy", "val_loss", "val_accuracy")),
                        f"{rates[i]:.4g}" if i < len(rates) and rates[i] is not None else "—", f"{row['seconds']:.2f}")
    out.print(history)
    for key in ("params", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"):
        if run[key] is not None:
            out.print(f"  {key}: {run[key]:,}" if key == "params" else f"  {key}: {run[key]:.4f}")
    for line in environment_lines(run["environment"] or {}, run["epochs_done"] or spec["epochs"]):
        out.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if run["error"]:
        out.print(f"  [red]error:[/red] {escape(run['error'])}", highlight=False)
    if run["damage"]:
        out.print(f"  [red]damaged:[/red] {escape(run['damage'])}; `mnistlab run --retry-failed` retrains it",
                  highlight=False, soft_wrap=True)


@app.command("table")
def table_cmd(study: str = typer.Argument(..., help="Study file or a study name in the store."),
              store: Optional[str] = StoreOpt,
              fmt: str = typer.Option("text", "--format", "-f", help="text, markdown, csv or json")):
    """Print the comparison table of STUDY from the store (repeats as mean ± std (n))."""
    from .report.table import comparison, render
    db = _store(store, Path(study))
    name = _study_name(study)
    if db.study(name) is None:
        raise UsageError(f"study {name!r} is not in {db.where}; run it first (mnistlab run STUDY.toml)")
    if fmt == "text":
        print_table(db, name)
    elif fmt in ("markdown", "csv", "json"):
        print(render(comparison(db, name), fmt))
    else:
        raise UsageError(f"--format {fmt!r} is unknown; use text, markdown, csv or json")


@app.command()
def compare(study: str = typer.Argument(..., help="Study file or a study name in the store."),
            baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="Model name or table label "
                                                   "to compare against [default: the first]."),
            metric: str = typer.Option("test_accuracy", "--metric", "-m", help="test_accuracy, test_loss, "
                                       "train_accuracy, train_loss or seconds."),
            fmt: str = typer.Option("text", "--format", "-f", help="text, markdown or json"),
            store: Optional[str] = StoreOpt):
    """Which differences are real: each configuration against a baseline, paired by seed, and the factor
    effects of sweeps (docs/STATISTICS.md)."""
    from .report.compare import FACTOR_HEADERS, compare as compare_study, factor_cells, headline, render, text_block
    if fmt not in ("text", "markdown", "json"):
        raise UsageError(f"--format {fmt!r} is unknown; use text, markdown or json")
    result = compare_study(_store(store, Path(study)), _study_name(study), baseline=baseline, metric=metric)
    if fmt != "text":
        print(render(result, fmt))
        return
    out.print(escape(headline(result)) + ":", highlight=False, soft_wrap=True)
    for c in result.comparisons:
        numbers, verdict = text_block(c)
        colour = {"better": "green", "worse": "red"}.get(c.verdict, "yellow")
        out.print(f"\n{escape(numbers)}\n    [bold {colour}]{escape(verdict)}[/bold {colour}]", highlight=False,
                  soft_wrap=True)
    for note in [f"{c.label}: {n}" for c in result.comparisons for n in c.notes] + result.notes:
        out.print(f"\nnote: {escape(note)}", highlight=False, soft_wrap=True)
    for f in result.factors:
        factors = Table(*FACTOR_HEADERS, title=f"\nfactor effects of {escape(f.model)} ({f.n} runs)")
        for term in f.terms:
            factors.add_row(*(escape(cell) for cell in factor_cells(term)))
        out.print(factors)


@app.command()
def plan(study: Path = typer.Argument(..., help="Study file (TOML)."), store: Optional[str] = StoreOpt,
         group: bool = typer.Option(True, "--group/--no-group", help="Plan same-shape runs as groups (as `run`)."),
         retry_failed: bool = typer.Option(False, "--retry-failed", help="Count failed and diverged runs as to train."),
         workers: int = typer.Option(1, "--workers", "-j", help="Local worker processes (as `run -j N`)."),
         models: Optional[list[str]] = ModelOpt):
    """What STUDY will cost before anything trains: runs, groups, multiply-adds, time and memory."""
    from .api import load_study, plan as plan_api
    from .errors import NoStore
    try:
        db = _store(store, study)
    except NoStore:  # never run yet: nothing done, nothing measured
        from .store import Store
        db = Store("sqlite:///:memory:")
    estimate = plan_api(load_study(study), db, group=group, retry_failed=retry_failed, workers=workers,
                        models=tuple(models or ()))
    rows = [[group_label(g.labels, g.resumes_after), str(g.runs), f"{g.macs_per_image:,}", f"{g.macs_per_run:.3g}",
             duration(g.seconds_per_run), g.source, f"{g.peak_bytes / 2**20:,.0f}"] for g in estimate.groups]
    table = fitted_table(["group", "runs", "MACs/image", "MACs/run", "time/run", "from", "peak MiB"], rows,
                         out.width, title=f"plan of {escape(estimate.study)}")  # labels fold, nothing is cut
    for row in rows:
        table.add_row(*map(escape, row))
    if estimate.groups:
        out.print(table)
    out.print(escape(estimate.line()), highlight=False, soft_wrap=True)


@app.command()
def report(study: str = typer.Argument(..., help="Study file or a study name in the store."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file [default: STUDY-report.html]"),
           png: Optional[Path] = typer.Option(None, "--png", help="Also write each figure as a PNG into this folder."),
           store: Optional[str] = StoreOpt):
    """Write a self-contained HTML report of STUDY (works offline), optionally PNG figures."""
    from .api import class_names
    from .report.html import write_report
    db = _store(store, Path(study))
    name = _study_name(study)
    target = output or Path(f"{Path(study).stem if study.endswith('.toml') else name}-report.html")
    path = write_report(db, name, target, png_dir=png, classes=class_names())
    out.print(f"report: {path}", highlight=False, markup=False)


@app.command()
def predict(run_id: str = typer.Argument(..., help="Run id or an unambiguous prefix."),
            images: list[Path] = typer.Argument(..., help="Digits as .png or .npy, up to 4096x4096, resized to "
                                                          "28x28 (white on black, or dark on light, which is "
                                                          "inverted)."),
            store: Optional[str] = StoreOpt):
    """Classify images with a trained run: the predicted digit and its probability."""
    from .api import predict as predict_api
    for row in predict_api(_store(store), run_id, list(images)):
        print(f"{row['file']}: {row['predicted']} ({row['confidence']:.1%})")  # one line per image, unwrapped


@app.command()
def export(run_id: str = typer.Argument(..., help="Run id or an unambiguous prefix."),
           output: Path = typer.Option(Path("export"), "-o", "--output", help="Folder to write into."),
           fmt: str = typer.Option("safetensors", "--format", "-f",
                                   help="safetensors (weights) or onnx (the model as an ONNX graph, "
                                        "needs pip install 'mnistlab\\[onnx]')."),
           force: bool = typer.Option(False, "--force", help="Write into a folder that already holds files, "
                                                            "overwriting an earlier export there."),
           store: Optional[str] = StoreOpt):
    """Write a run's weights (safetensors or ONNX), spec (JSON) and history (CSV) into a folder."""
    from .api import export as export_api
    for path in export_api(_store(store), run_id, output, format=fmt, force=force):
        print(path)


@data_app.command("fetch")
def data_fetch(name: Optional[str] = typer.Argument(None, help="mnist (default) or fashion_mnist."),
               dataset: Optional[str] = typer.Option(None, "--dataset", help="The same as NAME."),
               force: bool = typer.Option(False, "--force")):
    """Download (or unpack the offline copy of) a dataset into the cache, checking its SHA-256."""
    from .api import fetch_data
    if name and dataset and name != dataset:
        raise UsageError(f"two datasets named: {name!r} and --dataset {dataset!r}; give one")
    name = name or dataset or "mnist"
    started = time.perf_counter()
    path = fetch_data(name, force=force)
    out.print(f"{escape(name)}: {path} ({time.perf_counter() - started:.1f} s)", highlight=False)


@data_app.command("info")
def data_info(name: Optional[str] = typer.Argument(None, help="One dataset [default: every one]."),
              dataset: Optional[str] = typer.Option(None, "--dataset", help="The same as NAME.")):
    """Where each dataset is cached, its shapes, class names and counts, and its sources."""
    from .api import class_names, data_info, dataset_names
    for i, each in enumerate([name or dataset] if name or dataset else dataset_names()):
        if i:
            out.print()
        info = data_info(each)
        for key, value in {**info, "classes": ", ".join(class_names().get(info["name"], []))}.items():
            out.print(f"{key}: {escape(str(value))}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
