"""The run folder (dwn_train/run/folder.py: its paths, the one holds_run rule, clear) and the lock a
run holds on it (dwn_train/run/lock.py: one live run per folder, stale temporaries removed)."""

import os
import subprocess
import sys

import pytest

from dwn_train.errors import RunError
from dwn_train.run.folder import RunFolder
from dwn_train.run.lock import own
from helpers.runs import TINY, clean, metric_rows


def test_a_folder_holds_a_run_when_it_has_a_checkpoint_or_a_metrics_row(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.records() == [] and not folder.holds_run()
    folder.metrics.write_text("")  # emptied, or stopped before its first epoch: no run
    assert not folder.holds_run()
    folder.metrics.write_text('{"epoch": 1}\n')
    folder.checkpoints.mkdir()
    folder.best.write_bytes(b"")
    assert folder.records() == ["metrics.jsonl", "checkpoints/best.pt"] and folder.holds_run()
    assert folder.records(checkpoints_only=True) == ["checkpoints/best.pt"]


def test_clear_removes_every_record_of_a_run_and_nothing_else(tmp_path):
    folder = RunFolder(tmp_path)
    folder.checkpoints.mkdir()
    kept = [folder.hydra / "config.yaml", folder.log("train"), folder.lock, folder.checkpoints / "notes.txt",
            folder.checkpoints / "mine.pt"]  # a file of the user's, even one named like a checkpoint
    gone = [folder.last, folder.best, folder.metrics, folder.metrics_csv, folder.curves, folder.tensorboard / "events"]
    for path in kept + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    folder.clear()
    assert all(path.exists() for path in kept) and not any(path.exists() for path in gone)
    assert not folder.tensorboard.exists()
    folder.clear()  # nothing left to remove: no error


@pytest.mark.slow
def test_a_second_owner_is_refused_while_the_first_holds_the_folder(tmp_path):
    with own(RunFolder(tmp_path)):
        with own(RunFolder(tmp_path)):  # the same process again (dwn-train's entry, then its trainer): re-entrant
            pass
        code = subprocess.run([sys.executable, "-c", f"from dwn_train.run.folder import RunFolder\nfrom dwn_train.run.lock import own\nwith own(RunFolder({str(tmp_path)!r})): pass"],
                              capture_output=True, text=True)
        assert code.returncode != 0 and f"the run folder {tmp_path} is in use by another running dwn-train" in code.stderr
    with own(RunFolder(tmp_path)):  # released on exit
        pass


@pytest.mark.slow
def test_a_killed_owner_leaves_no_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", f"from dwn_train.run.folder import RunFolder\nfrom dwn_train.run.lock import own\nimport time\n"
                               f"with own(RunFolder({str(tmp_path)!r})):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with own(RunFolder(tmp_path)):
        pass


def test_a_finished_run_leaves_no_lock_and_a_held_folder_names_its_holder(tmp_path, run_cli):
    from dwn_train.run.lock import holder

    with own(RunFolder(tmp_path)):
        assert holder(RunFolder(tmp_path)) == str(os.getpid())
    assert not (tmp_path / ".lock").exists() and holder(RunFolder(tmp_path)) is None
    run = tmp_path / "run"
    clean(*run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={run}"), 0, "dwn-train")
    assert not (run / ".lock").exists() and (run / "checkpoints" / "last.pt").is_file()


def test_owning_removes_stale_checkpoint_temporaries(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / ".last.pt.a1b2c3.tmp"
    stale.write_bytes(b"a write that was killed")
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"kept")
    with own(RunFolder(tmp_path)):
        assert not stale.exists() and (tmp_path / "checkpoints" / "last.pt").exists()


def test_an_unmakeable_folder_is_a_run_error(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(RunError, match="cannot be written"):
        with own(RunFolder(tmp_path / "file" / "run")):
            pass


def test_a_full_disk_when_taking_the_folder_is_a_run_error(tmp_path, monkeypatch):
    import errno

    from dwn_train.run import lock

    class Full:  # a lock file on a full disk: the pid line cannot be written
        def __init__(self, handle):
            self.handle = handle

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock, "open", lambda *args: Full(open(*args)), raising=False)
    with pytest.raises(RunError, match="cannot be written .No space left on device.; free space"):
        with own(RunFolder(tmp_path / "run")):
            pytest.fail("the block ran on a full disk")
    monkeypatch.undo()
    with own(RunFolder(tmp_path / "run")):  # the lock was released
        pass


def test_a_job_run_again_in_its_folder_forgets_its_old_failure(run_cli, tmp_path):
    (tmp_path / "failed.json").write_text('{"exit_code": 1, "error": "disk full"}')
    clean(*run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={tmp_path}"), 0, "dwn-train")
    assert not (tmp_path / "failed.json").exists()


def test_overwrite_through_dwn_train_keeps_the_users_files_in_checkpoints(run_cli, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={run}")[0] == 0
    mine = {run / "checkpoints" / "mine.pt": b"my own weights", run / "checkpoints" / "notes.txt": b"notes"}
    for path, content in mine.items():
        path.write_bytes(content)
    old = (run / "checkpoints" / "last.pt").read_bytes()
    assert run_cli("train", *TINY, "trainer.epochs=1", "trainer.seed=5", "trainer.resume=overwrite",
                   f"hydra.run.dir={run}")[0] == 0
    assert all(path.read_bytes() == content for path, content in mine.items())
    assert (run / "checkpoints" / "last.pt").read_bytes() != old and len(metric_rows(run)) == 1


def test_a_folder_holds_a_run_by_the_names_dwn_train_writes_and_clear_removes(tmp_path):
    folder = RunFolder(tmp_path)
    folder.checkpoints.mkdir()
    (folder.checkpoints / "mine.pt").write_bytes(b"the user's own weights")
    assert not folder.holds_run() and folder.records() == []
    folder.best.write_bytes(b"")
    assert folder.holds_run() and folder.records() == ["checkpoints/best.pt"]
    folder.clear()
    assert not folder.holds_run() and (folder.checkpoints / "mine.pt").is_file()


def test_a_lock_file_removed_under_every_try_is_a_clear_error(tmp_path, monkeypatch):
    from dwn_train.run import lock

    monkeypatch.setattr(lock, "_same_file", lambda handle, path: False)  # another process removes it each time
    with pytest.raises(RunError, match=r"the run folder .* keeps losing its lock file \.lock to another process"):
        with own(RunFolder(tmp_path / "run")):
            pytest.fail("the block ran without the lock")
