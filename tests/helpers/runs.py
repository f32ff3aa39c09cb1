"""Run helpers: the settings of the small digits runs, the console scripts as subprocesses, a run
folder's metric rows, and the check every user-error test makes."""

from __future__ import annotations

import os

# a fast model for the small data sets used in tests
SMALL = ["dataset=digits", "model=digits_small", "model.layers.0.out_features=300", "model.layers.1.out_features=200",
         "trainer.batch_size=64", "trainer.plot=false"]
# smaller still: two epochs of 60 -> 30 LUTs, for the tests that need a run to exist
TINY = [*SMALL, "model.layers.0.out_features=60", "model.layers.1.out_features=30", "trainer.epochs=2"]
# one-epoch jobs of one thread each: a sweep of them runs in seconds
ONE_EPOCH = [*SMALL, "trainer.threads=1", "model.layers.0.out_features=60", "model.layers.1.out_features=30",
             "trainer.epochs=1"]
# the console scripts print as they go, so a test that stops one early still reads its output
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def train_cmd(*overrides, flags=()) -> list[str]:
    """dwn-train on the SMALL digits run, one thread, with `overrides` (and Hydra `flags` first)."""
    return ["dwn-train", *flags, *SMALL, "trainer.threads=1", *overrides]


def metric_rows(run_dir) -> list[dict]:
    """The metric rows of a run folder, read as dwn-train and dwn-report read them (every line a row)."""
    from dwn_train.metrics import read_rows
    from dwn_train.run.folder import RunFolder

    found, bad = read_rows(RunFolder(run_dir).metrics)
    assert bad == 0, f"{bad} line(s) of {run_dir}/metrics.jsonl are not metric rows"
    return found


def clean(code, out, err, want_code, words):
    """A command ended with `want_code`, said `words`, and showed no traceback."""
    assert code == want_code, (code, out, err)
    assert words in out + err, out + err
    assert "Traceback" not in out + err
