"""Fresh or resumed (dwn_train/run/resume.py): a fresh run does not replace a run its folder holds,
a resume continues the run it was (same settings, optimizer and rng state, epochs left) and
equals an uninterrupted run, and a refused command leaves the folder as it was."""

import json
import signal
import subprocess
import time

import pytest
import torch

from dwn_train import DWNError
from dwn_train.checkpoint import load_checkpoint
from dwn_train.run.folder import RunFolder
from dwn_train.run.resume import check_fresh, check_resumable
from dwn_train.train import train
from conftest import compose
from helpers.runs import ENV, SMALL, TINY, clean, metric_rows, train_cmd


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    common = ("model=digits_small", "trainer.batch_size=32", "trainer.epochs=6")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(train_cmd(*common, f"hydra.run.dir={whole}"), check=True, env=ENV, capture_output=True)
    proc = subprocess.Popen(train_cmd(*common, f"hydra.run.dir={broken}"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (broken / "checkpoints" / "last.pt").is_file():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(broken / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert killed_at < 6, "the run finished before it could be killed"
    subprocess.run(train_cmd(*common, "trainer.resume=auto", f"hydra.run.dir={broken}"), check=True, env=ENV,
                   capture_output=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("samples_per_s", "seconds")} for r in rows]
    assert strip(metric_rows(broken)) == strip(metric_rows(whole))
    assert (broken / "metrics.csv").read_text().count("\n") == 7  # header + 6 epochs, no duplicates
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(broken / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_fewer_epochs_says_so_and_the_log_says_why(tiny_run, run_cli):
    before = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.resume=auto", f"hydra.run.dir={tiny_run}"), 2,
           "has already trained 2 epochs and trainer.epochs=1: nothing is left to train")
    assert "nothing is left to train" in (tiny_run / "train.log").read_text()
    assert (tiny_run / "checkpoints" / "last.pt").read_bytes() == before


def test_resuming_with_another_optimizer_is_refused(tiny_run, run_cli, tmp_path):
    clean(*run_cli("train", *TINY, "trainer.epochs=3", "optimizer=sgd", f"trainer.resume={tiny_run}/checkpoints/last.pt",
                    f"hydra.run.dir={tmp_path}"), 2, "was trained with optimizer.kind=adam (today sgd)")


def test_resuming_with_other_settings_names_them_and_how_to_continue(run_cli, tmp_path):
    """A resume that forgot a job's overrides (seed, split, head) would silently continue another
    run: it is refused, naming each setting, nothing of the run changes (not even Hydra's record of
    its settings), and the overrides it names make the same command resume."""
    run = tmp_path / "run"
    job = ["trainer.seed=5", "trainer.val_fraction=0.1", "model.head.tau=2"]
    clean(*run_cli("train", *TINY, *job, f"hydra.run.dir={run}"), 0, "dwn-train")
    kept = {name: (run / name).read_bytes() for name in ("checkpoints/last.pt", ".hydra/config.yaml",
                                                         ".hydra/overrides.yaml", "metrics.jsonl")}
    code, out, err = run_cli("train", *TINY, "trainer.epochs=3", "trainer.resume=auto", f"hydra.run.dir={run}")
    clean(code, out, err, 2, "trainer.seed=5 (today 0)")
    said = next(line for line in (out + err).splitlines() if "error:" in line)
    for words in ("trainer.val_fraction=0.1 (today 0.0)", "model.head.tau=2.0 (today 3.3333333333333335)", "add `"):
        assert words in said, said
    assert "trainer.epochs" not in said  # training longer is what resuming is for
    assert {name: (run / name).read_bytes() for name in kept} == kept
    fix = said.split("add `")[1].split("`")[0].split()
    assert sorted(fix) == ["model.head.tau=2.0", "trainer.seed=5", "trainer.val_fraction=0.1"], fix
    code, out, err = run_cli("train", *TINY, "trainer.epochs=3", *fix, "trainer.resume=auto", f"hydra.run.dir={run}",
                             "trainer.threads=1")
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_run_refused_after_it_began_rewriting_the_folder_keeps_its_own_settings(run_cli, tmp_path, monkeypatch):
    """Hydra's record of a folder's settings is put back only for a command refused before it wrote
    anything else there: a fresh run that emptied the old metrics and then failed is the folder's run."""
    from dwn_train import train

    run = tmp_path / "run"
    clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.seed=5", f"hydra.run.dir={run}"), 0, "dwn-train")

    def refuse(*args, **kwargs):
        raise DWNError("a late bad value.")

    monkeypatch.setattr(train, "_make_step", refuse)
    clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.seed=6", "trainer.resume=overwrite",
                    f"hydra.run.dir={run}"), 2, "a late bad value")
    assert (run / "metrics.jsonl").read_text() == ""  # the new run emptied the old run's records
    assert "trainer.seed=6" in (run / ".hydra" / "overrides.yaml").read_text()


