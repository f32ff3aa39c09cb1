"""Sweep summaries and dwn-report: one row per configuration, seeds pooled, failures listed."""

import csv
import json
import subprocess

import pytest

from dwn_train.report import collect, main, summarise
from helpers.runs import ONE_EPOCH, SMALL


def _job(folder, overrides, test_accs, val_accs=None, failed=None, epochs=None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if epochs is not None:  # what Hydra writes: the job's whole config
        (folder / ".hydra" / "config.yaml").write_text(f"trainer:\n  epochs: {epochs}\n  seed: 0\n")
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


def test_unfinished_jobs_are_listed_not_averaged_and_a_folder_counts_once(sweep):
    # seed 2 was killed after one of its two epochs, seed 3 before its first: neither has a final accuracy
    _job(sweep / "4", ["optimizer.lr=0.01", "trainer.seed=2", "dataset=digits"], [0.1], [0.2], epochs=2)
    _job(sweep / "5", ["optimizer.lr=0.01", "trainer.seed=3", "dataset=digits"], [], epochs=2)
    _job(sweep / "6", ["optimizer.lr=0.01", "trainer.seed=4", "dataset=digits"], [0.4, 0.9], [0.3, 0.4], epochs=2)
    table, failed = summarise(collect([sweep, sweep / "0", sweep / "6"]))  # 0 and 6 named twice
    low = next(row for row in table if row["config"] == "optimizer.lr=0.01")
    assert low["n"] == 3 and low["test_acc_mean"] == pytest.approx((0.8 + 0.6 + 0.9) / 3)
    assert {job.folder.name: job.failed for job in failed if job.folder.name in "45"} == {
        "4": "incomplete: 1 of 2 epochs (killed, or still running)",
        "5": "incomplete: 0 of 2 epochs (killed, or still running)"}


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


def test_damaged_job_records_are_listed_not_tracebacks(sweep, tmp_path, capsys):
    """A metrics line cut short by a killed write, rows that are not metric rows, bytes that are not
    UTF-8, overrides that are not a YAML list, a failed.json with an odd exit code: each job is
    listed as failed (or read without its overrides), the others are summarised."""
    (sweep / "0" / "metrics.jsonl").write_bytes((sweep / "0" / "metrics.jsonl").read_bytes() + b'{"epoch": 3, "te')
    _job(sweep / "4", ["optimizer.lr=0.5"], [0.5])
    (sweep / "4" / "metrics.jsonl").write_text('{"epoch": 1, "test_acc": "high"}\n[1, 2]\n{"test_acc": 0.5}\n')
    _job(sweep / "5", ["optimizer.lr=0.5"], [0.5])
    (sweep / "5" / "metrics.jsonl").write_bytes(b'\xff\xfe{"epoch": 1}\n')
    _job(sweep / "6", [], [0.6, 0.7])
    (sweep / "6" / ".hydra" / "overrides.yaml").write_text("key: [unclosed\n")
    (sweep / "7" / ".hydra").mkdir(parents=True)
    (sweep / "7" / "failed.json").write_text('{"exit_code": "two", "error": ["x"]}')
    jobs = {job.folder.name: job for job in collect([sweep])}
    assert jobs["0"].failed == "metrics.jsonl has 1 unreadable line(s)" and len(jobs["0"].rows) == 2
    assert jobs["4"].failed == "metrics.jsonl has 3 unreadable line(s)" and jobs["4"].rows == []
    assert jobs["5"].failed == "metrics.jsonl has 1 unreadable line(s)"
    assert jobs["6"].failed is None and jobs["6"].overrides == []
    assert jobs["7"].exit_code == 1 and jobs["7"].failed == "['x']"
    main([str(sweep), "--out", str(tmp_path / "report")])  # no traceback
    assert "metrics.jsonl has 1 unreadable line(s)" in (tmp_path / "report" / "summary.md").read_text()


def test_dwn_report_refuses_an_out_file_and_writes_nothing_without_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    for args, words in (([str(tmp_path / "empty"), "--out", str(tmp_path / "file")], "is a file; give a folder"),
                        ([str(tmp_path / "empty"), "--out", str(tmp_path / "report")], "no runs found")):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


@pytest.mark.slow
def test_every_sweep_ends_with_a_summary_even_with_a_failed_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(["dwn-train", "-m", *ONE_EPOCH, "trainer.seed=0,1", "model.layers.1.n=0,4",
                             f"hydra.sweep.dir={sweep}"], capture_output=True, text=True)
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


def test_a_fault_inside_one_sweep_job_is_recorded_and_the_sweep_goes_on(run_cli, tmp_path, monkeypatch):
    """An exception that is not a user or run error (a bug, a CUDA fault) would end a sweep in a
    traceback before its summary: it fails that job only, with its traceback in the job's log."""
    from dwn_train import train as training

    real = training.train

    def faulty(cfg, run_dir, command):
        if cfg.trainer.seed == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(cfg, run_dir, command)

    monkeypatch.setattr(training, "train", faulty)
    code, out, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert code == 1 and "1 of 2 sweep jobs failed" in err, (code, err)
    assert "internal error (RuntimeError: CUDA error: an illegal memory access was encountered)" in err
    assert "Traceback" not in out + err
    assert "Traceback" in (tmp_path / "1" / "train.log").read_text()
    assert json.loads((tmp_path / "1" / "failed.json").read_text())["exit_code"] == 1
    with (tmp_path / "summary.csv").open() as handle:
        assert [row["n"] for row in csv.DictReader(handle)] == ["1"]


