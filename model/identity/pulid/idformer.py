"""PuLID v1.1's IDFormer: one face's ID condition and EVA-CLIP features -> 32 ID tokens for the UNet.

Mirrors `IDFormer`, `PerceiverAttention` and `FeedForward` of ToTheBeginning/PuLID,
pulid/encoders_transformer.py at commit 1aa2fc7 (Apache-2.0). Written here, not imported: the reference
repository is not a package (no setup, its modules import timm, facexlib and basicsr at the top) and its
IDFormer is only a few lines of arithmetic. The module names and nn.Sequential indices are the reference's,
so `load_state_dict` of the `id_adapter.*` tensors of pulid_v1.1.safetensors (prefix removed) is strict;
tests/test_pulid.py compares the outputs with the reference's, recorded by devtools/pulid_golden.py.

Shapes (v1.1, the defaults): id_cond [B, 1280] (antelopev2's raw 512-d embedding, then EVA-CLIP's
normalised 768-d CLS projection), or [B, n, 1280] for n reference images; vit_hidden: 5 tensors
[B, n * 577, 1024], the EVA hidden states entering blocks 4, 8, 12, 16 and 20. Output [B, 32, 2048].
"""

from __future__ import annotations

import torch
from torch import nn

# The widths the reference writes as literals (not constructor arguments): EVA02-L's width and id_cond's.
VIT_WIDTH = 1024
ID_COND_WIDTH = 1280
# The reference feeds one ViT scale to each fifth of the layers.
VIT_SCALES = 5


def _mlp(in_features: int, out_features: int, width: int = VIT_WIDTH) -> nn.Sequential:
    """Linear-LayerNorm-LeakyReLU twice, then Linear: indices 0, 1, 3, 4 and 6 hold weights."""
    return nn.Sequential(
        nn.Linear(in_features, width),
        nn.LayerNorm(width),
        nn.LeakyReLU(),
        nn.Linear(width, width),
        nn.LayerNorm(width),
        nn.LeakyReLU(),
        nn.Linear(width, out_features),
    )


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm, Linear (no bias), GELU, Linear (no bias): keys .0, .1 and .3."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class PerceiverAttention(nn.Module):
    """The latents attend to cat(context, latents): multi-head attention, keys and values from both.

    context [B, n1, dim] (normalised by norm1), latents [B, n2, dim] (by norm2) -> [B, n2, dim].
    The reference scales q and k each by dim_head ** -0.25 before the product (for fp16 range) and takes
    the softmax in fp32; the same here, so that the results agree to rounding.
    """

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.norm1(context)
        latents = self.norm2(latents)
        batch, length, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = (self._heads(t) for t in self.to_kv(torch.cat((context, latents), dim=-2)).chunk(2, dim=-1))
        scale = self.dim_head**-0.25
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(batch, length, -1)
        return self.to_out(out)


class IDFormer(nn.Module):
    """Perceiver-style resampler: 32 learnt queries plus 5 tokens from id_cond, refined against 5 ViT scales.

    Parameters (v1.1 defaults; 151,398,400 parameters, 172 tensors):
      dim 1024, depth 10 (2 layers per ViT scale), dim_head 64, heads 16, num_id_token 5, num_queries 32,
      output_dim 2048 (SDXL's cross-attention width), ff_mult 4; vit_width 1024 and id_cond_width 1280,
      literals in the reference, are arguments here only so that the tiny profile's miniature can be smaller.
    """

    def __init__(
        self,
        dim: int = 1024,
        depth: int = 10,
        dim_head: int = 64,
        heads: int = 16,
        num_id_token: int = 5,
        num_queries: int = 32,
        output_dim: int = 2048,
        ff_mult: int = 4,
        vit_width: int = VIT_WIDTH,
        id_cond_width: int = ID_COND_WIDTH,
    ):
        super().__init__()
        if depth % VIT_SCALES:
            raise ValueError(f"IDFormer depth must be a multiple of {VIT_SCALES}, got {depth}")
        self.dim = dim
        self.num_id_token = num_id_token
        self.num_queries = num_queries
        self.layers_per_scale = depth // VIT_SCALES
        # Initialised as the reference does; every value is replaced when a checkpoint is loaded.
        scale = dim**-0.5
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) * scale)
        self.proj_out = nn.Parameter(scale * torch.randn(dim, output_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        for i in range(VIT_SCALES):
            setattr(self, f"mapping_{i}", _mlp(vit_width, dim, vit_width))
        self.id_embedding_mapping = _mlp(id_cond_width, dim * num_id_token, vit_width)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> IDFormer:
        """An IDFormer of the sizes of an `id_adapter.*` state dict (prefix removed), loaded strictly: the
        v1.1 architecture for the real file, a miniature for the tiny profile. Heads are 64 wide, as in
        v1.1 (the head count is not in the shapes)."""
        dim = state["latents"].shape[-1]
        inner = state["layers.0.0.to_q.weight"].shape[0]
        dim_head = min(64, inner)
        with torch.device("meta"):
            idformer = cls(
                dim=dim,
                depth=1 + max(int(key.split(".")[1]) for key in state if key.startswith("layers.")),
                dim_head=dim_head,
                heads=inner // dim_head,
                num_id_token=state["id_embedding_mapping.6.weight"].shape[0] // dim,
                num_queries=state["latents"].shape[1],
                output_dim=state["proj_out"].shape[1],
                ff_mult=state["layers.0.1.1.weight"].shape[0] // dim,
                vit_width=state["mapping_0.0.weight"].shape[0],
                id_cond_width=state["id_embedding_mapping.0.weight"].shape[1],
            )
        idformer.load_state_dict(state, strict=True, assign=True)
        return idformer.eval()

    @property
    def id_cond_width(self) -> int:
        return self.id_embedding_mapping[0].in_features

    @property
    def vit_width(self) -> int:
        return self.mapping_0[0].in_features

    def forward(self, id_cond: torch.Tensor, vit_hidden: list[torch.Tensor]) -> torch.Tensor:
        """id_cond [B, 1280] or [B, n, 1280]; vit_hidden 5 x [B, n * 577, 1024] -> [B, 32, 2048]."""
        if len(vit_hidden) != VIT_SCALES:
            raise ValueError(f"IDFormer takes {VIT_SCALES} ViT hidden states, got {len(vit_hidden)}")
        images = id_cond.shape[1] if id_cond.ndim == 3 else 1
        id_tokens = self.id_embedding_mapping(id_cond).reshape(-1, self.num_id_token * images, self.dim)
        latents = torch.cat((self.latents.repeat(id_tokens.shape[0], 1, 1), id_tokens), dim=1)
        for i, hidden in enumerate(vit_hidden):
            context = torch.cat((id_tokens, getattr(self, f"mapping_{i}")(hidden)), dim=1)
            for attention, feed_forward in self.layers[
                i * self.layers_per_scale : (i + 1) * self.layers_per_scale
            ]:
                latents = attention(context, latents) + latents
                latents = feed_forward(latents) + latents
        return latents[:, : self.num_queries] @ self.proj_out
