"""Key names and shapes of one layer of IP-Adapter's perceiver resampler, as the published checkpoints
store it (a PerceiverAttention, then a LayerNorm + two-Linear feed-forward). FaceID Plus v2 and IP-Adapter
Plus both use this layer; each checkpoint builder stacks it under its own prefix and widths."""

from __future__ import annotations


def perceiver_layer_shapes(prefix: str, width: int, inner: int, ff_mult: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.0.norm1.weight": (width,),
        f"{prefix}.0.norm1.bias": (width,),
        f"{prefix}.0.norm2.weight": (width,),
        f"{prefix}.0.norm2.bias": (width,),
        f"{prefix}.0.to_q.weight": (inner, width),
        f"{prefix}.0.to_kv.weight": (2 * inner, width),
        f"{prefix}.0.to_out.weight": (width, inner),
        f"{prefix}.1.0.weight": (width,),  # the feed-forward's LayerNorm
        f"{prefix}.1.0.bias": (width,),
        f"{prefix}.1.1.weight": (ff_mult * width, width),
        f"{prefix}.1.3.weight": (width, ff_mult * width),
    }
