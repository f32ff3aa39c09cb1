"""Data set loaders: what a user's files and labels become, and what is refused."""

import pytest
from omegaconf import OmegaConf

from dwn_train import DWNError
from dwn_train.config import DatasetConfig
from dwn_train.data import load_dataset


def _cfg(**kwargs):
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), kwargs)


def test_csv_with_a_byte_order_mark_and_string_labels(tmp_path):
    path = tmp_path / "sheet.csv"
    rows = "".join(f"{i},{i % 7},{'cat' if i % 2 else 'dog'}\n" for i in range(30))
    path.write_bytes("\ufeffa,b,animal\n".encode("utf-8") + rows.encode())
    splits = load_dataset(_cfg(kind="csv", path=str(path), target="animal"))
    assert splits.class_names == ["cat", "dog"] and splits.num_classes == 2
    assert splits.x_train.shape[1] == 2


def test_one_row_and_one_class_are_refused(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("a,y\n1,x\n")
    with pytest.raises(DWNError, match="has 1 sample.*too few to split"):
        load_dataset(_cfg(kind="csv", path=str(one), target="y"))
    same = tmp_path / "same.csv"
    same.write_text("a,y\n" + "".join(f"{i},only\n" for i in range(20)))
    with pytest.raises(DWNError, match="holds a single class \\('only'\\).*at least two classes"):
        load_dataset(_cfg(kind="csv", path=str(same), target="y"))


def test_bundled_sets_have_class_names():
    assert load_dataset(_cfg(kind="digits")).class_names == [str(c) for c in range(10)]


def test_an_absent_image_set_suggests_the_bundled_one(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(DWNError, match="dataset.download=true to fetch it.*dataset=digits"):
        load_dataset(_cfg(kind="mnist", root=str(tmp_path)))


def test_a_failed_download_shows_the_network_error_and_the_offline_way(tmp_path, monkeypatch):
    tvd = pytest.importorskip("torchvision.datasets")
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DWNError) as error:
        load_dataset(_cfg(kind="mnist", root=str(tmp_path), download=True))
    text = str(error.value)
    assert "could not be downloaded" in text and "Temporary failure in name resolution" in text
    assert "copy MNIST/raw" in text and "dataset=digits" in text


def test_csv_with_a_test_file_shares_labels_across_both(tmp_path):
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    train_csv.write_text("a,b,y\n1,2,cat\n3,4,dog\n5,6,cat\n")
    test_csv.write_text("a,b,y\n7,8,cat\n9,10,dog\n")
    splits = load_dataset(_cfg(kind="csv", path=str(train_csv), test_path=str(test_csv), target="y"))
    assert splits.class_names == ["cat", "dog"] and splits.num_classes == 2
    assert splits.y_train.tolist() == [0, 1, 0] and splits.y_test.tolist() == [0, 1]
    assert splits.x_train.tolist() == [[1, 2], [3, 4], [5, 6]] and splits.x_test.tolist() == [[7, 8], [9, 10]]
    test_csv.write_text("a,b,y\n7,8,eel\n9,10,dog\n" + "".join(f"1,1,x{i}\n" for i in range(7)))
    with pytest.raises(DWNError, match=f"dataset.test_path='{test_csv}' has the label.s. 'eel', 'x0', 'x1', 'x2', "
                                       "'x3' and 3 more, which the training file .dataset.path. never has"):
        load_dataset(_cfg(kind="csv", path=str(train_csv), test_path=str(test_csv), target="y"))
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b,c,y\n1,2,3,cat\n")
    with pytest.raises(DWNError, match="dataset.test_path's feature columns are not dataset.path's: missing none; "
                                       "extra c"):
        load_dataset(_cfg(kind="csv", path=str(train_csv), test_path=str(wide), target="y"))


def test_numeric_csv_labels_are_one_class_per_value(tmp_path):
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    train_csv.write_text("a,y\n1,2\n2,10\n3, 2 \n4,2.0\n5,1e1\n")  # 2 and 10, each spelt more than one way
    test_csv.write_text("a,y\n6,2.0\n7,10.00\n8, 10\n9,2\n")
    splits = load_dataset(_cfg(kind="csv", path=str(train_csv), test_path=str(test_csv), target="y"))
    assert splits.class_names == ["10", "2"] and splits.num_classes == 2  # named as first spelt; sorted as text
    assert splits.y_train.tolist() == [1, 0, 1, 1, 0] and splits.y_test.tolist() == [1, 0, 0, 1]
    one_file = tmp_path / "one.csv"  # split into training and test parts after matching
    one_file.write_text("a,y\n" + "".join(f"{i},{label}\n" for i, label in enumerate(["2.0", "10", "2", "1e1"] * 4)))
    splits = load_dataset(_cfg(kind="csv", path=str(one_file), target="y"))
    assert splits.class_names == ["10", "2.0"] and splits.num_classes == 2
    text = tmp_path / "text.csv"  # labels that are not numbers stay as written
    text.write_text("a,y\n" + "".join(f"{i},{label}\n" for i, label in enumerate(["cat", " cat", "nan", "NaN"] * 3)))
    assert load_dataset(_cfg(kind="csv", path=str(text), target="y")).class_names == [" cat", "NaN", "cat", "nan"]


def test_an_unknown_kind_is_one_sentence():
    with pytest.raises(DWNError, match="dataset.kind must be one of breast_cancer, .*; got 'nope'"):
        load_dataset(_cfg(kind="nope"))


def test_a_test_file_is_read_by_column_name_not_position(tmp_path):
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    train_csv.write_text("a,b,y\n1,2,cat\n3,4,dog\n")
    test_csv.write_text("y,b,a\ndog,20,10\n")  # the same columns in another order
    splits = load_dataset(_cfg(kind="csv", path=str(train_csv), test_path=str(test_csv), target="y"))
    assert splits.x_test.tolist() == [[10, 20]] and splits.y_test.tolist() == [1]
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("a,B,y\n1,2,cat\n")
    with pytest.raises(DWNError, match="missing b; extra B"):
        load_dataset(_cfg(kind="csv", path=str(train_csv), test_path=str(renamed), target="y"))


@pytest.mark.parametrize("content, words", [
    ("y\ncat\ndog\n", "has no feature columns: its only column is dataset.target='y'"),
    ("a,y\n1e300,cat\n2,dog\n", "beyond what float32 holds"),
    ("a,a,y\n1,2,cat\n3,4,dog\n", "names the column.s. 'a' more than once"),
])
def test_csv_files_a_model_cannot_read_are_named(tmp_path, content, words):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DWNError, match=words):
        load_dataset(_cfg(kind="csv", path=str(path), target="y"))


