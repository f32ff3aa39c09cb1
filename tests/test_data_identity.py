"""The data a run was trained on, as the console scripts see it: a checkpoint's fingerprint of its
data (rows, class labels, a hash of each split) refuses a resume onto other data and makes dwn-eval
say so; CSV class labels are matched by value (`2`, `2.0`, ` 2 `), and a test label that training
never saw is refused by name."""

import json

import numpy as np

from dwn_train.checkpoint import load_checkpoint, save_checkpoint
from helpers.runs import clean

# a three-class CSV run that trains in about a second
CSV_MODEL = ["dataset=csv", "dataset.target=label", "model=breast_cancer_small", "model.layers.0.out_features=60",
             "trainer.batch_size=32", "trainer.threads=1", "trainer.plot=false"]


def _write_csv(path, rows: int, seed: int, spell=str) -> None:
    """`rows` samples of 4 features around one centre per class (0, 1, 2 in turn), labels as spell(c)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 3
    x = rng.normal(size=(rows, 4)) + 2.0 * labels[:, None]
    body = "".join(",".join(f"{v:.4f}" for v in row) + f",{spell(int(c))}\n" for row, c in zip(x, labels))
    path.write_text("a,b,c,d,label\n" + body)


def _trained(run_cli, tmp_path, epochs=1, spell_test=str):
    """A finished CSV run in tmp_path/run (train.csv: 120 rows, test.csv: 30) -> its overrides."""
    _write_csv(tmp_path / "train.csv", 120, seed=0)
    _write_csv(tmp_path / "test.csv", 30, seed=1, spell=spell_test)
    data = [f"dataset.path={tmp_path / 'train.csv'}", f"dataset.test_path={tmp_path / 'test.csv'}"]
    clean(*run_cli("train", *CSV_MODEL, *data, f"trainer.epochs={epochs}", f"hydra.run.dir={tmp_path / 'run'}"), 0,
          "dwn-train")
    return [*CSV_MODEL, *data, f"hydra.run.dir={tmp_path / 'run'}"]


def _change_one_value(path) -> None:
    """The same rows and columns, one feature value other."""
    lines = path.read_text().splitlines(keepends=True)
    first = lines[1].split(",")
    lines[1] = ",".join(["7.7777", *first[1:]])
    path.write_text("".join(lines))


def test_a_resume_onto_other_data_is_refused_and_writes_nothing(run_cli, tmp_path):
    run = _trained(run_cli, tmp_path)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before, metrics = last.read_bytes(), (tmp_path / "run" / "metrics.jsonl").read_bytes()
    fingerprint = load_checkpoint(last)["data"]["fingerprint"]
    assert fingerprint["rows"] == {"train": 120, "val": 0, "test": 30}
    assert fingerprint["labels"] == ["0", "1", "2"] and len(fingerprint["train_sha256"]) == 64
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    kept = {path: path.read_text() for path in (train_csv, test_csv)}
    where = f"checkpoint {str(last)!r} comes from a run on other data than dataset 'train' holds now"
    fix = "; point the dataset options at the data it was trained on, or start a new run."
    cases = [  # (what to do to the data, what the sentence says differs)
        (lambda: _change_one_value(train_csv), "the training split (validation included) holds other values in "
                                               "its 120 rows"),
        (lambda: _change_one_value(test_csv), "the test split holds other values in its 30 rows"),
        (lambda: train_csv.write_text(kept[train_csv] + "1,2,3,4,0\n"), "the training split (validation "
                                                                          "included) has 121 rows where it had 120"),
        (lambda: [path.write_text(text.replace(",0\n", ",z\n")) for path, text in kept.items()],
         "its class labels are '1', '2', 'z' where they were '0', '1', '2'"),
    ]
    for change, differs in cases:
        change()
        code, out, err = run_cli("train", *run, "trainer.resume=auto", "trainer.epochs=2")
        clean(code, out, err, 2, f"{where}: {differs}{fix}")
        assert last.read_bytes() == before and (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics
        for path, text in kept.items():
            path.write_text(text)
    # the same data again (from another path, which a resume may change): it goes on
    moved = tmp_path / "moved.csv"
    moved.write_text(kept[train_csv])
    clean(*run_cli("train", *run, f"dataset.path={moved}", "trainer.resume=auto", "trainer.epochs=2"), 0,
          "resumed from")
    assert load_checkpoint(last)["epoch"] == 2


def test_a_checkpoint_without_a_fingerprint_still_resumes(run_cli, tmp_path):
    run = _trained(run_cli, tmp_path)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    payload = load_checkpoint(last)
    del payload["data"]["fingerprint"]  # as dwn-train wrote it before fingerprints
    save_checkpoint(payload, last)
    _change_one_value(tmp_path / "train.csv")  # nothing recorded to compare it with
    clean(*run_cli("train", *run, "trainer.resume=auto", "trainer.epochs=2"), 0, "resumed from")
    assert load_checkpoint(last)["data"]["fingerprint"]["rows"]["train"] == 120  # recorded from now on


def test_eval_on_another_test_set_says_so_in_one_line(run_cli, tmp_path):
    _trained(run_cli, tmp_path)
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    code, out, err = run_cli("eval", f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'e1'}")
    clean(code, out, err, 0, "dwn-eval")
    assert "note" not in err
    _change_one_value(tmp_path / "test.csv")
    code, out, err = run_cli("eval", f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'e2'}")
    clean(code, out, err, 0, "dwn-eval")
    notes = [line for line in err.splitlines() if "note" in line]
    assert notes == [f"dwn-eval: note: checkpoint {str(best)!r} comes from a run on other data than dataset 'train' "
                     "holds now: the test split holds other values in its 30 rows; scoring it as it is."], err
    assert (tmp_path / "e2" / "metrics.json").is_file()
    code, out, err = run_cli("eval", f"checkpoint={best}", "split=train", f"hydra.run.dir={tmp_path / 'e3'}")
    clean(code, out, err, 0, "dwn-eval")
    assert "note" not in err  # the training split it scores is the run's own


def test_csv_test_labels_are_matched_by_value_and_unseen_ones_refused(run_cli, tmp_path):
    spellings = {0: "0.0", 1: " 1 ", 2: "2.00"}  # the test file's spellings of the training file's 0, 1, 2
    _trained(run_cli, tmp_path, epochs=2, spell_test=spellings.get)
    data = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["data"]
    assert data["num_classes"] == 3 and data["class_names"] == ["0", "1", "2"]
    code, out, err = run_cli("eval", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}",
                             f"hydra.run.dir={tmp_path / 'e1'}")
    clean(code, out, err, 0, "dwn-eval")
    per_class = json.loads((tmp_path / "e1" / "metrics.json").read_text())["per_class"]
    assert [row["support"] for row in per_class] == [10, 10, 10]  # every test row is one of the three classes
    unseen = tmp_path / "unseen.csv"
    unseen.write_text("a,b,c,d,label\n1,2,3,4,eel\n1,2,3,4,7\n1,2,3,4,2\n1,2,3,4,eel\n")
    code, out, err = run_cli("train", *CSV_MODEL, f"dataset.path={tmp_path / 'train.csv'}",
                             f"dataset.test_path={unseen}", f"hydra.run.dir={tmp_path / 'r2'}")
    clean(code, out, err, 2, f"dataset.test_path={str(unseen)!r} has the label(s) 'eel', '7', which the training "
                             "file (dataset.path) never has: a model scores only the classes it was trained on, so "
                             "drop those rows or add examples of them to the training file.")
