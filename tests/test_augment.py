"""dataset.augment: translations drawn per sample and epoch, thresholds fitted on clean data,
and a resumed run that sees the same augmented batches."""


import numpy as np
import pytest
import torch

from dwn_train import DWNError
from dwn_train.augment import draw_shifts, translate
from dwn_train.train import train
from conftest import compose
from helpers.runs import metric_rows


def test_translate_moves_each_image_by_its_own_shift():
    images = torch.arange(2 * 4 * 5, dtype=torch.uint8).view(2, 4, 5)
    moved = translate(images, torch.tensor([[1, 0], [0, -2]]))
    assert torch.equal(moved[0, 1:], images[0, :3]) and not moved[0, 0].any()  # down by one row
    assert torch.equal(moved[1, :, :3], images[1, :, 2:]) and not moved[1, :, 3:].any()  # left by two
    colour = torch.arange(2 * 4 * 5 * 3).view(2, 4, 5, 3)
    assert torch.equal(translate(colour, torch.tensor([[1, 1], [-1, 0]]))[..., 2],
                       translate(colour[..., 2], torch.tensor([[1, 1], [-1, 0]])))


def test_draws_are_seeded_and_bounded():
    a = draw_shifts(1000, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, draw_shifts(1000, 2, torch.Generator().manual_seed(5)))
    assert a.min() == -2 and a.max() == 2


@pytest.fixture
def fake_mnist(monkeypatch):
    """scikit-learn's 8x8 digits drawn 3x larger on a 28x28 canvas, served by the mnist loader."""
    tvd = pytest.importorskip("torchvision.datasets")
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = np.kron(digits.images, np.ones((3, 3))) * (255 / 16)
    canvas = np.zeros((len(big), 28, 28), dtype=np.uint8)
    canvas[:, 2:26, 2:26] = big.round().astype(np.uint8)

    class Fake:
        classes = [f"{c} - digit" for c in range(10)]

        def __init__(self, root, train, download):
            part = slice(0, 600) if train else slice(600, 800)
            self.data, self.targets = torch.from_numpy(canvas[part]), digits.target[part]

    monkeypatch.setattr(tvd, "MNIST", Fake)


MODEL = ["dataset=mnist", "model=digits_small", "model.layers.0.out_features=200", "model.layers.1.out_features=100",
         "trainer.batch_size=32", "trainer.plot=false", "trainer.threads=1"]


def test_unmoved_images_encode_to_the_plain_training_bits(fake_mnist):
    from dwn_train.augment import augmented_bits
    from dwn_train.prepare import prepare_data

    data = prepare_data(compose([*MODEL, "dataset.augment.shift=2"]), torch.device("cpu"))
    index = torch.tensor([0, 7, 599, 3])
    inputs = augmented_bits(data.train_images, data.encoder, 2)
    plain = data.splits["train"][0][index].float()
    assert torch.equal(inputs(index, torch.zeros(4, 2, dtype=torch.int64)), plain)
    assert not torch.equal(inputs(index, torch.tensor([[0, 1]] * 4)), plain)  # one pixel right is other bits


@pytest.mark.slow
def test_augmented_training_learns_and_fits_thresholds_on_clean_images(fake_mnist, tmp_path):
    from dwn_train.checkpoint import load_checkpoint
    from dwn_train.data import load_dataset
    from dwn_train.model import build_encoder

    cfg = compose([*MODEL, "trainer.epochs=5", "dataset.augment.shift=1"])
    train(cfg, tmp_path)
    rows = metric_rows(tmp_path)
    assert rows[-1]["test_acc"] > 0.55  # 0.70 when measured; 0.77 without augmentation
    clean = build_encoder(cfg.encoding).fit(load_dataset(cfg.dataset).x_train)
    stored = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["encoder"]["thresholds"]
    assert torch.equal(stored, clean.thresholds)


@pytest.mark.slow
def test_augmentation_changes_training_and_resume_repeats_it_exactly(fake_mnist, tmp_path):
    base = [*MODEL, "dataset.augment.shift=3"]
    train(compose([*base, "trainer.epochs=2"]), tmp_path / "whole")
    train(compose([*MODEL, "trainer.epochs=2"]), tmp_path / "plain")
    train(compose([*base, "trainer.epochs=1"]), tmp_path / "broken")
    train(compose([*base, "trainer.epochs=2", "trainer.resume=auto"]), tmp_path / "broken")
    read = lambda p: [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")}  # noqa: E731
                      for row in metric_rows(p)]
    assert read(tmp_path / "broken") == read(tmp_path / "whole")
    assert read(tmp_path / "plain") != read(tmp_path / "whole")
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "broken" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_augmentation_needs_images(tmp_path):
    with pytest.raises(DWNError, match="dataset.augment works on images"):
        train(compose(["dataset=digits", "model=digits_small", "dataset.augment.shift=1"]), tmp_path)
