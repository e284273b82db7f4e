"""What one request asks of the pipeline: GenerationSettings, with its adapter scales and its face.

AdapterScales is the one value that carries the identity adapters' scales from where they are decided
to where they are applied: the rendering speed sets them (model/generation/speeds.py), the style multiplies
them (model/prompting/styles.py), the reference's path zeroes the adapter it does not use
(model/identity/reference.py), and the pipeline sets them on the UNet. GenerationSettings holds everything
else a request changes, the face included, so that `CharacterPipeline.generate` takes one value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # speeds.py imports AdapterScales from here
    import torch

    from model.generation.speeds import SchedulerSpec

# PuLID v1.1's demo defaults (ToTheBeginning/PuLID app_v1_1.py): the ID branch's weight, and the zero tokens
# appended to the 32 ID tokens (attention sinks: more zeros, more room for the prompt).
PULID_ID_SCALE = 0.8
PULID_NUM_ZERO = 20


@dataclass(frozen=True)
class AdapterScales:
    """The identity adapters' scales: FaceID Plus v2's three, PuLID's two, IP-Adapter Plus's weight.

    ip_adapter: the attention weight of FaceID's ID tokens; faceid_lora: the weight of FaceID's LoRA;
    face_structure: the weight of the CLIP face-structure branch added onto the ID tokens (the authors'
    "s_scale"); id_scale: the weight of PuLID's ID branch in every cross-attention; num_zero: the zero
    tokens appended to PuLID's 32 ID tokens (a count; rounded where used); appearance: IP-Adapter Plus's
    attention weight on the appearance image. A scale of 0 turns its adapter off.
    """

    ip_adapter: float = 1.0
    faceid_lora: float = 1.0
    face_structure: float = 1.0
    id_scale: float = PULID_ID_SCALE
    num_zero: float = PULID_NUM_ZERO
    appearance: float = 0.0

    def times(self, factors: AdapterScales) -> AdapterScales:
        """Each scale times the matching factor (a style's factors on a speed's scales)."""
        return AdapterScales(
            **{
                field.name: getattr(self, field.name) * getattr(factors, field.name)
                for field in dataclasses.fields(self)
            }
        )

    def without_face(self) -> AdapterScales:
        """Both face adapters off, the appearance adapter as it is: the path without a face."""
        return dataclasses.replace(
            self, ip_adapter=0.0, faceid_lora=0.0, face_structure=0.0, id_scale=0.0, num_zero=0
        )

    def for_pulid(self) -> AdapterScales:
        """FaceID off (its three scales 0), PuLID and the appearance adapter as they are."""
        return dataclasses.replace(self, ip_adapter=0.0, faceid_lora=0.0, face_structure=0.0)

    def for_faceid(self) -> AdapterScales:
        """PuLID off, FaceID and the appearance adapter as they are."""
        return dataclasses.replace(self, id_scale=0.0, num_zero=0)

    @property
    def zero_tokens(self) -> int:
        """num_zero as the count of zero tokens PuLID's attention appends."""
        return round(self.num_zero)

    def with_appearance(self, appearance: float) -> AdapterScales:
        return dataclasses.replace(self, appearance=appearance)


# eq=False: field-wise == on numpy arrays is ambiguous; a FaceCondition compares by object.
@dataclass(frozen=True, eq=False)
class FaceCondition:
    """What FaceID Plus v2 reads of the reference's face (model/identity/faces.py finds it)."""

    embedding: np.ndarray  # (512,) float32, L2-normalised ArcFace embedding
    face_crop: Image.Image  # 224 x 224 RGB, aligned like ArcFace's crop, for the CLIP image encoder

    def __post_init__(self) -> None:
        if np.asarray(self.embedding).ndim != 1:
            raise ValueError(f"the face embedding must be one vector, got shape {np.shape(self.embedding)}")


@dataclass(frozen=True, eq=False)
class IDTokens:
    """What PuLID v1.1 reads of the reference's face (model/identity/pulid/extraction.py makes them).

    tokens: the IDFormer's output for the face, [1, 32, 2048] (the UNet's dtype and device); null: its
    output for zero inputs, the learnt "null ID" that CFG's unconditional half gets, of the same shape.
    """

    tokens: torch.Tensor
    null: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.tokens.shape != self.null.shape:
            raise ValueError(
                f"ID tokens must be [1, tokens, width] like the null ID, got {tuple(self.tokens.shape)} "
                f"and {tuple(self.null.shape)}"
            )


@dataclass(frozen=True)
class GenerationSettings:
    """One request, as the pipeline runs it: text-to-image, or inpainting when init_image is set.

    Without a face, FaceID and its LoRA are off (their scales must be 0) and appearance_image carries the
    character; a request needs one or the other.
    """

    prompt: str
    negative_prompt: str
    width: int
    height: int
    seed: int
    # Classifier-free guidance (CFG) is on when guidance_scale > 1: two UNet passes per step.
    num_inference_steps: int
    guidance_scale: float
    adapters: AdapterScales = AdapterScales()
    # The reference's face: for FaceID Plus v2 (FaceCondition) or PuLID (IDTokens); None on the appearance
    # path.
    face: FaceCondition | IDTokens | None = None
    # The solver; None runs the scheduler of the weights folder with its own config.
    scheduler: SchedulerSpec | None = None
    # Weight of the few-step distilled LoRA; at 0 that adapter is inactive.
    turbo_lora_scale: float = 0.0
    # IP-Adapter Plus: the image whose appearance it carries (RGB, any size); its weight is
    # adapters.appearance.
    appearance_image: Image.Image | None = None
    # Inpainting: the image and mask at (width, height); the mask is "L", WHITE = repaint.
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    strength: float = 1.0

    def __post_init__(self) -> None:
        # The request stage validates user input; these guard the pipeline against a caller's mistake.
        if (self.init_image is None) != (self.mask_image is None):
            raise ValueError("init_image and mask_image must be given together")
        for name, image in (("init_image", self.init_image), ("mask_image", self.mask_image)):
            if image is not None and image.size != (self.width, self.height):
                raise ValueError(
                    f"{name} is {image.size}, expected the working size {(self.width, self.height)}"
                )
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.adapters.appearance and self.appearance_image is None:
            raise ValueError("adapters.appearance is set but appearance_image is not")
        faceid_on = self.adapters.ip_adapter or self.adapters.faceid_lora
        if not isinstance(self.face, FaceCondition) and faceid_on:
            raise ValueError("without FaceID's face, the ip_adapter and faceid_lora scales must be 0")
        if self.face is None and self.appearance_image is None:
            raise ValueError("a request needs a face or an appearance_image")

    @property
    def inpainting(self) -> bool:
        return self.init_image is not None
