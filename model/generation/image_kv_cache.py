"""The image tokens' projection and the cross-attention keys and values, computed once per pipeline call.

The IP-Adapters' image tokens are the same at every denoising step of a call, and so are the keys and
values the cross-attention layers compute from them, and from the text embeddings; diffusers computes all
of them again at every step (about 150 operators per UNet call for the projections, 17 per IP attention
layer for the image keys and values, 12 per cross-attention layer for the text's).
project_once_per_call swaps the UNet's image projection and IP-Adapter attention processors for the
subclasses here, which keep the weights, module names and arithmetic of diffusers' own (identical results)
and only skip the repeated work. CharacterPipeline calls it once at load and `forget()` on every request.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import MultiIPAdapterImageProjection

from model.identity.pulid.id_attention import PuLIDAttnProcessor


class IPAttnProcessorWithPrecomputedKV(IPAdapterAttnProcessor2_0):
    """diffusers' IP-Adapter attention, with each adapter's image key and value computed once per call.

    The image tokens are the same at every denoising step of a pipeline call, so their key and value
    (to_k_ip/to_v_ip, then split into heads) are too; diffusers computes them again in every
    cross-attention layer at every step (about 17 operators a layer). ProjectedOncePerCall sets
    `key_values` when it projects a call's tokens (eagerly, outside the compiled graphs) and clears
    it in forget(); while it is set, this processor uses those tensors instead of running
    to_k_ip/to_v_ip, and otherwise (or with ip_adapter_masks) it is diffusers' processor unchanged.
    Nothing in diffusers caches these, hence our own class; it subclasses diffusers' so that the weights,
    their names and set_ip_adapter_scale stay the same. The arithmetic is the same as diffusers' (the
    same operators on the same tensors), so the results are identical.
    """

    # Per adapter: (key, value), each (batch, heads, tokens, head_dim); None: compute them per step.
    key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    # PuLID's ID branch of this cross-attention (model/identity/pulid/id_attention.py), when PuLID is loaded:
    # added to the text attention's output before the image adapters', as the reference adds it. A submodule
    # (its weights move with the UNet), so set in __init__, not as a class attribute that would shadow it.
    id_branch: PuLIDAttnProcessor | None

    # The text's (key, value), each (batch, heads, 77, head_dim), for one call; None: compute them per step.
    text_key_values: tuple[torch.Tensor, torch.Tensor] | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.id_branch = None

    @classmethod
    def replacing(cls, processor: IPAdapterAttnProcessor2_0) -> IPAttnProcessorWithPrecomputedKV:
        """A processor over the same to_k_ip/to_v_ip layers (shared, not copied) and scales."""
        # The meta device spares allocating the new linears' weights, which are replaced at once.
        with torch.device("meta"):
            new = cls(processor.hidden_size, processor.cross_attention_dim, processor.num_tokens, 1.0)
        new.to_k_ip, new.to_v_ip, new.scale = processor.to_k_ip, processor.to_v_ip, list(processor.scale)
        return new

    @property
    def _id_branch_on(self) -> bool:
        return self.id_branch is not None and self.id_branch.key_values is not None

    def _precomputed_path(self, encoder_hidden_states, ip_adapter_masks) -> bool:
        """Whether this call can use key_values; otherwise diffusers' processor runs, unchanged."""
        if (
            self.key_values is not None
            and ip_adapter_masks is None
            and isinstance(encoder_hidden_states, tuple)
        ):
            return True
        # diffusers' own processor (the fallback) knows nothing of the ID branch: never drop it silently.
        if self._id_branch_on:
            raise ValueError("PuLID's ID branch runs only with the image keys and values precomputed")
        return False

    def precompute(self, attn, ip_hidden_states: list[torch.Tensor]) -> None:
        """Set key_values from one call's image tokens, as ProjectedOncePerCall returns them: per adapter
        (batch, images, tokens, cross_attention_dim), batch the UNet's (2 with CFG). attn: the Attention
        module this processor belongs to (its number of heads)."""
        key_values = []
        for tokens, to_k_ip, to_v_ip in zip(ip_hidden_states, self.to_k_ip, self.to_v_ip, strict=True):
            # The same operators as diffusers' __call__: head_dim there is to_k's width over the heads.
            head_dim = attn.to_k.out_features // attn.heads
            key = to_k_ip(tokens).view(tokens.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
            value = to_v_ip(tokens).view(tokens.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
            key_values.append((key, value))
        self.key_values = key_values

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not self._precomputed_path(encoder_hidden_states, ip_adapter_masks):
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale, ip_adapter_masks
            )
        # From here on, diffusers' IPAdapterAttnProcessor2_0.__call__ (0.42.1) without masks, with the
        # image keys and values taken from key_values.
        encoder_hidden_states, _ = encoder_hidden_states
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        key, value = self._text_keys_and_values(attn, encoder_hidden_states)
        head_dim = key.shape[-1]
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        if self._id_branch_on:  # in head layout, before the heads are merged
            hidden_states = self.id_branch.add_id(query, hidden_states)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = self._add_image_attention(attn, query, hidden_states)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def precompute_text(self, attn, text: torch.Tensor) -> None:
        """Set text_key_values from one call's text embeddings [B, 77, cross_attention_dim]: the same at
        every step, so their keys and values are too (to_k and to_v, then split into heads)."""
        self.text_key_values = None
        self.text_key_values = self._text_keys_and_values(attn, text)

    def _text_keys_and_values(self, attn, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The text's key and value, each [B, heads, 77, head_dim]: precomputed when set, else computed
        with diffusers' operators."""
        if self.text_key_values is not None:
            return self.text_key_values
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        key = attn.to_k(text)
        value = attn.to_v(text)
        head_dim = key.shape[-1] // attn.heads
        key = key.view(text.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(text.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
        return key, value

    def _add_image_attention(self, attn, query: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, N, C] plus each adapter's scaled attention over its precomputed image keys and
        values; query [B, heads, N, head_dim]."""
        batch_size, heads, _, head_dim = query.shape
        for (ip_key, ip_value), ip_scale in zip(self.key_values, self.scale, strict=True):
            # diffusers skips an adapter whose scale is 0 (or whose scales are all 0).
            if all(s == 0 for s in ip_scale) if isinstance(ip_scale, list) else ip_scale == 0:
                continue
            if ip_key.shape[0] != batch_size or ip_key.shape[1] != heads:
                raise ValueError(
                    f"precomputed image keys {tuple(ip_key.shape)} do not fit batch {batch_size} with "
                    f"{heads} heads: the UNet was called with other image tokens than were precomputed"
                )
            ip_hidden_states = F.scaled_dot_product_attention(
                query, ip_key, ip_value, attn_mask=None, dropout_p=0.0, is_causal=False
            )
            ip_hidden_states = ip_hidden_states.transpose(1, 2).reshape(batch_size, -1, heads * head_dim)
            ip_hidden_states = ip_hidden_states.to(query.dtype)
            hidden_states = hidden_states + ip_scale * ip_hidden_states
        return hidden_states


class ProjectedOncePerCall(MultiIPAdapterImageProjection):
    """The UNet's image projection (both adapters' projection layers), run once per pipeline call.

    The pipeline hands the UNet the same image_embeds list at every denoising step, and the tokens
    projected from it do not change between steps; diffusers projects them again at each step (the
    FaceID projection and IP-Adapter Plus's 4-layer resampler: about 150 operators per UNet call). This
    keeps the last input list and its tokens, and returns them while the same list object comes back.
    When it projects a new list, it also sets each IP attention layer's image keys and values
    (IPAttnProcessorWithPrecomputedKV.precompute), once per call rather than per step and layer.
    prepare() calls forget(), because the FaceID projection also reads per-request attributes
    (clip_embeds, shortcut_scale). Nothing in diffusers does this, hence our own class; it subclasses
    diffusers' so that the module names, the weights and everything else stay the same.
    """

    def __init__(self, image_projection_layers, ip_attentions=()) -> None:
        super().__init__(image_projection_layers)
        # A tuple, not a ModuleList: the attention layers stay the UNet's submodules only.
        self._ip_attentions = tuple(ip_attentions)

    def forget(self) -> None:
        self._last: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._last_text: tuple[torch.Tensor, tuple[int, ...]] | None = None
        for attention in self._ip_attentions:
            attention.processor.key_values = None
            attention.processor.text_key_values = None

    def project_text(self, text: torch.Tensor) -> None:
        """Set every IP attention layer's text keys and values when a call's text embeddings come first
        (the pipeline hands the UNet the same tensor at every step of a call), or when to_k / to_v changed
        since (a LoRA merged in place bumps their weights' version counters)."""
        versions = tuple(
            layer.weight._version
            for attention in self._ip_attentions
            for layer in (attention.to_k, attention.to_v)
        )
        last = getattr(self, "_last_text", None)
        if last is not None and last[0] is text and last[1] == versions:
            return
        for attention in self._ip_attentions:
            attention.processor.precompute_text(attention, text)
        # Holding the tensor keeps it alive, so its identity cannot pass to another tensor.
        self._last_text = (text, versions)

    def forward(self, image_embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        last = getattr(self, "_last", None)
        if last is not None and last[0] is image_embeds:
            return last[1]
        projected = super().forward(image_embeds)
        for attention in self._ip_attentions:
            attention.processor.precompute(attention, projected)
        # Holding the list keeps it alive, so its identity cannot pass to another list.
        self._last = (image_embeds, projected)
        return projected


def project_once_per_call(unet) -> None:
    """Replace the UNet's image projection by a ProjectedOncePerCall over the same projection layers,
    and its IP-Adapter attention processors by IPAttnProcessorWithPrecomputedKV over the same layers."""
    projection = unet.encoder_hid_proj
    if type(projection) is MultiIPAdapterImageProjection:
        ip_attentions = []
        for module in unet.modules():
            if isinstance(module, Attention) and type(module.processor) is IPAdapterAttnProcessor2_0:
                module.set_processor(IPAttnProcessorWithPrecomputedKV.replacing(module.processor))
                ip_attentions.append(module)
        unet.encoder_hid_proj = ProjectedOncePerCall(projection.image_projection_layers, ip_attentions)
        unet.encoder_hid_proj.forget()
        _project_text_once_per_call(unet)


def _project_text_once_per_call(unet) -> None:
    """Wrap the UNet's process_encoder_hidden_states (where diffusers hands the image embeddings to
    encoder_hid_proj) so that it also gives the text embeddings to
    ProjectedOncePerCall.project_text. diffusers has no hook for this; the wrapper is the instance's own
    attribute, the class is untouched. The image projection runs inside it too (diffusers calls
    encoder_hid_proj there), so both run eagerly."""
    process = unet.process_encoder_hidden_states

    # Eager even in a compiled UNet (a graph break): what it caches is recognised by object identity and
    # weight versions, which dynamo would guard on, so that every pipeline call would recompile. Inside the
    # compiled graphs the attention layers read the cached keys and values as plain tensors.
    @torch.compiler.disable
    def process_encoder_hidden_states(encoder_hidden_states, added_cond_kwargs):
        processed = process(encoder_hidden_states, added_cond_kwargs)
        # (text, image tokens): the text as the attention layers receive it.
        unet.encoder_hid_proj.project_text(processed[0])
        return processed

    unet.process_encoder_hidden_states = process_encoder_hidden_states
