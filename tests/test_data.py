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
