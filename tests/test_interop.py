"""A torch-dwn model (its state_dict with torch-dwn's key names, built here by hand) brought in,
frozen, exported and evaluated; its outputs checked against the LUT formula on the raw tensors."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dwn_train import DWNError
from dwn_train.checkpoint import restore
from dwn_train.config import EvalConfig, ExportConfig
from dwn_train.data import load_dataset
from dwn_train.export.freeze import InputFormat, freeze
from dwn_train.interop import from_torch_dwn, to_checkpoint


def _torch_dwn_state(seed=0):
    """What torch-dwn's nn.Sequential(LUTLayer(192, 40, n=6, mapping='learnable'), LUTLayer(40, 20, n=4),
    GroupSum(10)) state_dict holds: names and shapes as torch-dwn writes them."""
    g = torch.Generator().manual_seed(seed)
    return {"0.luts": torch.rand(40, 64, generator=g) * 2 - 1,
            "0.mapping.weights": torch.rand(192, 40 * 6, generator=g),
            "0._LUTLayer__dummy_mapping": torch.arange(240).reshape(40, 6).int(),
            "1.luts": torch.rand(20, 16, generator=g) * 2 - 1,
            "1.mapping": torch.randint(0, 40, (20, 4), generator=g).int()}


def _formula(state, bits):
    """The LUT network by its definition, on the raw torch-dwn tensors: bit l of LUT j's address is
    input mapping[j, l], least significant first; the output is the entry > 0; GroupSum counts."""
    wiring = state["0.mapping.weights"].argmax(0).view(40, 6)
    x = bits
    for luts, mapping in ((state["0.luts"], wiring), (state["1.luts"], state["1.mapping"].long())):
        weights = 2 ** torch.arange(mapping.shape[1])
        addr = ((x[:, mapping] > 0).long() * weights).sum(-1)  # (B, N)
        x = (luts.gather(1, addr.t()).t() > 0).float()
    return x.view(len(x), 10, 2).sum(-1)


def test_imported_model_computes_the_formula_and_freezes_exactly():
    state = _torch_dwn_state()
    thresholds = torch.tensor([[4.0, 8.0, 12.0]]).repeat(64, 1)  # (F, z), feature-wise
    encoder, model = from_torch_dwn(state, thresholds, num_classes=10)
    x = torch.randint(0, 17, (50, 64)).float()
    bits = encoder.binarize(x).flatten(1)
    with torch.no_grad():
        assert torch.equal(model(bits), _formula(state, bits))
    net = freeze(model, encoder, InputFormat(8, 0, False))
    assert np.array_equal(net.predict(x.numpy().astype(np.int64)), model(bits).argmax(-1).numpy())


def test_a_checkpoint_of_the_import_exports_and_evaluates(tmp_path):
    from dwn_train.evaluate import run_eval
    from dwn_train.deploy import run_export

    encoder, model = from_torch_dwn(_torch_dwn_state(), torch.tensor([[4.0, 8.0, 12.0]]).repeat(64, 1), 10)
    to_checkpoint(tmp_path / "imported.pt", encoder, model, dataset={"kind": "digits"})
    verdict = run_export(OmegaConf.merge(OmegaConf.structured(ExportConfig), dict(
        checkpoint=str(tmp_path / "imported.pt"), format="json", verify=True, out=str(tmp_path / "x"))), tmp_path)
    assert verdict.startswith("PASS")
    accuracy = run_eval(OmegaConf.merge(OmegaConf.structured(EvalConfig), dict(
        checkpoint=str(tmp_path / "imported.pt"), device="cpu")), tmp_path)
    restored = restore(tmp_path / "imported.pt")  # the checkpoint holds the imported network, unchanged
    assert torch.equal(restored.encoder.thresholds, encoder.thresholds)
    data = load_dataset(restored.config.dataset)
    with torch.no_grad():
        scores = model(encoder.binarize(data.x_test).flatten(1))
        assert torch.equal(restored.model.eval()(restored.encoder.binarize(data.x_test).flatten(1)), scores)
    assert accuracy == pytest.approx((scores.argmax(-1) == data.y_test).float().mean().item())


def test_bad_torch_dwn_states_are_one_sentence():
    state = _torch_dwn_state()
    with pytest.raises(DWNError, match="no torch-dwn LUT layer"):
        from_torch_dwn({}, torch.zeros(64, 3), 10)
    with pytest.raises(DWNError, match="does not fit a layer of 96 inputs"):
        from_torch_dwn(state, torch.zeros(32, 3), 10)
    with pytest.raises(DWNError, match="cannot be split into 3 GroupSum groups"):
        from_torch_dwn(state, torch.zeros(64, 3), 3)


def test_a_global_thermometer_needs_the_feature_count():
    state = _torch_dwn_state()
    with pytest.raises(DWNError, match="pass num_features"):
        from_torch_dwn(state, torch.tensor([4.0, 8.0, 12.0]), 10)
    encoder, model = from_torch_dwn(state, torch.tensor([[4.0, 8.0, 12.0]]), 10, num_features=64)
    x = torch.randint(0, 17, (20, 64)).float()
    bits = encoder.binarize(x).flatten(1)
    assert bits.shape == (20, 192)
    with torch.no_grad():
        assert torch.equal(model(bits), _formula(state, bits))
