"""Sweep summaries and dwn-report: one row per configuration, seeds pooled, failures listed."""

import csv
import json
import subprocess

import pytest

from dwn_train.report import collect, main, summarise
from conftest import SMALL


def _job(folder, overrides, test_accs, val_accs=None, failed=None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if failed:
        (folder / "failed.json").write_text(json.dumps({"exit_code": 2, "error": failed}))
        return
    rows = [{"epoch": e + 1, "test_acc": t, "val_acc": None if val_accs is None else val_accs[e], "seconds": 2.0}
            for e, t in enumerate(test_accs)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    _job(root / "0", ["optimizer.lr=0.01", "trainer.seed=0", "dataset=digits"], [0.5, 0.8], [0.6, 0.7])
    # seed 1 was resumed with more threads and its data elsewhere: still the same configuration
    _job(root / "1", ["optimizer.lr=0.01", "trainer.seed=1", "dataset=digits", "trainer.threads=2",
                      "trainer.resume=auto", "dataset.root=/data"], [0.7, 0.6], [0.9, 0.5])
    _job(root / "2", ["optimizer.lr=0.1", "trainer.seed=0", "dataset=digits"], [0.9, 0.95], [0.8, 0.85])
    _job(root / "3", ["optimizer.lr=0.1", "trainer.seed=1", "dataset=digits"], [], failed="model.layers[0].n ...")
    return root


def test_summary_pools_seeds_and_selects_on_validation_only(sweep):
    table, failed = summarise(collect([sweep]))
    rows = {row["config"]: row for row in table}
    assert set(rows) == {"optimizer.lr=0.01", "optimizer.lr=0.1"}  # dataset=digits is common to all
    low = rows["optimizer.lr=0.01"]
    assert low["n"] == 2 and low["test_acc_mean"] == pytest.approx(0.7) and low["test_acc_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert (low["test_acc_min"], low["test_acc_max"]) == (0.6, 0.8)
    # best validation: seed 0 at epoch 2 (test 0.8), seed 1 at epoch 1 (test 0.7)
    assert low["best_val_test_acc_mean"] == pytest.approx(0.75) and low["best_val_epoch_mean"] == 1.5
    one = rows["optimizer.lr=0.1"]
    assert one["n"] == 1  # the failed seed is listed, not averaged
    assert one["test_acc_sd"] is None and one["best_val_test_acc_sd"] is None  # one seed: no spread, not "± 0"
    assert [job.folder.name for job in failed] == ["3"]


def test_dwn_report_writes_the_files(sweep, tmp_path, capsys):
    main([str(sweep), "--out", str(tmp_path / "report")])
    out = tmp_path / "report"
    with (out / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["config"] for r in rows] == ["optimizer.lr=0.01", "optimizer.lr=0.1"]
    assert rows[1]["test_acc_sd"] == ""
    text = (out / "summary.md").read_text()
    assert "Failed:" in text and "70.00 ± 14.14" in text and "| 95.00 | 95.00–95.00 |" in text
    assert (out / "curves.png").stat().st_size > 1000
    assert "optimizer.lr=0.01" in capsys.readouterr().out


def test_dwn_report_refuses_a_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nope")])
    assert exit_.value.code == 2 and "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_every_sweep_ends_with_a_summary_even_with_a_failed_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(["dwn-train", "-m", *SMALL, "trainer.threads=1", "model.layers.0.out_features=60",
                             "model.layers.1.out_features=30", "trainer.epochs=1", "trainer.seed=0,1",
                             "model.layers.1.n=0,4", f"hydra.sweep.dir={sweep}"], capture_output=True, text=True)
    assert result.returncode == 2 and "2 of 4 sweep jobs failed" in result.stderr
    with (sweep / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["config"], r["n"]) for r in rows] == [("model.layers.1.n=4", "2")]
    assert (sweep / "summary.md").read_text().count("Failed:") == 2


@pytest.mark.slow
def test_an_optuna_study_maximises_the_returned_validation_accuracy(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    sweep = tmp_path / "study"
    subprocess.run(["dwn-train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                    "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0", "optimizer.lr=interval(0.001,0.05)",
                    *SMALL, "trainer.threads=1", "model.layers.0.out_features=60", "model.layers.1.out_features=30",
                    "trainer.epochs=2", "trainer.val_fraction=0.1", f"hydra.sweep.dir={sweep}"],
                   check=True, capture_output=True, text=True)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    jobs = [json.loads(line) for job in sweep.glob("[0-9]*") for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert len(list(sweep.glob("[0-9]*"))) == 4
    assert best["best_value"] == pytest.approx(max(row["val_acc"] for row in jobs))  # validation, not test
    with (sweep / "summary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
