"""Summaries of runs and sweeps: one row per configuration, its seeds pooled.

A configuration is a job's command-line overrides other than those that cannot change what is
learned (NOT_SETTINGS: the seed, threads, resuming, where the data lives, hydra.*).
For each, over its seeds: the final test accuracy (mean, sd, min, max), the test accuracy at the
epoch of best validation accuracy when the runs held out a validation split (the honest choice:
selected on validation only), that epoch, and the seconds per epoch. Failed jobs, and jobs whose
last row is short of their trainer.epochs (killed, or still running), are listed, not averaged.
Used at the end of every sweep (dwn_train/sweep.py) and by `dwn-report PATH...`.

    dwn-report outputs/train-multirun/<time> [more run or sweep folders] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from .metrics import read_rows
from .run.folder import RunFolder
from .run.sweep import job_order

COLUMNS = ("config", "n", "test_acc_mean", "test_acc_sd", "test_acc_min", "test_acc_max", "best_val_test_acc_mean",
           "best_val_test_acc_sd", "best_val_epoch_mean", "seconds_per_epoch", "jobs")


# Overrides that do not make another configuration: the seed (pooled), and what only changes how
# or where a run ran (a run resumed with more threads in its own folder is still the same run).
NOT_SETTINGS = ("trainer.seed=", "trainer.threads=", "trainer.resume=", "dataset.root=", "dataset.download=",
                "dataset.data_home=", "hydra.")


@dataclass
class Job:
    folder: Path
    overrides: list
    rows: list = field(default_factory=list)
    failed: str | None = None  # why, from failed.json
    exit_code: int = 0  # the failed job's exit status

    @property
    def settings(self) -> frozenset:
        """The overrides that define the configuration (not those in NOT_SETTINGS)."""
        return frozenset(o for o in self.overrides if not o.lstrip("+~").startswith(NOT_SETTINGS))

    config = ""  # the settings that tell it from the other jobs; set by summarise


def _job(folder: Path) -> Job | None:
    run = RunFolder(folder)
    failure = run.failure()
    if failure is None and not run.metrics.is_file():
        return None
    job = Job(folder, run.overrides())
    if failure is not None:
        job.exit_code, job.failed = failure
    else:
        job.rows, bad = read_rows(run.metrics)
        epochs, done = _planned_epochs(folder), job.rows[-1]["epoch"] if job.rows else 0
        if bad:  # listed, not averaged: its figures cannot all be read
            job.failed, job.exit_code = f"metrics.jsonl has {bad} unreadable line(s)", 1
        elif epochs is not None and done < epochs:  # killed, or still running: its last row is not a final one
            job.failed, job.exit_code = f"incomplete: {done} of {epochs} epochs (killed, or still running)", 1
    return job


def _planned_epochs(folder: Path):
    """trainer.epochs of the job's config (Hydra's .hydra/config.yaml), or None without one."""
    try:
        config = yaml.safe_load((RunFolder(folder).hydra / "config.yaml").read_text()) or {}
        return int(config["trainer"]["epochs"])
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return None


def collect(paths) -> list[Job]:
    """The jobs in `paths`: run folders themselves, or sweep folders holding one per job."""
    jobs, seen = [], set()

    def add(folder: Path) -> bool:
        job = _job(folder)
        if job is not None and folder.resolve() not in seen:  # a folder named twice counts once
            seen.add(folder.resolve())
            jobs.append(job)
        return job is not None

    for path in map(Path, paths):
        if add(path):
            continue
        for child in sorted(path.iterdir() if path.is_dir() else [], key=job_order):
            if child.is_dir():
                add(child)
    return jobs


def _stats(values: list) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None, None
    sd = statistics.stdev(values) if len(values) > 1 else None  # one seed has no spread to show
    return statistics.fmean(values), sd, min(values), max(values)


def _best_val(rows: list):
    """(epoch, test_acc) at the first epoch of highest val_acc, or (None, None) without one."""
    scored = [r for r in rows if r.get("val_acc") is not None]
    if not scored:
        return None, None
    best = max(scored, key=lambda r: r["val_acc"])  # max keeps the first of equal values
    return best["epoch"], best.get("test_acc")


def summarise(jobs: list[Job]) -> tuple[list[dict], list[Job]]:
    """(one row per configuration, the failed jobs). A configuration is named by the settings that
    differ between the jobs; those all jobs share are in common_settings(jobs)."""
    common = common_settings(jobs)
    for job in jobs:
        job.config = " ".join(sorted(job.settings - common)) or "(one configuration)"
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.failed is None and job.rows:
            groups.setdefault(job.config, []).append(job)
    table = []
    for config, members in groups.items():
        finals = [m.rows[-1].get("test_acc") for m in members]
        best = [_best_val(m.rows) for m in members]
        mean, sd, low, high = _stats(finals)
        best_mean, best_sd, _, _ = _stats([b[1] for b in best])
        epoch_mean = _stats([b[0] for b in best])[0]
        seconds = _stats([r["seconds"] for m in members for r in m.rows if r.get("seconds") is not None])[0]
        table.append({"config": config, "n": len(members), "test_acc_mean": mean, "test_acc_sd": sd,
                      "test_acc_min": low, "test_acc_max": high, "best_val_test_acc_mean": best_mean,
                      "best_val_test_acc_sd": best_sd, "best_val_epoch_mean": epoch_mean,
                      "seconds_per_epoch": seconds, "jobs": " ".join(str(m.folder) for m in members),
                      "_members": members})
    return table, [job for job in jobs if job.failed is not None]


def common_settings(jobs: list[Job]) -> frozenset:
    return frozenset.intersection(*(job.settings for job in jobs)) if jobs else frozenset()


def _pct(value, sd=None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + ("" if sd is None else f" ± {100 * sd:.2f}")


def _num(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_summary(table: list[dict], failed: list[Job], out: Path, common: str = "") -> list[Path]:
    """summary.csv (numbers as fractions) and summary.md (percentages) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    lines = [f"Settings of every job: {common or 'defaults'}. Final test accuracy of the last epoch; 'at best val' is "
             "the test accuracy at each run's epoch of highest validation accuracy.", "",
             "| configuration | n | final test acc % (mean ± sd) | min–max | test acc % at best val | best val epoch "
             "| s/epoch |", "|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['config']} | {row['n']} | {_pct(row['test_acc_mean'], row['test_acc_sd'])} | "
                     f"{_pct(row['test_acc_min'])}–{_pct(row['test_acc_max'])} | "
                     f"{_pct(row['best_val_test_acc_mean'], row['best_val_test_acc_sd'])} | "
                     f"{_num(row['best_val_epoch_mean'])} | {_num(row['seconds_per_epoch'])} |")
    for job in failed:
        lines.append(f"\nFailed: {job.folder} ({job.config}): {job.failed}")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return [out / "summary.csv", out / "summary.md"]


