"""The learnable-reduction head: shapes, wiring that never crosses classes, and learning."""

import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import dwn_train as dwn
from helpers.fit import fit_and_score
from dwn_train.model import count_luts


def test_pyramids_per_class_and_their_wiring():
    head = dwn.ReductionHead(10 * 8, 10, n=2, tau=0.5)
    assert [layer.output_size for layer in head.levels] == [40, 20, 10]
    first = head.levels[0].mapping
    assert torch.equal(first[:, 0] // 8, first[:, 1] // 8)  # both inputs of a LUT in one class group
    out = head(torch.rand(3, 80))
    assert out.shape == (3, 10) and set(out.abs().unique().tolist()) == {2.0}


def test_binary_task_has_one_pyramid_and_logistic_logits():
    head = dwn.ReductionHead(16, 2, n=4, tau=1.0)
    assert [layer.output_size for layer in head.levels] == [4, 1]
    out = head(torch.rand(5, 16))
    torch.testing.assert_close(out[:, 0], -out[:, 1])
    assert set(out[:, 1].abs().tolist()) == {0.5}


@pytest.mark.parametrize("width, classes", [(30, 10), (24, 2), (10, 10)])
def test_widths_that_cannot_reduce_are_clear_errors(width, classes):
    with pytest.raises(dwn.DWNError, match="reduction"):
        dwn.ReductionHead(width, classes, n=2)


@pytest.mark.parametrize("n", [1, 0, 17, 2.5])
def test_inputs_per_lut_outside_2_to_16_are_refused_not_looped_on(n):
    with pytest.raises(dwn.DWNError, match="ReductionHead n must be an integer between 2 and 16"):
        dwn.ReductionHead(20, 10, n=n)  # n = 1 used to search for a depth forever


def test_reduction_head_learns_breast_cancer():
    torch.manual_seed(0)
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    enc = dwn.DistributiveThermometer(8).fit(x_train)
    x_train, x_test = enc.binarize(x_train).flatten(1), enc.binarize(x_test).flatten(1)
    y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)
    model = torch.nn.Sequential(dwn.LUTLayer(x_train.shape[1], 64, n=6, mapping="learnable"),
                                dwn.ReductionHead(64, 2, n=2, tau=0.5))
    assert count_luts(model) == 64 + 32 + 16 + 8 + 4 + 2 + 1
    accuracy = fit_and_score(model, x_train, y_train, x_test, y_test, epochs=30)
    assert accuracy > 0.85, accuracy


def test_the_reduction_head_takes_its_efd_from_the_config_like_the_layers(compose_cfg):
    from dwn_train.model import build_model, check_model

    cfg = compose_cfg(["model=breast_cancer_small", "model.head.kind=reduction", "model.head.efd=paper"])
    head = build_model(cfg.model, 30, 2)[-1]
    assert isinstance(head, dwn.ReductionHead)
    assert {layer.efd for layer in head.levels} == {"paper"}
    with pytest.raises(dwn.DWNError, match="model.head.efd must be one of exponential, paper, fd; got 'fast'"):
        check_model(compose_cfg(["model.head.kind=reduction", "model.head.efd=fast"]).model)
    with pytest.raises(dwn.DWNError, match="ReductionHead efd must be one of"):
        dwn.ReductionHead(8, 2, efd="fast")
