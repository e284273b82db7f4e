"""PuLID's ID branch in SDXL's cross-attention: ORTHO_v2 over 32 ID tokens plus num_zero zero tokens.

Mirrors `IDAttnProcessor2_0` of ToTheBeginning/PuLID, pulid/attention_processor.py at commit 1aa2fc7
(Apache-2.0), in its v1.1 setting (the module globals ORTHO_v2 = True, NUM_ZERO = num_zero that
app_v1_1.py sets). Written here, not imported: the reference reads its settings from module globals
(one setting per process) and computes the ID keys and values again at every step; this class takes its
settings per call and its keys and values once per call (`precompute`). The text attention is diffusers'
AttnProcessor2_0, step for step; the ID branch is the reference's arithmetic, rearranged to a dozen
operators a layer (`add_id`), so that the results agree to rounding (tests/test_pulid.py, against outputs
recorded by devtools/pulid_golden.py).

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

from model.generation.settings import PULID_ID_SCALE, PULID_NUM_ZERO

ID_TOKEN_WIDTH = 2048
# ORTHO_v2 weighs the projection by the attention mass on the first 5 ID tokens (the reference's literal).
ORTHO_V2_LEADING_TOKENS = 5
# v1.1's demo defaults (app_v1_1.py): id_scale 0.8, NUM_ZERO 20.
DEFAULT_ID_SCALE = PULID_ID_SCALE
DEFAULT_NUM_ZERO = PULID_NUM_ZERO


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
        # (ID keys, ID values times id_scale, selector values), each [B, heads, 32 + num_zero, d].
        self.key_values: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.id_scale = DEFAULT_ID_SCALE
        # This layer's inpainting region, [B, 1, N, 1] (1 = regenerate); None: everywhere.
        self.region: torch.Tensor | None = None

    def precompute(
        self,
        attn: Attention,
        id_tokens: torch.Tensor,
        num_zero: int,
        id_scale: float,
        region: torch.Tensor | None = None,
    ) -> None:
        """Set one call's ID keys and values from id_tokens [B, 32, 2048] (B: the UNet's batch, the null ID
        in the unconditional rows), with num_zero zero tokens appended, as the reference does.

        Also computed once here, so that each step runs the fewest operators (see add_id): the values
        times id_scale, and the "selector" values whose attention (at unscaled logits) is the attention
        mass on the first 5 ID tokens minus 1, over the heads. region: this layer's inpainting region on
        its token grid, [1 or B, N, 1] (1 = regenerate); None: the whole image. One tensor per layer, not a
        lookup by N at each step: a compiled block would specialise on N.
        """
        zeros = id_tokens.new_zeros(id_tokens.shape[0], num_zero, id_tokens.shape[-1])
        tokens = torch.cat((id_tokens, zeros), dim=1)
        heads = attn.heads
        head_dim = self.hidden_size // heads
        key = self.id_to_k(tokens).view(tokens.shape[0], -1, heads, head_dim).transpose(1, 2)
        value = self.id_to_v(tokens).view(tokens.shape[0], -1, heads, head_dim).transpose(1, 2)
        # softmax weights sum to 1, so their weighted sum of (1 on the first 5 tokens, 0 elsewhere) - 1 is
        # p - 1; divided by the heads, the sum over heads is the reference's mean. head_dim wide (every
        # channel the same), so that attention runs as one fused kernel.
        selector = torch.full_like(key, -1.0 / heads)
        selector[:, :, :ORTHO_V2_LEADING_TOKENS] = 0.0
        self.key_values = (key, value * id_scale, selector)
        self.id_scale = id_scale
        self.region = region.unsqueeze(1) if region is not None else None

    def forget(self) -> None:
        """Drop the call's keys, values and region (the next call sets its own)."""
        self.key_values = None
        self.region = None

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
        if self.key_values is not None:
            hidden_states = self.add_id(query, hidden_states)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def add_id(self, query: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The text attention's output plus the ORTHO_v2 ID branch, both in head layout [B, heads, N, d];
        query [B, heads, N, d].

        The reference's arithmetic, rearranged (the same result to rounding; tests/test_pulid.py):
          text + s * (id_out + (p - 1) * c * text),   c = sum_N(text * id_out) / sum_N(text * text),
        with s folded into the values (id_out_s = s * id_out, so c_s = s * c) and p - 1 from one attention
        over the selector values: text + id_out_s + (p - 1) * c_s * text, about a dozen operators a layer.
        The per-channel sums over the tokens N are the same in head layout as over [B, N, hidden].
        """
        id_key, id_value, selector = (t.to(query.dtype) for t in self.key_values)
        orig_dtype = text.dtype
        # In fp32, as the reference computes ORTHO_v2 (no-ops when the UNet runs in fp32).
        id_out = F.scaled_dot_product_attention(query, id_key, id_value).to(torch.float32)
        text = text.to(torch.float32)
        # The reference's logits here are unscaled (no 1/sqrt(d)).
        mass_minus_one = F.scaled_dot_product_attention(query, id_key, selector, scale=1.0)
        mass_minus_one = mass_minus_one.sum(dim=1, keepdim=True).to(torch.float32)
        coefficient = (text * id_out).sum(dim=2, keepdim=True) / (text * text).sum(dim=2, keepdim=True)
        gain = mass_minus_one * coefficient
        if self.region is None:
            return torch.addcmul(text, text, gain).add_(id_out).to(orig_dtype)
        # The whole branch times the region (the projection's coefficient is over all tokens, as in the
        # reference): text + region * (id_out_s + gain * text).
        region = self.region.to(torch.float32)
        return torch.addcmul(text, region, torch.addcmul(id_out, text, gain)).to(orig_dtype)
