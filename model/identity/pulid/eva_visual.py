"""EVA02-CLIP-L-14-336's visual tower: a parsed face image -> its CLS projection and 5 hidden states.

Mirrors `EVAVisionTransformer` (with `Attention`, `SwiGLU`, `Block`, `PatchEmbed`) of
ToTheBeginning/PuLID, eva_clip/eva_vit_model.py, and `VisionRotaryEmbeddingFast` of eva_clip/rope.py, at
commit 1aa2fc7 (the EVA-CLIP code, MIT), in the configuration eva_clip/model_configs/EVA02-CLIP-L-14-336.json
builds (model.py `_build_vision_tower`: qkv biases, sub-LN, SwiGLU, 2-D RoPE interpolated from 16 to 24
positions, LayerNorm eps 1e-6, the CLS token for pooling). Written here, not imported: that package imports
timm (and through it torchvision, which does not load beside this torch) at the top, and carries the text
tower, training code and xformers/apex paths the service never runs. Attention here is torch's
scaled_dot_product_attention, the same arithmetic as the reference's explicit softmax (and its xformers path).

Keys: the checkpoint EVA02_CLIP_L_336_psz14_s6B.pt's `visual.*` tensors with `visual.` removed, loaded
strictly. The RoPE tables are not in that file (the reference registers them as buffers and loads the
file non-strictly); here they are computed at construction and are not part of the state dict.

Input: [B, 3, 336, 336], the grey-face-on-white image normalised with OpenAI CLIP's mean and std
(face_parsing.eva_input). Output: the CLS token after the final LayerNorm, projected by `head` to 768 and
L2-normalised [B, 768]; and the hidden states entering blocks 4, 8, 12, 16 and 20, each [B, 577, 1024].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# The blocks whose inputs PuLID takes (the reference: 0 < idx <= 20 and idx % 4 == 0).
HIDDEN_STATE_BLOCKS = (4, 8, 12, 16, 20)
# EVA02-L's attention heads are 64 channels wide (width 1024, 16 heads).
HEAD_DIM = 64
LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class EVAVisionConfig:
    """The tower's sizes; the defaults are EVA02-CLIP-L-14-336's (304.4 M parameters)."""

    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_ratio: float = 2.6667
    embed_dim: int = 768  # the CLIP projection (`head`)
    rope_pretrained_grid: int = 16  # pt_hw_seq_len: the grid RoPE was trained on (224 / 14)
    # The SwiGLU's hidden width when it is not int(width * mlp_ratio) (a miniature read from its file).
    mlp_width: int | None = None

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_width or int(self.width * self.mlp_ratio)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> EVAVisionConfig:
        """The sizes a `visual.*` state dict (prefix removed) was built with: EVA02-CLIP-L-14-336's for the
        real file, a miniature's for the tiny profile. The head count is not in the shapes: EVA02's heads
        are HEAD_DIM wide (1024 / 16)."""
        width = state["cls_token"].shape[-1]
        patch_size = state["patch_embed.proj.weight"].shape[-1]
        grid = math.isqrt(state["pos_embed"].shape[1] - 1)
        depth = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("blocks."))
        mlp_width = state["blocks.0.mlp.w1.weight"].shape[0]
        return cls(
            image_size=grid * patch_size,
            patch_size=patch_size,
            width=width,
            depth=depth,
            heads=max(1, width // HEAD_DIM),
            embed_dim=state["head.weight"].shape[0],
            mlp_width=None if mlp_width == int(width * cls.mlp_ratio) else mlp_width,
        )


def rope_tables(config: EVAVisionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [grid * grid, head_dim]: 2-D rotary angles, the first half of each head's channels
    turning with the patch's row, the second with its column; frequencies 10000^(-2i / (head_dim / 2)),
    positions rescaled from the actual grid to the pretrained one, each angle used for a pair of channels."""
    half = config.width // config.heads // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    positions = torch.arange(config.grid) / config.grid * config.rope_pretrained_grid
    angles = torch.einsum("i,f->if", positions, freqs).repeat_interleave(2, dim=-1)  # [grid, half]
    rows = angles[:, None, :].expand(config.grid, config.grid, half)
    columns = angles[None, :, :].expand(config.grid, config.grid, half)
    table = torch.cat((rows, columns), dim=-1).reshape(config.grid * config.grid, 2 * half)
    return table.cos(), table.sin()


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (biases on q and v only), RoPE on the
    patch tokens (not the CLS), and a LayerNorm on the heads' output before `proj` (sub-LN)."""

    def __init__(self, config: EVAVisionConfig):
        super().__init__()
        self.heads = config.heads
        width = config.width
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.inner_attn_ln = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        batch, length, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, length, self.heads, -1).permute(0, 2, 1, 3)

        q = heads(F.linear(x, self.q_proj.weight, self.q_bias))
        k = heads(F.linear(x, self.k_proj.weight))
        v = heads(F.linear(x, self.v_proj.weight, self.v_bias))
        cos, sin = rope
        q = torch.cat((q[:, :, :1], q[:, :, 1:] * cos + _rotate_pairs(q[:, :, 1:]) * sin), dim=-2).type_as(v)
        k = torch.cat((k[:, :, :1], k[:, :, 1:] * cos + _rotate_pairs(k[:, :, 1:]) * sin), dim=-2).type_as(v)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, -1)
        return self.proj(self.inner_attn_ln(out))


class SwiGLU(nn.Module):
    """w3(LayerNorm(silu(w1 x) * w2 x)): hidden width int(width * 2.6667) = 2730."""

    def __init__(self, config: EVAVisionConfig):
        super().__init__()
        self.w1 = nn.Linear(config.width, config.mlp_hidden)
        self.w2 = nn.Linear(config.width, config.mlp_hidden)
        self.ffn_ln = nn.LayerNorm(config.mlp_hidden, eps=LAYER_NORM_EPS)
        self.w3 = nn.Linear(config.mlp_hidden, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1 x), then x + mlp(norm2 x)."""

    def __init__(self, config: EVAVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """patch_size x patch_size patches -> width channels (a strided convolution, key `proj`)."""

    def __init__(self, config: EVAVisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, config.width, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EVAVisionTower(nn.Module):
    """The visual tower; forward(image) -> (normalised CLS projection, 5 hidden states)."""

    def __init__(self, config: EVAVisionConfig | None = None):
        super().__init__()
        self.config = config = config or EVAVisionConfig()
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid * config.grid + 1, config.width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(config.width, config.embed_dim)
        cos, sin = rope_tables(config)
        # Computed, not loaded: the checkpoint does not hold them.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """image [B, 3, S, S] (S = image_size) -> ([B, embed_dim] unit vectors, 5 x [B, tokens, width])."""
        size = self.config.image_size
        if tuple(image.shape[-2:]) != (size, size):
            raise ValueError(f"EVA-CLIP takes {size}x{size} images, got {tuple(image.shape[-2:])}")
        x = self.patch_embed(image)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        rope = (self.rope_cos, self.rope_sin)
        hidden_states = []
        for index, block in enumerate(self.blocks):
            if index in HIDDEN_STATE_BLOCKS:
                hidden_states.append(x)
            x = block(x, rope)
        projection = self.head(self.norm(x)[:, 0])
        return projection / torch.norm(projection, 2, 1, True), hidden_states
