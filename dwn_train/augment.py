"""Augmentation of image data (dataset.augment): random translations of the raw images of each
training batch, on the training device, before thermometer encoding.

The thresholds are fitted on the un-augmented training split (dwn_train/prepare.py). Shifts are
drawn from a CPU generator seeded by (seed, epoch) for the whole global batch, so a resumed run
and a DDP run (each rank takes its shard of the draws) see exactly the same augmented batches as
an uninterrupted single-process run.
"""

from __future__ import annotations

import torch


def draw_shifts(count: int, shift: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 2) integer offsets (dy, dx), each uniform in -shift..shift."""
    return torch.randint(-shift, shift + 1, (count, 2), generator=generator)


def translate(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each image (B, H, W[, C]) moved by its (dy, dx) (B, 2): pixel (r, c) of the result is pixel
    (r - dy, c - dx) of the input, zero where that falls outside."""
    batch, height, width = images.shape[:3]
    shifts = shifts.to(images.device)
    rows = torch.arange(height, device=images.device) - shifts[:, :1]  # (B, H) source rows
    cols = torch.arange(width, device=images.device) - shifts[:, 1:]  # (B, W) source columns
    inside = ((rows >= 0) & (rows < height)).unsqueeze(2) & ((cols >= 0) & (cols < width)).unsqueeze(1)
    b = torch.arange(batch, device=images.device).view(-1, 1, 1)
    moved = images[b, rows.clamp(0, height - 1).unsqueeze(2), cols.clamp(0, width - 1).unsqueeze(1)]
    mask = inside.view(batch, height, width, *([1] * (images.dim() - 3)))
    return torch.where(mask, moved, torch.zeros((), dtype=images.dtype, device=images.device))


def augmented_bits(images, encoder, shift: int):
    """inputs(index, draws) -> float model inputs (B, W) of the training images `images`
    (S, H, W[, C], on the training device) at `index`, translated by `draws` (B, 2), then encoded."""
    def inputs(index: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        moved = translate(images[index], draws)
        return encoder.binarize(moved.flatten(1).float()).flatten(1)

    return inputs
