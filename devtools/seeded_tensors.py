"""Weights and inputs from a seed and a name alone, so that two implementations get the same numbers.

devtools/pulid_golden.py fills the reference's modules with these and records their outputs;
tests/test_pulid.py fills ours with the same and compares. A tensor depends only on (seed, name, shape,
role), never on the order of a state dict, so the golden files need not store any weights. The scales keep
activations of order one through deep stacks (weights ~ N(0, 1 / fan_in), norms' gains near one).
"""

from __future__ import annotations

import zlib

import torch


def seeded_normal(seed: int, name: str, shape: tuple[int, ...], std: float = 1.0) -> torch.Tensor:
    """N(0, std^2) float32 from a generator seeded with (seed, crc32(name))."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def seeded_tensor(seed: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One state-dict entry by its name: BatchNorm statistics, norm gains, biases, embeddings, weights."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_var":
        return 0.5 + seeded_normal(seed, name, shape).abs()
    if leaf == "running_mean":
        return seeded_normal(seed, name, shape, 0.1)
    if len(shape) <= 1:
        # LayerNorm/BatchNorm gains (named weight) near 1; biases small.
        gain = leaf == "weight"
        return (1.0 if gain else 0.0) + seeded_normal(seed, name, shape, 0.1 if gain else 0.05)
    if leaf in ("cls_token", "pos_embed", "latents"):
        return seeded_normal(seed, name, shape, 0.02 if leaf != "latents" else 1.0)
    if leaf == "proj_out":  # the IDFormer's output matrix, used as x @ proj_out: fan_in is shape[0]
        return seeded_normal(seed, name, shape, shape[0] ** -0.5)
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    return seeded_normal(seed, name, shape, fan_in**-0.5)


def seeded_state_dict(seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """{name: seeded_tensor} for every name in shapes."""
    return {name: seeded_tensor(seed, name, tuple(shape)) for name, shape in shapes.items()}
