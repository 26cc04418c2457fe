"""What the `mnistlab` command shows while it works: a rich progress reporter for the runner, and
tables that fold to the terminal's width. Every text a user wrote is printed escaped."""

from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .wording import counted

out = Console()
err = Console(stderr=True)


LABEL_MIN = 16  # columns the first cell (model [grid point]) keeps before the numbers give up theirs


def fitted_table(headers: list[str], texts: list[list[str]], width: int, **options) -> Table:
    """A rich table that fits ``width`` columns (a narrow terminal, or 80 when piped): the first column
    folds onto more lines instead of being cut to `mnist_…`; the others give up width in steps (headers
    on two lines, then numbers wrapped at their spaces) and never cut a number; where the first column
    would still get less than ``LABEL_MIN``, the borders go, then headers fold too. The caller adds the
    rows (``texts``, plain text, for measuring).
    """
    columns = [[head, *(row[i] for row in texts)] for i, head in enumerate(headers)]
    cells = [[cell_len(t) for t in col[1:]] for col in columns]
    words = [[cell_len(w) for t in col[1:] for w in t.split()] for col in columns]
    head_words = [max(map(cell_len, col[0].split())) for col in columns]
    steps = [[max(c + [cell_len(col[0])]) for c, col in zip(cells, columns)],  # every cell on one line
             [max(c + [h]) for c, h in zip(cells, head_words)],  # headers on two lines
             [max(w + [h]) for w, h in zip(words, head_words)],  # numbers wrapped at spaces
             [max(w + [1]) for w in words]]  # headers folded too (no borders only)
    label = min(steps[0][0], LABEL_MIN)
    for boxed, overhead in ((True, 3 * len(columns) + 1), (False, len(columns) - 1)):  # borders, padding
        room = width - overhead
        numbers = steps[0][1:]
        for floors in steps[1:3]:
            numbers = _shrink(numbers, floors[1:], room - label)
        if room - sum(numbers) >= label or not boxed:
            break
    if not boxed:
        numbers = _shrink(numbers, steps[3][1:], room - label)
    table = Table(**({} if boxed else {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": 0}), **options)
    fits = sum(steps[0]) <= room
    for i, head in enumerate(headers):
        fixed = None if fits else (max(room - sum(numbers), 1) if i == 0 else numbers[i - 1])
        table.add_column(head, overflow="fold", no_wrap=False, width=fixed)
    return table


def _shrink(widths: list[int], floors: list[int], budget: int) -> list[int]:
    """Narrow the columns with the most room above their longest word, a character at a time, to ``budget``."""
    widths = list(widths)
    while sum(widths) > budget:
        slack = [w - f for w, f in zip(widths, floors)]
        i = max(range(len(widths)), key=slack.__getitem__)
        if slack[i] <= 0:
            break
        widths[i] -= 1
    return widths


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
            err.print(f"{counted(total, 'run')}, {done} done already", highlight=False)

    def run_started(self, specs, resumed_from: int) -> None:
        self.specs, self.spec = specs, specs[0]
        label = self.spec.label + (f" r{self.spec.repeat}" if len(specs) == 1 else f" +{len(specs) - 1} grouped")
        self.label = label
        note = f" (resuming after epoch {resumed_from})" if resumed_from else ""
        if self.progress:
            self.progress.update(self.run, description=f"{escape(label)} epoch {resumed_from + 1}/{self.spec.epochs}",
                                 completed=0, total=1, info="", visible=True)
        elif not self.quiet:
            ids = ", ".join(s.id[:8] for s in specs)
            err.print(f"{'group' if len(specs) > 1 else 'run'} {ids}: {label}{note}", highlight=False, markup=False)

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
                self.progress.update(self.run, description=f"{escape(self.label)} epoch {row['epoch'] + 1}/{spec.epochs}")
        elif not self.quiet:
            err.print(f"  {line}", highlight=False, markup=False)

    def run_finished(self, spec, status: str, detail: str) -> None:
        colour = {"done": "green", "diverged": "yellow"}.get(status, "red")
        if self.progress:
            self.progress.advance(self.study)
            self.progress.console.print(f"[{colour}]{status}[/{colour}] {escape(spec.label)}: {escape(detail)}",
                                        highlight=False)
        elif not self.quiet:
            err.print(f"{status} {spec.label}: {detail}", highlight=False, markup=False)

    def note(self, text: str) -> None:
        console = self.progress.console if self.progress else err
        console.print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None


def say_outcome(outcome, where: str) -> None:
    """The line `run` ends with: what this call did to the study's runs, and the store."""
    again = f", resubmitted {len(outcome.resubmitted)}" if outcome.resubmitted else ""
    err.print(f"trained {len(outcome.trained)}, resumed {len(outcome.resumed)}, skipped {len(outcome.skipped)}"
              f" (done or taken), diverged {len(outcome.diverged)}, failed {len(outcome.failed)}{again}; "
              f"store: {escape(where)}", highlight=False, soft_wrap=True)


def make_reporter(quiet: bool) -> _Reporter:
    return _Reporter(quiet)


def print_table(db, study: str) -> None:
    """The comparison table of ``study`` in the store, the best figure of each column in bold green."""
    from .report.table import best, comparison, headers, text_cells
    rows = comparison(db, study)
    winners = best(rows)
    table = fitted_table(headers(rows), [text_cells(row) for row in rows], out.width, title=f"study {escape(study)}")
    metric_of = {2: "train_loss", 3: "train_accuracy", 4: "test_loss", 5: "test_accuracy"}
    for row in rows:
        cells = [escape(cell) for cell in text_cells(row)]  # labels hold [grid points]: not markup
        for col, metric in metric_of.items():
            if winners.get(metric) == row.label and len(rows) > 1:
                cells[col] = f"[bold green]{cells[col]}[/bold green]"
        table.add_row(*cells)
    out.print(table)