def test_a_fresh_run_does_not_replace_the_run_a_folder_holds(run_cli, tmp_path):
    """Without trainer.resume a second run in a named folder would empty its metrics and replace its
    checkpoints: refused, nothing changed; resume=auto without a last.pt (save_last=false) likewise;
    trainer.resume=overwrite starts afresh on purpose."""
    run = tmp_path / "run"
    clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.checkpoint.save_last=false", f"hydra.run.dir={run}"),
           0, "dwn-train")
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log" and p.name != ".lock"}
    assert run / "checkpoints" / "best.pt" in kept and run / "metrics.jsonl" in kept
    code, out, err = run_cli("train", *TINY, "trainer.epochs=1", "optimizer.lr=0.001", f"hydra.run.dir={run}")
    clean(code, out, err, 2, f"the run folder {run} already holds a run (metrics.jsonl, checkpoints/best.pt)")
    assert "trainer.resume=overwrite" in err
    code, out, err = run_cli("train", *TINY, "trainer.epochs=2", "trainer.resume=auto", f"hydra.run.dir={run}")
    clean(code, out, err, 2, "trainer.resume=auto found no checkpoints/last.pt")
    assert {p: p.read_bytes() for p in kept} == kept
    assert "continue from one of its checkpoints with trainer.resume=PATH" in err  # no last.pt to auto-resume
    # overwrite removes the old run's records first: its best.pt must not outlive it when this run keeps none
    clean(*run_cli("train", *TINY, "trainer.epochs=1", "optimizer.lr=0.001", "trainer.resume=overwrite",
                    "trainer.checkpoint.save_best=false", f"hydra.run.dir={run}"), 0, "dwn-train")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]
    assert "optimizer.lr=0.001" in (run / ".hydra" / "overrides.yaml").read_text()
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_resuming_on_another_data_set_names_both(tiny_run, run_cli, tmp_path):
    clean(*run_cli("train", *TINY, "trainer.epochs=3", "dataset=breast_cancer",
                    f"trainer.resume={tiny_run}/checkpoints/last.pt",
                    f"hydra.run.dir={tmp_path}"), 2, "dataset.kind=digits (today breast_cancer)")


def test_more_epochs_resume_a_step_schedule_but_not_a_cosine_one(tmp_path):
    """A cosine schedule's restored state keeps the length it was built for (its learning rate
    would climb again after it): trainer.epochs may only grow on resume under other schedules."""
    from omegaconf import OmegaConf

    for schedule, refused in (("scheduler=step", False), ("scheduler=cosine", True)):
        trained = {"config": OmegaConf.to_container(compose([*SMALL, schedule, "trainer.epochs=4"]), resolve=True)}
        check_resumable(compose([*SMALL, schedule, "trainer.epochs=4", "trainer.threads=1"]), trained, tmp_path)
        longer = compose([*SMALL, schedule, "trainer.epochs=8"])
        if refused:
            with pytest.raises(DWNError, match=r"trainer.epochs=4 \(today 8\)"):
                check_resumable(longer, trained, tmp_path)
        else:
            check_resumable(longer, trained, tmp_path)
    # trained with cosine, resumed under another schedule: both named at once
    trained = {"config": OmegaConf.to_container(compose([*SMALL, "scheduler=cosine", "trainer.epochs=4"]), resolve=True)}
    with pytest.raises(DWNError, match=r"scheduler.kind=cosine \(today step\).*trainer.epochs=4 \(today 8\)|"
                                       r"trainer.epochs=4 \(today 8\).*scheduler.kind=cosine \(today step\)"):
        check_resumable(compose([*SMALL, "scheduler=step", "trainer.epochs=8"]), trained, tmp_path)


def test_the_monitor_is_compared_as_the_metric_it_names_on_resume(tmp_path):
    from omegaconf import OmegaConf

    trained = {"config": OmegaConf.to_container(compose([*SMALL, "trainer.val_fraction=0.1"]), resolve=True),
               "monitor": "val_acc"}  # auto, with a validation split
    check_resumable(compose([*SMALL, "trainer.val_fraction=0.1", "trainer.checkpoint.monitor=val_acc"]),
                              trained, tmp_path)
    with pytest.raises(DWNError, match=r"trainer.checkpoint.monitor=val_acc \(today train_loss\)"):
        check_resumable(compose([*SMALL, "trainer.val_fraction=0.1", "trainer.checkpoint.monitor=train_loss"]),
                                  trained, tmp_path)