def test_the_validation_split_partitions_train_and_the_encoder_sees_only_the_rest(compose_cfg):
    import numpy as np
    import torch

    from dwn_train.model import build_encoder
    from dwn_train.prepare import prepare_data
    from helpers.runs import SMALL

    cfg = compose_cfg([*SMALL, "trainer.val_fraction=0.2", "trainer.seed=3"])
    full = load_dataset(cfg.dataset)
    data = prepare_data(cfg, torch.device("cpu"))
    (x_val, y_val), (x_train, y_train) = data.raw["val"], data.raw["train"]
    assert len(x_val) == int(0.2 * len(full.x_train)) and len(x_val) + len(x_train) == len(full.x_train)
    rows = lambda x, y: sorted(map(tuple, np.column_stack([x.numpy(), y.numpy()]).tolist()))
    assert rows(torch.cat([x_val, x_train]), torch.cat([y_val, y_train])) == rows(full.x_train, full.y_train)
    assert torch.equal(data.splits["val"][0], data.encoder.binarize(x_val).flatten(1).to(torch.uint8))
    on_train = build_encoder(cfg.encoding).fit(x_train).thresholds
    assert torch.equal(data.encoder.thresholds, on_train)
    assert not torch.equal(build_encoder(cfg.encoding).fit(full.x_train).thresholds, on_train)
    again = prepare_data(cfg, torch.device("cpu"), only=("val",))  # seeded: the same split
    assert torch.equal(again.raw["val"][0], x_val) and set(again.raw) == {"train", "val", "test"}
    assert list(again.splits) == ["val"] and torch.equal(again.splits["val"][0], data.splits["val"][0])
