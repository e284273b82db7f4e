"""PuLID's ID branch in SDXL's cross-attention: ORTHO_v2 over 32 ID tokens plus num_zero zero tokens.

Mirrors `IDAttnProcessor2_0` of ToTheBeginning/PuLID, pulid/attention_processor.py at commit 1aa2fc7
(Apache-2.0), in its v1.1 setting (the module globals ORTHO_v2 = True, NUM_ZERO = num_zero that
app_v1_1.py sets). Written here, not imported: the reference reads its settings from module globals
(one setting per process) and computes the ID keys and values again at every step; this class takes its
settings per call and its keys and values once per call (`precompute`). The text attention is diffusers'
AttnProcessor2_0, step for step; the ID branch is the reference's, step for step, so that the results
agree to rounding (tests/test_pulid.py, against outputs recorded by devtools/pulid_golden.py).

Per cross-attention layer, with q the layer's query [B, heads, N, d] (N image tokens, d = 64):
  k_id, v_id = id_to_k, id_to_v (Linear 2048 -> hidden, no bias) of cat(ID tokens [B, 32, 2048],
               num_zero zeros): [B, heads, 32 + num_zero, d]; the zero tokens give zero keys and values,
               sinks that dilute the ID's attention.
  id_out     = softmax(q k_id^T / sqrt(d)) v_id                            [B, N, hidden]
  p          = softmax(q k_id^T) (unscaled logits), mean over heads, summed over the first 5 keys: [B, N, 1]
  proj       = (sum_N text * id_out) / (sum_N text * text) * text            [B, N, hidden], over the tokens
  out        = text + id_scale * region * (id_out + (p - 1) * proj), in fp32, before to_out.
region is 1 (text-to-image) or the inpainting mask on this layer's token grid [B, N, 1] (1 = regenerate).
With CFG the caller puts the IDFormer's output for zero inputs (the learnt null ID) in the
unconditional rows; the reference runs the halves as separate UNet calls, which every step here keeps apart
(each sum is per batch row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

ID_TOKEN_WIDTH = 2048
# ORTHO_v2 weighs the projection by the attention mass on the first 5 ID tokens (the reference's literal).
ORTHO_V2_LEADING_TOKENS = 5
# v1.1's demo defaults (app_v1_1.py): id_scale 0.8, NUM_ZERO 20.
DEFAULT_ID_SCALE = 0.8
DEFAULT_NUM_ZERO = 20


class PuLIDAttnProcessor(nn.Module):
    """A cross-attention processor with PuLID's ID branch; without `precompute` it is plain attention.

    id_to_k / id_to_v: Linear(2048 -> hidden_size, no bias), the checkpoint's
    `id_adapter_attn_layers.{i}.id_to_{k,v}.weight` [hidden_size, 2048].
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int = ID_TOKEN_WIDTH):
        super().__init__()
        self.hidden_size = hidden_size
        self.id_to_k = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.id_to_v = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        # One call's state, set by precompute() and cleared by forget().
        self.key_values: tuple[torch.Tensor, torch.Tensor] | None = None
        self.id_scale = DEFAULT_ID_SCALE
        # Token count N -> [B, N, 1] region weights, shared by all the layers of a UNet; None: everywhere.
        self.regions: dict[int, torch.Tensor] | None = None

    def precompute(
        self,
        attn: Attention,
        id_tokens: torch.Tensor,
        num_zero: int,
        id_scale: float,
        regions: dict[int, torch.Tensor] | None = None,
    ) -> None:
        """Set one call's ID keys and values from id_tokens [B, 32, 2048] (B: the UNet's batch, the null ID
        in the unconditional rows), with num_zero zero tokens appended, as the reference does."""
        zeros = id_tokens.new_zeros(id_tokens.shape[0], num_zero, id_tokens.shape[-1])
        tokens = torch.cat((id_tokens, zeros), dim=1)
        head_dim = self.hidden_size // attn.heads
        key = self.id_to_k(tokens).view(tokens.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
        value = self.id_to_v(tokens).view(tokens.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
        self.key_values = (key, value)
        self.id_scale = id_scale
        self.regions = regions

    def forget(self) -> None:
        """Drop the call's keys, values and regions (the next call sets its own)."""
        self.key_values = None
        self.regions = None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        if self.key_values is not None:
            hidden_states = self.add_id(query, hidden_states)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def add_id(self, query: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """text [B, N, hidden] plus the ORTHO_v2 ID branch; query [B, heads, N, d]."""
        id_key, id_value = (t.to(query.dtype) for t in self.key_values)
        batch_size, heads, _, head_dim = query.shape
        id_out = F.scaled_dot_product_attention(query, id_key, id_value)
        id_out = id_out.transpose(1, 2).reshape(batch_size, -1, heads * head_dim).to(query.dtype)

        orig_dtype = text.dtype
        text = text.to(torch.float32)
        id_out = id_out.to(torch.float32)
        # The reference's logits here are unscaled (no 1/sqrt(d)), in the query's dtype.
        attn_mean = (query @ id_key.transpose(-2, -1)).softmax(dim=-1).mean(dim=1)
        attn_mean = attn_mean[:, :, :ORTHO_V2_LEADING_TOKENS].sum(dim=-1, keepdim=True)
        projection = (
            torch.sum(text * id_out, dim=-2, keepdim=True)
            / torch.sum(text * text, dim=-2, keepdim=True)
            * text
        )
        orthogonal = id_out + (attn_mean - 1) * projection
        if self.regions is not None:
            orthogonal = orthogonal * self.regions[text.shape[1]].to(torch.float32)
        return (text + self.id_scale * orthogonal).to(orig_dtype)