def test_a_resume_reads_past_a_metrics_line_cut_short_by_the_kill(compose_cfg, tmp_path):
    """SIGKILL during an append leaves half a line (or bytes that are not UTF-8) at the end of
    metrics.jsonl: the resume drops it with a warning and writes whole rows from there."""
    train(compose_cfg([*SMALL, "trainer.epochs=2"]), tmp_path)
    with (tmp_path / "metrics.jsonl").open("ab") as handle:
        handle.write(b'{"epoch": 3, "train_loss": 0.\xff')
    train(compose_cfg([*SMALL, "trainer.epochs=3", "trainer.resume=auto"]), tmp_path)
    assert [row["epoch"] for row in metric_rows(tmp_path)] == [1, 2, 3]


def test_a_checkpoint_without_optimizer_state_is_refused_for_resume_only(compose_cfg, tmp_path):
    from dwn_train.checkpoint import restore, save_checkpoint

    train(compose_cfg([*SMALL, "trainer.epochs=1"]), tmp_path / "run")
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    del payload["rng"]
    save_checkpoint(payload, tmp_path / "c.pt")
    with pytest.raises(DWNError, match="cannot be resumed: it has no rng state"):
        train(compose_cfg([*SMALL, "trainer.epochs=2", f"trainer.resume={tmp_path / 'c.pt'}"]), tmp_path / "again")
    assert restore(tmp_path / "c.pt").payload["epoch"] == 1  # still good for dwn-eval and dwn-export


def test_the_fresh_run_refusal_offers_only_what_can_continue(tmp_path):

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"")
    with pytest.raises(DWNError, match=r"holds a run \(checkpoints/best.pt\): continue from one of its checkpoints"):
        check_fresh(RunFolder(tmp_path), None)
    (tmp_path / "checkpoints" / "best.pt").unlink()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(DWNError, match=r"holds a run \(metrics.jsonl\): start afresh there with trainer.resume="):
        check_fresh(RunFolder(tmp_path), None)
    check_fresh(RunFolder(tmp_path), "auto")  # metrics without any checkpoint: a run killed before its first one
    check_fresh(RunFolder(tmp_path), "overwrite")


def test_best_pt_beside_last_pt_holds_no_resume_state_and_a_resume_from_it_says_so(tiny_run, run_cli, tmp_path):
    """best.pt is what dwn-eval and dwn-export read: weights, encoder, config, data; the optimizer,
    schedule and random state a resume needs are in last.pt only (best.pt is much smaller)."""
    best = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng"}.isdisjoint(best) and {"optimizer", "rng"} <= last.keys()
    assert {"model", "encoder", "config", "data", "epoch", "best_metric"} <= best.keys()
    assert (tiny_run / "checkpoints" / "best.pt").stat().st_size < 0.7 * (tiny_run / "checkpoints" / "last.pt").stat().st_size
    clean(*run_cli("train", *TINY, "trainer.epochs=3", f"trainer.resume={tiny_run}/checkpoints/best.pt",
                   f"hydra.run.dir={tmp_path / 'run'}"), 2, "cannot be resumed: it has no optimizer or rng state")
    assert run_cli("eval", f"checkpoint={tiny_run}/checkpoints/best.pt")[0] == 0
    # without a last.pt, best.pt is the one a resume starts from: it keeps everything
    alone = tmp_path / "alone"
    assert run_cli("train", *TINY, "trainer.epochs=1", "trainer.checkpoint.save_last=false", f"hydra.run.dir={alone}")[0] == 0
    assert {"optimizer", "rng"} <= torch.load(alone / "checkpoints" / "best.pt", weights_only=True).keys()


def test_resume_auto_on_a_finished_run_keeps_it_as_it_was(run_cli, tmp_path):
    """What a sweep resumed as a whole does with its finished jobs, for one run: nothing trained
    or written, Hydra's record of the run put back, exit 0; asked to continue it by path, refused."""
    run = tmp_path / "run"
    assert run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={run}")[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log"}
    code, out, err = run_cli("train", *TINY, "trainer.epochs=1", "trainer.resume=auto", f"hydra.run.dir={run}")
    assert code == 0, err
    assert f"the run in {run} has already trained its 1 epoch (last.pt" in out + err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log"} == before
    clean(*run_cli("train", *TINY, "trainer.epochs=1", f"trainer.resume={run}/checkpoints/last.pt",
                   f"hydra.run.dir={tmp_path / 'other'}"), 2, "nothing is left to train")
