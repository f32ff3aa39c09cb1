"""The command line checked before Hydra runs (dwn_train/run/precheck.py): run folders read as Hydra
reads them, refused when empty or impossible, held before Hydra writes there; dataset= refused
where a checkpoint chooses the data."""

import subprocess
import time

import pytest

from dwn_train.run.precheck import named_dir
from helpers.runs import ENV, SMALL, TINY, clean, metric_rows, train_cmd


@pytest.mark.parametrize("which", ["eval", "export"])
def test_eval_and_export_say_a_checkpoint_keeps_its_data_set(run_cli, which):
    clean(*run_cli(which, "checkpoint=x.pt", "dataset=breast_cancer"), 2,
           "dataset= cannot choose a data set here: a checkpoint is scored on the data set it was trained on")


@pytest.mark.parametrize("empty", ["hydra.run.dir=", "hydra.run.dir=''"])
def test_an_empty_run_folder_is_refused_not_the_working_directory(run_cli, tmp_path, empty):
    clean(*run_cli("train", *TINY, empty), 2, "hydra.run.dir is empty; name a folder")


def test_run_folders_are_read_as_hydra_reads_them():
    assert [named_dir([f"hydra.run.dir={v}"], "hydra.run.dir") for v in ("123", "1e3", "true", "'/a b'", "${now:%H}")] \
        == ["123", "1000.0", "True", "/a b", None]


def test_a_quoted_run_folder_is_the_one_held_and_its_record_kept(run_cli, tmp_path, monkeypatch):
    """hydra.run.dir='DIR' (Hydra's quotes, for a path with odd characters) names DIR: the early lock
    and the .hydra record of a refused resume are about DIR, not a folder named with the quotes."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "q a"
    clean(*run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir='{run}'"), 0, "dwn-train")
    record = (run / ".hydra" / "overrides.yaml").read_bytes()
    code, out, err = run_cli("train", *TINY, "trainer.epochs=2", "optimizer.lr=0.5", "trainer.resume=auto",
                             f"hydra.run.dir='{run}'")
    clean(code, out, err, 2, "was trained with optimizer.lr=0.01")
    assert (run / ".hydra" / "overrides.yaml").read_bytes() == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q a"]  # no stray "'...'" folder with a .lock


def test_a_run_folder_that_cannot_be_made_is_exit_1(run_cli, tmp_path):
    (tmp_path / "file").write_text("in the way")
    clean(*run_cli("train", *SMALL, f"hydra.run.dir={tmp_path}/file/run"), 1, "is a file, not a folder")


@pytest.mark.slow
def test_a_second_run_in_a_live_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd("model=digits_small", "trainer.epochs=4", f"hydra.run.dir={run}"), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / ".lock").is_file():
        time.sleep(0.05)
    time.sleep(0.5)
    second = subprocess.run(train_cmd("trainer.epochs=1", "trainer.seed=9", f"hydra.run.dir={run}"), env=ENV,
                            capture_output=True, text=True)
    assert first.wait() == 0
    assert "trainer.seed=9" not in (run / ".hydra" / "overrides.yaml").read_text()  # refused before Hydra wrote
    assert second.returncode == 2 and "is in use by another running dwn-train" in second.stderr
    assert "Traceback" not in second.stderr
    assert [r["epoch"] for r in metric_rows(run)] == [1, 2, 3, 4]  # the first run's rows only


def test_under_torchrun_every_rank_shares_rank_0s_folder_and_only_it_writes_hydras_files(tmp_path):
    from dwn_train.errors import DWNError
    from dwn_train.run.precheck import check, rank_words

    with pytest.raises(DWNError, match="under torchrun pass hydra.run.dir=DIR so that all ranks share one run folder"):
        check("dwn-train", ["trainer.strategy=ddp"], world=2)
    check("dwn-train", ["trainer.strategy=ddp", f"hydra.run.dir={tmp_path}"], world=2)
    assert rank_words(0, 2) == [] and rank_words(1, 1) == []
    assert rank_words(1, 2) == ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
