"""PuLID v1.1's ID extraction: a reference photo -> the face's 32 ID tokens, and the null ID for CFG.

Owns loading PuLID's face-side models from a weights folder and running them in the reference's order
(`PuLIDPipeline.get_id_embedding` of ToTheBeginning/PuLID, pulid/pipeline_v1_1.py at commit 1aa2fc7):
  1. antelopev2 (insightface, the library itself): the largest face, its raw (un-normalised) 512-d
     glintr100 embedding and its five landmarks;
  2. the 512-px FFHQ alignment on those landmarks (alignment.py);
  3. BiSeNet parsing, the grey face on white, resized to 336 px (face_parsing.py, bisenet.py);
  4. EVA02-CLIP-L-14-336's visual tower: the normalised CLS projection and 5 hidden states (eva_visual.py);
  5. the IDFormer on cat(embedding, CLS projection) and the hidden states: [1, 32, 2048] (idformer.py).
The null ID (the IDFormer's output for zero inputs, which CFG's unconditional half gets, as in the
reference) does not depend on the reference, so it is computed once, at load.

Only the face's side: the 140 ID attention weights go into the UNet (model/generation/pipeline.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from model.errors import WeightsError
from model.generation.settings import IDTokens
from model.identity.faces import FaceAnalyzer
from model.identity.pulid.alignment import align_face
from model.identity.pulid.bisenet import BiSeNet
from model.identity.pulid.eva_visual import EVAVisionConfig, EVAVisionTower, rope_tables
from model.identity.pulid.face_parsing import eva_input, face_tensor, grey_face_on_white
from model.identity.pulid.idformer import VIT_SCALES, IDFormer
from model.identity.pulid.unet_layers import IDFORMER_PREFIX
from model.timing import StageTimer
from model.weights.checks import require_file
from model.weights.layout import PULID_FACE_DETECTOR_FILE, PULID_FACE_RECOGNIZER_FILE, WeightsLayout

log = logging.getLogger(__name__)

EVA_PREFIX = "visual."


def load_idformer(path: Path, device: torch.device, dtype: torch.dtype) -> IDFormer:
    """The IDFormer of a pulid_v1.1.safetensors file (its `id_adapter.*` tensors alone), loaded strictly."""
    with safe_open(str(require_file(path, "PuLID weights file")), framework="pt") as checkpoint:
        names = checkpoint.keys()
        state = {
            key.removeprefix(IDFORMER_PREFIX): checkpoint.get_tensor(key)
            for key in names
            if key.startswith(IDFORMER_PREFIX)
        }
    if not state:
        raise WeightsError(f"{path} has no {IDFORMER_PREFIX}* tensors: it is not a PuLID v1.1 checkpoint")
    return IDFormer.from_state_dict(state).to(device=device, dtype=dtype)


def load_eva_tower(path: Path, device: torch.device, dtype: torch.dtype) -> EVAVisionTower:
    """EVA-CLIP's visual tower from its checkpoint (a torch state dict; `visual.*` read, the rest ignored)."""
    # weights_only: a state dict of tensors, never pickled code; mmap: the text tower is never read in.
    path = require_file(path, "PuLID weights file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = {k.removeprefix(EVA_PREFIX): v for k, v in checkpoint.items() if k.startswith(EVA_PREFIX)}
    if not state:
        raise WeightsError(f"{path} has no {EVA_PREFIX}* tensors: it is not an EVA-CLIP checkpoint")
    with torch.device("meta"):
        tower = EVAVisionTower(EVAVisionConfig.from_state_dict(state))
    tower.load_state_dict(state, strict=True, assign=True)
    # The RoPE tables are computed, not loaded: rebuild them off the meta device.
    with torch.device("cpu"):
        tower.rope_cos, tower.rope_sin = rope_tables(tower.config)
    return tower.to(device=device, dtype=dtype).eval()


def load_face_parser(path: Path, device: torch.device) -> BiSeNet:
    """BiSeNet from facexlib's parsing_bisenet.pth, in fp32 as facexlib runs it."""
    state = torch.load(require_file(path, "PuLID weights file"), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        parser = BiSeNet()
    parser.load_state_dict(state, strict=True, assign=True)
    return parser.to(device=device, dtype=torch.float32).eval()


@dataclass(eq=False)
class PuLIDEncoder:
    """PuLID's face-side models, loaded once; encode() turns a reference into IDTokens."""

    faces: FaceAnalyzer
    parser: BiSeNet
    tower: EVAVisionTower
    idformer: IDFormer
    device: torch.device
    dtype: torch.dtype

    def __post_init__(self) -> None:
        tokens = self.tower.config.grid**2 + 1
        with torch.no_grad():
            zeros = torch.zeros(1, self.idformer.id_cond_width, device=self.device, dtype=self.dtype)
            hidden = torch.zeros(1, tokens, self.idformer.vit_width, device=self.device, dtype=self.dtype)
            self.null_tokens = self.idformer(zeros, [hidden] * VIT_SCALES)

    @classmethod
    def load(cls, layout: WeightsLayout, device: torch.device, dtype: torch.dtype) -> PuLIDEncoder:
        faces = FaceAnalyzer(layout.pulid_face_analysis, PULID_FACE_DETECTOR_FILE, PULID_FACE_RECOGNIZER_FILE)
        return cls(
            faces=faces,
            parser=load_face_parser(layout.face_parsing, device),
            tower=load_eva_tower(layout.eva_clip, device, dtype),
            idformer=load_idformer(layout.pulid_adapter, device, dtype),
            device=device,
            dtype=dtype,
        )

    @property
    def token_shape(self) -> tuple[int, int, int]:
        """The shape of one face's ID tokens: [1, 32, 2048] in v1.1."""
        return tuple(self.null_tokens.shape)

    @torch.no_grad()
    def encode(
        self,
        image: Image.Image,
        fallback_landmarks: np.ndarray | None = None,
        timer: StageTimer | None = None,
    ) -> IDTokens | None:
        """The ID tokens of the largest face of an RGB image; None when antelopev2 finds no face and no
        fallback_landmarks (the five points of another detector's face) are given. timer, when given,
        gets a lap per stage: pulid_face, pulid_parse, pulid_eva, pulid_idformer."""
        lap = timer.lap if timer is not None else (lambda stage: None)
        face = self.faces.largest_face(image)
        if face is None:
            if fallback_landmarks is None:
                return None
            # As the reference does when insightface misses the face: embed it at the other landmarks.
            log.info("PuLID: antelopev2 found no face; embedding it at the face analysis' landmarks")
            face = self.faces.face_at(image, fallback_landmarks)
        # The raw embedding, not normed_embedding: PuLID's IDFormer was trained on it.
        embedding = torch.from_numpy(np.asarray(face.embedding, dtype=np.float32)).reshape(1, -1)
        aligned = align_face(np.asarray(image.convert("RGB")), face.kps)
        lap("pulid_face")
        grey = grey_face_on_white(self.parser, face_tensor(aligned).to(self.device))
        lap("pulid_parse")
        projection, hidden = self.tower(eva_input(grey, self.tower.config.image_size).to(self.dtype))
        lap("pulid_eva")
        id_cond = torch.cat((embedding.to(self.device, self.dtype), projection), dim=-1)
        tokens = self.idformer(id_cond, hidden)
        lap("pulid_idformer")
        return IDTokens(tokens=tokens, null=self.null_tokens)
