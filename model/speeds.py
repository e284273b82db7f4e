"""Rendering speeds: the denoising steps, guidance and identity-adapter scales of each contract speed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Speed:
    num_inference_steps: int
    guidance_scale: float
    # FaceID Plus v2 scales, as its authors publish them: the ID tokens' attention weight, the weight of
    # its LoRA, and the weight of the CLIP face-structure shortcut ("s_scale").
    ip_adapter_scale: float = 1.0
    faceid_lora_scale: float = 1.0
    face_structure_scale: float = 1.0


SPEEDS: dict[str, Speed] = {
    "Turbo": Speed(num_inference_steps=12, guidance_scale=5.0),
    "Default": Speed(num_inference_steps=28, guidance_scale=6.0),
    "Quality": Speed(num_inference_steps=40, guidance_scale=6.5),
}
