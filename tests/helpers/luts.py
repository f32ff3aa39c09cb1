"""Comparing LUT results across implementations and precisions."""

from __future__ import annotations


def assert_near(got, ref, what: str, tol: float) -> None:
    """|got - ref| <= tol x max(1, max |ref|): float32 rounding, scaled to the magnitude; the shapes
    must match."""
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    if ref.numel():
        scale = max(1.0, ref.abs().max().item())
        error = (got.double() - ref).abs().max().item()
        assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:g} x {scale:.3g}"


def assert_same_lut_results(got, ref, tol: float) -> None:
    """One LUT implementation's (out, grad_x, grad_luts, grad_weights) in float32 against the
    reference's in float64: the forward output equal, each gradient present on both sides or on
    neither, float32, and near (assert_near)."""
    import torch

    assert got[0].dtype == torch.float32 and torch.equal(got[0].double(), ref[0]), "forward output differs"
    for what, mine, theirs in zip(("input gradient", "table gradient", "weight gradient"), got[1:], ref[1:]):
        assert (mine is None) == (theirs is None), what
        if mine is not None:
            assert mine.dtype == torch.float32, f"{what}: dtype {mine.dtype}"
            assert_near(mine, theirs, what, tol)
