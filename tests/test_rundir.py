"""The run folder a training run owns: one live run per folder, stale temporaries removed."""

import subprocess
import sys

import pytest

from dwn_train.errors import RunError
from dwn_train.rundir import own


@pytest.mark.slow
def test_a_second_owner_is_refused_while_the_first_holds_the_folder(tmp_path):
    with own(tmp_path):
        with own(tmp_path):  # the same process again (dwn-train's entry, then its trainer): re-entrant
            pass
        code = subprocess.run([sys.executable, "-c", f"from dwn_train.rundir import own\nwith own({str(tmp_path)!r}): pass"],
                              capture_output=True, text=True)
        assert code.returncode != 0 and f"the run folder {tmp_path} is in use by another running dwn-train" in code.stderr
    with own(tmp_path):  # released on exit
        pass


@pytest.mark.slow
def test_a_killed_owner_leaves_no_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", f"from dwn_train.rundir import own\nimport time\n"
                               f"with own({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with own(tmp_path):
        pass


def test_owning_removes_stale_checkpoint_temporaries(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / ".last.pt.a1b2c3.tmp"
    stale.write_bytes(b"a write that was killed")
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"kept")
    with own(tmp_path):
        assert not stale.exists() and (tmp_path / "checkpoints" / "last.pt").exists()


def test_an_unmakeable_folder_is_a_run_error(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(RunError, match="cannot be written"):
        with own(tmp_path / "file" / "run"):
            pass


def test_a_full_disk_when_taking_the_folder_is_a_run_error(tmp_path, monkeypatch):
    import errno

    from dwn_train import rundir

    class Full:  # a lock file on a full disk: the pid line cannot be written
        def __init__(self, handle):
            self.handle = handle

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "open", lambda *args: Full(open(*args)), raising=False)
    with pytest.raises(RunError, match="cannot be written .No space left on device.; free space"):
        with own(tmp_path / "run"):
            pytest.fail("the block ran on a full disk")
    monkeypatch.undo()
    with own(tmp_path / "run"):  # the lock was released
        pass
