"""torch-dwn's README Quick Start, with only the import changed, learns scikit-learn's digits."""

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import dwn_train as dwn
from helpers.fit import fit_and_score


@pytest.mark.slow
def test_quick_start_model_learns_digits():
    torch.manual_seed(0)
    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.25, random_state=0)
    y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)

    # --- the Quick Start, verbatim but for the import and the layer widths ---
    thermometer = dwn.DistributiveThermometer(3).fit(x_train)
    x_train = thermometer.binarize(x_train).flatten(start_dim=1)
    x_test = thermometer.binarize(x_test).flatten(start_dim=1)
    model = nn.Sequential(
        dwn.LUTLayer(x_train.size(1), 1000, n=6, mapping="learnable"),
        dwn.LUTLayer(1000, 500, n=6),
        dwn.GroupSum(k=10, tau=1 / 0.3),
    )
    # ---
    accuracy = fit_and_score(model, x_train, y_train, x_test, y_test, epochs=8)
    assert accuracy > 0.9, accuracy
