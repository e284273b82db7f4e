"""The LoRAs merged into the UNet's weights: which set is merged, and the exact switch to another set.

Owns the LoRA factors (taken from the peft adapters that diffusers' loaders attach), a pristine copy of
every adapted layer's base weight, and the one merged set of (adapter, weight) pairs. A UNet call then
runs plain Linear and Conv2d layers, with no LoRA operator in its forward; a request that needs another
set switches the weights in place (the parameters stay the same tensors, so a compiled graph stays valid).

Why not peft's own merge and unmerge (or diffusers' fuse_lora / unfuse_lora, which call them): unmerge
subtracts the delta that merge added, which in fp16 leaves rounding behind after each switch, and on CUDA
peft computes the delta B @ A in the factors' dtype. Here a switch writes every adapted weight as
fp16(pristine + sum of fp32 deltas), a function of the set alone: after any sequence of switches the
weights equal a fresh merge of the same set, bit for bit. And why not keep the peft layers with their
adapters merged: each wrapper is a Python call per layer per step (788 layers at real size) and state
that torch.compile would guard on; after the factors are taken, peft's layers are unloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from peft.tuners.lora import LoraLayer

log = logging.getLogger(__name__)

# A merged set: (adapter name, weight) pairs, sorted by name, weights non-zero.
LoraSet = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class _Factors:
    """One adapter's LoRA on one layer, flattened to matrices: delta = scaling * up @ down."""

    down: torch.Tensor  # (rank, in_features * kernel area)
    up: torch.Tensor  # (out_features, rank)
    # peft's scaling at adapter weight 1 (lora_alpha / r, or / sqrt(r) with rsLoRA).
    scaling: float


@dataclass(frozen=True, eq=False)
class _AdaptedLayer:
    name: str
    module: torch.nn.Linear | torch.nn.Conv2d
    pristine: torch.Tensor
    factors: dict[str, _Factors]

    def part(self, lora_set: LoraSet) -> LoraSet:
        """The pairs of the set whose adapter adapts this layer."""
        return tuple(pair for pair in lora_set if pair[0] in self.factors)


class MergedLoras:
    """The LoRA sets that can be merged into one UNet, and the set merged now."""

    def __init__(self, layers: list[_AdaptedLayer]) -> None:
        self._layers = layers
        # What the weights hold: a set, or None while a switch is under way or after one failed.
        self._merged: LoraSet | None = ()

    @classmethod
    def take_from(
        cls, unet: UNet2DConditionModel, pristine_device: torch.device | None = None
    ) -> MergedLoras:
        """Take the factors of every peft LoRA adapter in the UNet, then unload peft's layers.

        pristine_device: where the copy of the base weights is kept (default: beside the weights); in
        host memory it is pinned when CUDA is present, so that a switch copies it asynchronously.

        The UNet's adapted layers become plain Linear / Conv2d again with their base weights (nothing is
        merged yet). Raises ValueError for a LoRA kind that merging as up @ down would get wrong (DoRA,
        a LoRA bias, fan_in_fan_out, grouped convolutions).
        """
        adapters = list(getattr(unet, "peft_config", {}))
        if adapters:
            # peft's scaling at weight 1 for every adapter: load_ip_adapter and load_lora_into_unet may
            # leave other weights set. set_adapters is the public way to set them.
            unet.set_adapters(adapters, weights=[1.0] * len(adapters))
        layers = []
        for name, module in unet.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            base = module.get_base_layer()
            if not isinstance(base, torch.nn.Linear | torch.nn.Conv2d):
                raise ValueError(f"{name}: cannot merge a LoRA into a {type(base).__name__}")
            factors = {}
            for adapter in module.lora_A:
                if (
                    module.use_dora.get(adapter)
                    or module.lora_bias.get(adapter)
                    or getattr(module, "fan_in_fan_out", False)
                    or getattr(base, "groups", 1) != 1
                ):
                    raise ValueError(f"{name}: adapter {adapter} is a LoRA kind that is not merged here")
                down, up = module.lora_A[adapter].weight, module.lora_B[adapter].weight
                # peft's conv LoRA has a 1x1 up-projection, so up @ down is the full kernel's delta.
                factors[adapter] = _Factors(
                    down.detach().flatten(1), up.detach().flatten(1), float(module.scaling[adapter])
                )
            layers.append(_AdaptedLayer(name, base, _copy(base.weight, pristine_device), factors))
        if adapters:
            unet.unload_lora()
        log.info("LoRA adapters %s: %d adapted layers, merged per request", adapters, len(layers))
        return cls(layers)

    @property
    def adapters(self) -> frozenset[str]:
        return frozenset(adapter for layer in self._layers for adapter in layer.factors)

    def layer_count(self, adapter: str) -> int:
        """How many UNet layers the adapter adapts."""
        return sum(adapter in layer.factors for layer in self._layers)

    def ranks(self, adapter: str) -> set[int]:
        """The distinct LoRA ranks of the adapter over the layers it adapts."""
        return {layer.factors[adapter].down.shape[0] for layer in self._layers if adapter in layer.factors}

    @property
    def merged(self) -> dict[str, float] | None:
        """The adapters merged now and their weights; None when the weights are in an unknown state."""
        return None if self._merged is None else dict(self._merged)

    @property
    def pristine_bytes(self) -> int:
        """Memory held by the pristine copy of the adapted layers' weights (on their device)."""
        return sum(layer.pristine.numel() * layer.pristine.element_size() for layer in self._layers)

    def use(self, weights: Mapping[str, float]) -> None:
        """Merge exactly these adapters at these weights (a weight of 0 leaves an adapter out).

        Does nothing when that set is merged already. Otherwise rewrites each adapted layer whose part
        of the set changed. The state is marked unknown before the first write, so that after a failure
        part-way the next call rewrites every layer from its pristine copy.
        """
        unknown = sorted(set(weights) - self.adapters)
        if unknown:
            raise ValueError(f"LoRA adapters {unknown} are not loaded (loaded: {sorted(self.adapters)})")
        wanted: LoraSet = tuple(sorted((name, float(w)) for name, w in weights.items() if w))
        previous = self._merged
        if wanted == previous:
            return
        self._merged = None
        for layer in self._layers:
            part = layer.part(wanted)
            if previous is not None and part == layer.part(previous):
                continue
            self._write(layer, part)
        self._merged = wanted

    @staticmethod
    @torch.no_grad()
    def _write(layer: _AdaptedLayer, part: LoraSet) -> None:
        """weight = pristine + sum of weight * scaling * up @ down, summed in fp32 and cast once."""
        target = layer.module.weight
        merged = layer.pristine.to(target.device, non_blocking=True).float()
        for adapter, weight in part:
            factors = layer.factors[adapter]
            delta = factors.up.float() @ factors.down.float()
            # Out of place: on fp32 weights .float() returns the pristine tensor itself.
            merged = merged + (weight * factors.scaling) * delta.view_as(merged)
        target.copy_(merged)


def _copy(weight: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    device = weight.device if device is None else device
    if device == weight.device:
        return weight.detach().clone()
    copy = weight.detach().to(device, copy=True)
    return copy.pin_memory() if device.type == "cpu" and torch.cuda.is_available() else copy  # GPU only
