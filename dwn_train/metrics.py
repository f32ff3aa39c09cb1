"""Per-epoch records of a run: metrics.jsonl, metrics.csv, curves.png, TensorBoard (paths: run/folder.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .console import log
from .errors import DWNError, is_int, is_number

COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "lr", "samples_per_s", "seconds")


def read_rows(path: Path) -> tuple[list[dict], int]:
    """(the metric rows of a metrics.jsonl, how many of its lines were not one): a row is a JSON
    object with an integer `epoch` >= 1 whose other known columns are numbers or null. A line cut
    short by a killed write, or bytes that are not UTF-8, are counted, not raised."""
    rows, bad = [], 0
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if _is_row(row):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _is_row(row) -> bool:
    return (isinstance(row, dict) and is_int(row.get("epoch")) and row["epoch"] >= 1
            and all(row.get(k) is None or is_number(row[k]) for k in COLUMNS))


class MetricsLog:
    """Appends one row per epoch to `jsonl` and `csv` (a run folder's metrics.jsonl and .csv), and
    to TensorBoard events in the folder `tensorboard` when one is given.

    `keep_through(epoch)` drops rows after `epoch` (a resumed run redoes them), so resuming into
    the same folder never duplicates an epoch.
    """

    def __init__(self, jsonl: Path, csv: Path, tensorboard: Path | None = None, enabled: bool = True):
        self.jsonl, self.csv = jsonl, csv
        self.rows: list[dict] = []
        self.writer = None
        self.enabled = enabled  # False on DDP ranks other than 0: keep nothing, write nothing
        if tensorboard is not None and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise DWNError("logger=tensorboard needs the tensorboard package: pip install tensorboard.") from exc
            self.writer = SummaryWriter(log_dir=str(tensorboard))

    def keep_through(self, epoch: int) -> None:
        if not self.enabled:
            return
        rows, bad = read_rows(self.jsonl) if self.jsonl.is_file() else ([], 0)
        if bad:
            log.warning("%s: %d line(s) that are not metric rows (a write cut short?) are dropped", self.jsonl, bad)
        self.rows = [row for row in rows if row["epoch"] <= epoch]
        self._rewrite()

    def append(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        with self.jsonl.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        new_file = not self.csv.is_file()
        with self.csv.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow({k: row.get(k) for k in COLUMNS})
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def _rewrite(self) -> None:
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        with self.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: r.get(k) for k in COLUMNS} for r in self.rows)

    def plot(self, path: Path) -> None:
        """Loss and accuracy per epoch, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.rows]
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
        loss_ax.plot(epochs, [r["train_loss"] for r in self.rows], marker="o", label="train")
        loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
        for key in ("train_acc", "val_acc", "test_acc"):
            points = [(r["epoch"], r[key]) for r in self.rows if r.get(key) is not None]
            if points:
                acc_ax.plot(*zip(*points), marker="o", label=key.removesuffix("_acc"))
        acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