def print_table(table: list[dict], failed: list[Job], title: str) -> None:
    from rich.table import Table

    from .console import console

    shown = Table(title=title)
    for name in ("configuration", "n", "final test acc %", "min–max", "at best val %", "best epoch", "s/epoch"):
        shown.add_column(name, overflow="fold")
    for row in table:
        shown.add_row(row["config"], str(row["n"]), _pct(row["test_acc_mean"], row["test_acc_sd"]),
                      f"{_pct(row['test_acc_min'])}–{_pct(row['test_acc_max'])}",
                      _pct(row["best_val_test_acc_mean"], row["best_val_test_acc_sd"]),
                      _num(row["best_val_epoch_mean"]), _num(row["seconds_per_epoch"]))
    console.print(shown)
    for job in failed:
        console.print(f"failed: {job.folder} ({job.config}): {job.failed}")


def plot_curves(table: list[dict], path: Path) -> None:
    """Each configuration's mean test accuracy per epoch, with a band of ± one sd over its seeds."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in table:
        epochs = sorted({r["epoch"] for m in row["_members"] for r in m.rows if r.get("test_acc") is not None})
        means, sds = [], []
        for epoch in epochs:
            values = [r["test_acc"] for m in row["_members"] for r in m.rows
                      if r["epoch"] == epoch and r.get("test_acc") is not None]
            mean, sd, _, _ = _stats(values)
            means.append(100 * mean)
            sds.append(0.0 if sd is None else 100 * sd)  # an epoch only one seed reached: no band
        line, = axes.plot(epochs, means, label=f"{row['config']} (n={row['n']})")
        axes.fill_between(epochs, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                          color=line.get_color(), alpha=0.2)
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("test accuracy % (mean ± sd)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report(jobs: list[Job], out: Path, title: str, curves: bool = True) -> tuple[list[dict], list[Job]]:
    """Summarise `jobs` (from collect) into `out` (summary.csv, summary.md, and curves.png) and
    print the table; returns (the rows, the failed jobs)."""
    table, failed = summarise(jobs)
    common = " ".join(sorted(common_settings(jobs)))
    write_summary(table, failed, out, common)
    if curves and table:
        plot_curves(table, out / "curves.png")
    print_table(table, failed, f"{title}; every job: {common or 'defaults'}")
    return table, failed


def main(argv=None) -> None:
    """dwn-report PATH... [--out DIR]: the sweep summary for existing run or sweep folders."""
    parser = argparse.ArgumentParser(prog="dwn-report", description="Summarise dwn-train runs and sweeps: one row per "
                                     "configuration, mean ± sd over seeds, selection on validation only.")
    parser.add_argument("paths", nargs="+", help="run folders or sweep folders (outputs/train-multirun/<time>)")
    parser.add_argument("--out", default=None, help="where summary.csv, summary.md and curves.png go "
                        "(default: outputs/report/<time>)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).is_dir()]
    if missing:
        print(f"dwn-report: error: {', '.join(missing)} is not a folder; give run or sweep folders.", file=sys.stderr)
        sys.exit(2)
    out = Path(args.out or Path("outputs") / "report" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f"))
    if out.exists() and not out.is_dir():
        print(f"dwn-report: error: --out {out} is a file; give a folder for the summary files.", file=sys.stderr)
        sys.exit(2)
    jobs = [job for job in collect(args.paths) if job.rows or job.failed]
    if not jobs:  # nothing to summarise: no summary files either
        print(f"dwn-report: error: no runs found under {', '.join(args.paths)} (a run folder holds "
              "metrics.jsonl).", file=sys.stderr)
        sys.exit(2)
    try:
        table, failed = report(jobs, out, f"dwn-report ({len(args.paths)} folder(s))")
    except OSError as exc:
        print(f"dwn-report: error: {out}: {exc.strerror or exc}.", file=sys.stderr)
        sys.exit(1)
    print(f"dwn-report: wrote {out / 'summary.csv'}, {out / 'summary.md'}" +
          (f", {out / 'curves.png'}" if table else ""))


if __name__ == "__main__":
    main()
