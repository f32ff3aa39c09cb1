"""Ctrl-C during training (dwn_train/run/interrupt.py): the run stops between steps and says where,
with the command that resumes it (dwn_train/run/command.py), in a form the shell and Hydra read back."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from dwn_train import train as training
from dwn_train.errors import Interrupted
from dwn_train.run.command import Command, config_flags, override_value
from dwn_train.run.folder import RunFolder
from dwn_train.run.interrupt import Progress, interrupted
from dwn_train.train import train
from helpers.runs import ENV, SMALL


def test_the_ctrl_c_advice_names_the_checkpoint_on_disk(tmp_path):
    run = tmp_path / "new"
    elsewhere = interrupted(Progress(6, 40, (5, tmp_path / "old" / "last.pt")), RunFolder(run))
    assert f"the last checkpoint is epoch 5 ({tmp_path / 'old' / 'last.pt'})" in elsewhere
    assert f"`dwn-train trainer.resume={tmp_path / 'old' / 'last.pt'} hydra.run.dir={run}`" in elsewhere
    here = interrupted(Progress(6, 40, (6, run / "checkpoints" / "last.pt")), RunFolder(run),
                       Command(("trainer.seed=1", "scheduler.milestones=[24,48]")))
    # the run's own settings are part of the command (a resume without them is refused), quoted for the shell
    assert f"`dwn-train trainer.seed=1 'scheduler.milestones=[24,48]' trainer.resume=auto hydra.run.dir={run}`" in here


def test_the_ctrl_c_advice_is_a_command_the_shell_reads_back(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    run = tmp_path / "my rüns" / "it's \\" / "${x}"  # a space for the shell; the rest for Hydra's grammar
    launched = Command.launched(["--config-name", "my train", "trainer.seed=1", "trainer.resume=auto"],
                                ["trainer.seed=1", "trainer.resume=auto"])  # trainer.resume: the command sets its own
    said = interrupted(Progress(2, 9, (2, run / "checkpoints" / "last.pt")), RunFolder(run), launched)
    words = shlex.split(said.split("resume with `")[1].split("`")[0])
    assert words[:5] == ["dwn-train", "--config-name", "my train", "trainer.seed=1", "trainer.resume=auto"]
    value = OverridesParser.create().parse_override(words[5]).value()
    assert OmegaConf.create({"dir": value}).dir == str(run)  # as Hydra resolves it (\${ is a literal ${)
    assert words[5].startswith("hydra.run.dir=") and len(words) == 6
    plain = interrupted(Progress(2, 9, (1, tmp_path / "old.pt")), RunFolder(tmp_path / "plain-run_1"))
    assert f"trainer.resume={tmp_path / 'old.pt'} hydra.run.dir={tmp_path / 'plain-run_1'}`" in plain  # bare
    # the flags that choose the configuration are kept, in both spellings; settings and the rest are not flags
    assert config_flags(["-cn", "mine", "--config-dir=conf x", "trainer.seed=1", "--multirun"]) == \
        ["-cn", "mine", "--config-dir=conf x"]
    # two nodes of four ranks: torchrun is told both, and that every node runs it
    said = interrupted(Progress(2, 9, (2, run / "checkpoints" / "last.pt")), RunFolder(run),
                       Command.launched([], [], world=8, local_world=4))
    assert "`torchrun --nnodes=2 --nproc_per_node=4 -m dwn_train.cli trainer.resume=auto " in said
    assert said.endswith("on each of the 2 nodes, with the rendezvous flags it was started with.")


@pytest.mark.slow
def test_ctrl_c_says_where_and_how_to_resume(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dwn_train.cli", *SMALL, "trainer.threads=1", "model=digits_small",
                             "trainer.batch_size=16", "trainer.epochs=1000", f"hydra.run.dir={run}"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "last.pt").is_file():
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be interrupted"  # (1000 epochs: never, in time)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert f"the last checkpoint is epoch {saved}" in err
    assert "resume with `dwn-train dataset=digits model=digits_small " in err  # the run's settings, in order
    assert f"trainer.threads=1 model=digits_small trainer.batch_size=16 trainer.epochs=1000 trainer.resume=auto " \
           f"hydra.run.dir={run}`" in err


def test_ctrl_c_during_the_last_epochs_evaluation_still_interrupts(compose_cfg, tmp_path, monkeypatch):
    one_epoch = training._train_epoch

    def then_ctrl_c(*args, **kwargs):  # the signal lands after the last step, before evaluation
        row = one_epoch(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return row

    monkeypatch.setattr(training, "_train_epoch", then_ctrl_c)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match="the last checkpoint is epoch 1"):
        train(compose_cfg([*SMALL, "trainer.epochs=1"]), tmp_path)
    assert signal.getsignal(signal.SIGINT) is before  # the run's handler is removed again


def test_the_one_quoter_writes_values_hydra_reads_back_as_they_were():
    """override_value is what both the Ctrl-C command and a refused resume's fix use: every value
    comes back from Hydra's parser as it went in (strings stay strings, however they look)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # as Hydra parses the override and OmegaConf then resolves it (\${ is a literal ${)
    parse = lambda text: OmegaConf.create({"v": OverridesParser.create().parse_override(f"key={text}").value()}).v  # noqa: E731
    for value in ("adam", "/tmp/run_1", "a.csv", "1e-3", "123", "true", "Null", "nan", "-x", ".5", "it's",
                  "a b", "back\\slash\\", "${x}", "rüns", ""):
        assert parse(override_value(value)) == value, (value, override_value(value))
    assert override_value("/tmp/run_1") == "/tmp/run_1" and override_value("1e-3") == "'1e-3'"  # bare only when safe
    for value in (None, True, 3, 0.25, [24, 48], {"a": 1}):
        assert OverridesParser.create().parse_override(f"key={override_value(value)}").value() == value


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_scheduler_signal_stops_like_ctrl_c(tmp_path, signum):
    """What `kill`, SLURM at a time limit (SIGTERM) or its early warning (--signal=USR1@N) sends,
    to the one process: a stop at the next step with the Ctrl-C message, also in train.log."""
    run = tmp_path / "run"
    proc = subprocess.Popen(["dwn-train", *SMALL, "trainer.threads=1", "trainer.batch_size=16", "trainer.epochs=1000",
                             f"hydra.run.dir={run}"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "last.pt").is_file():
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in out + err
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    said = f"interrupted by {name} at epoch"
    assert said in err and f"the last checkpoint is epoch {saved}" in err
    assert f"trainer.epochs=1000 trainer.resume=auto hydra.run.dir={run}`" in err
    assert said in (run / "train.log").read_text()
    assert not (run / ".lock").exists()


def test_a_stop_signal_before_the_training_loop_is_a_clean_stop(run_cli, tmp_path, monkeypatch):
    from dwn_train import prepare

    def loading(*args, **kwargs):  # SIGTERM lands while the data loads
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the run")

    monkeypatch.setattr(training, "prepare_data", loading)
    before = signal.getsignal(signal.SIGTERM)
    try:
        code, out, err = run_cli("train", *SMALL, f"hydra.run.dir={tmp_path}")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143 and "interrupted by SIGTERM before the training loop" in err and "Traceback" not in out + err
    assert prepare.prepare_data is not loading


def test_a_repeated_scheduler_signal_lets_the_stop_finish_and_a_second_ctrl_c_stops_at_once():
    from dwn_train.run.interrupt import stop_between_steps

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        progress = Progress(epoch=1, step=0)
        with stop_between_steps(progress):
            os.kill(os.getpid(), signal.SIGUSR1)  # the scheduler's warning, then its SIGTERM (twice)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert progress.stop == signal.SIGUSR1  # still here, and the first signal is the one that stops
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after a stop was asked: at once
                time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)  # the stop goes on after the loop (its message, the exit): still ignored
        with stop_between_steps(progress := Progress(epoch=1, step=0)):
            os.kill(os.getpid(), signal.SIGINT)
            assert progress.stop == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
