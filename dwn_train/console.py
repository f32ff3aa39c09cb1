"""Presentation only: the config tree, per-epoch progress and the final tables (rich)."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

log = logging.getLogger("dwn_train")
# Off a terminal (logs, CI, files) rich would wrap at 80 columns and cut long cells with "...":
# a wide console and folding cells keep every path whole.
console = Console() if sys.stdout.isatty() else Console(width=200)


# off a terminal (nohup, SLURM logs, CI) an epoch logs a progress line this often, in seconds
PROGRESS_EVERY = 30.0


def interactive() -> bool:
    return sys.stdout.isatty()


def model_summary(model) -> str:
    """One line: the LUT layers (width, n, wiring), the head, LUTs and parameters."""
    from .layers import LUTLayer

    layers = [m for m in model.modules() if isinstance(m, LUTLayer)]
    shown = ", ".join(f"{m.out_features} x LUT-{m.n} ({'learnable' if m.learnable else 'fixed'})"
                      for m in model if isinstance(m, LUTLayer))
    head = type(list(model)[-1]).__name__
    params = sum(p.numel() for p in model.parameters())
    return (f"model: {layers[0].in_features} inputs -> {shown} -> {head}; {sum(m.out_features for m in layers):,} "
            f"LUTs, {params:,} parameters")


@contextmanager
def phase(what: str):
    """A step of a command that can take long (an export's freezing, writing, synthesis): a line
    when it starts and one with its time when it ends, so no wait is silent."""
    start = time.perf_counter()
    log.info("%s ...", what)
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - start)


@contextmanager
def epoch_progress(epoch: int, epochs: int, batches: int, enabled: bool = True, samples: int = 0):
    """Yields update(done, loss, acc, samples_per_s) (done: batches of `batches`; samples: the
    epoch's sample count); a live bar on a terminal, otherwise a log line every PROGRESS_EVERY
    seconds (samples done, samples/s, time left), so that a long epoch is never silent."""
    if not enabled:
        yield lambda *args: None
        return
    if not interactive():
        yield _progress_lines(epoch, epochs, batches, samples)
        return
    columns = (TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[stats]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("train", total=batches, stats="")

        def update(done, loss, acc, rate):
            progress.update(task, completed=done, stats=f"loss {loss:.4f}  acc {acc:.4f}  {rate:,.0f} samples/s")

        yield update


def _progress_lines(epoch: int, epochs: int, batches: int, samples: int):
    """update() for a log file: one line at a steady cadence (none for an epoch shorter than it)."""
    last = time.monotonic()

    def update(done, loss, acc, rate):
        nonlocal last
        if time.monotonic() - last < PROGRESS_EVERY or done >= batches:
            return
        last = time.monotonic()
        seen = round(samples * done / batches)
        left = (samples - seen) / rate if rate > 0 else float("nan")
        log.info(f"epoch {epoch}/{epochs}: {seen:,}/{samples:,} samples ({100 * done / batches:.0f} %)  loss "
                 f"{loss:.4f}  acc {acc:.4f}  {rate:,.0f} samples/s  about {left:,.0f} s left in this epoch")

    return update


def epoch_line(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4f}", f"train_acc {row['train_acc']:.4f}"]
    parts += [f"{k} {row[k]:.4f}" for k in ("val_acc", "test_acc") if row.get(k) is not None]
    parts += [f"lr {row['lr']:.3g}", f"{row['samples_per_s']:,.0f} samples/s", f"{row['seconds']:.1f} s"]
    return "  ".join(parts)


def summary_table(title: str, items: dict) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right", overflow="fold")
    for key, value in items.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def class_table(per_class: list[dict], confusion) -> None:
    table = Table(title="per class")
    for name in ("class", "label", "support", "precision", "recall", "f1"):
        table.add_column(name, justify="right")
    for row in per_class:
        table.add_row(str(row["class"]), str(row.get("name", row["class"])), str(row["support"]),
                      *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1")))
    console.print(table)
    matrix = Table(title="confusion matrix (rows: label, columns: prediction)")
    matrix.add_column("")
    for c in range(len(confusion)):
        matrix.add_column(str(c), justify="right")
    for c, row in enumerate(confusion):
        matrix.add_row(str(c), *(str(int(v)) for v in row))
    console.print(matrix)
