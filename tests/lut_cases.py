"""Inputs of one LUT layer call, shared by the kernel tests on the CPU (test_kernels_host.py) and
on the GPU (test_gpu.py)."""

import torch


def lut_case(n, num, inputs, batch, mapping="random", seed=0, device="cpu"):
    """x (B, I) with exact zeros (a 0 bit), tables (N, 2^n) in [-1, 1], the output gradient (B, N)
    and the wiring: a fixed mapping (N, n) (random, or 'repeated': every LUT reads one input twice
    and the last reads one input n times) or learnable weights (I, N n) with their argmax."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, inputs, generator=gen)
    x[:, ::5] = 0.0
    case = {"x": x, "luts": torch.rand(num, 2**n, generator=gen) * 2 - 1,
            "grad": torch.randn(batch, num, generator=gen), "weights": None}
    if mapping == "learnable":
        case["weights"] = torch.rand(inputs, num * n, generator=gen)
        case["mapping"] = case["weights"].max(dim=0).indices.view(num, n)
    elif mapping == "repeated":
        wiring = torch.randint(0, inputs, (num, n), generator=gen)
        wiring[:, -1] = wiring[:, 0]
        wiring[-1] = wiring[-1, 0]
        case["mapping"] = wiring
    else:
        case["mapping"] = torch.randint(0, inputs, (num, n), generator=gen)
    return {k: None if v is None else v.to(device) for k, v in case.items()}
