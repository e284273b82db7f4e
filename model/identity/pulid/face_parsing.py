"""PuLID's EVA-CLIP input: the aligned face, grey where BiSeNet sees face or hair, white elsewhere.

Mirrors the parsing and transform steps of `PuLIDPipeline.get_id_embedding` in ToTheBeginning/PuLID,
pulid/pipeline_v1_1.py at commit 1aa2fc7 (its `to_gray`, the labels it whitens, and the torchvision
`normalize` / `resize` calls). Written here, not imported: that module loads every model at import and
needs torchvision, basicsr and facexlib, none of which load beside this torch. torchvision's functions are
written out as the version the reference pins (0.15.2) runs them on tensors: `resize(x, 336, BICUBIC)` is
`interpolate(..., mode="bicubic", align_corners=False)` without antialiasing (antialiasing became the default
for tensors in torchvision 0.17), and `normalize` is (x - mean) / std per channel.

Units: images are float tensors [B, 3, H, W], RGB in [0, 1], unless named otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.identity.pulid.bisenet import BiSeNet

# CelebAMask-HQ labels PuLID whitens: background, cloth, hat, left and right ear, earring, neck, necklace.
# Everything else (skin, brows, eyes, glasses, nose, mouth, lips and hair) is kept, in grey.
WHITENED_LABELS = (0, 16, 18, 7, 8, 9, 14, 15)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The BT.601 luma weights of the reference's to_gray.
LUMA = (0.299, 0.587, 0.114)
ALIGNED_FACE_SIZE = 512
EVA_IMAGE_SIZE = 336


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(image - mean) / std per channel."""
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    return (image - mean_t) / std_t


def face_tensor(face_rgb: np.ndarray) -> torch.Tensor:
    """An aligned face, uint8 RGB [H, W, 3] -> [1, 3, H, W] in [0, 1] (float32)."""
    return torch.from_numpy(np.ascontiguousarray(face_rgb.transpose(2, 0, 1))).float().unsqueeze(0) / 255.0


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """Luma in all three channels."""
    luma = LUMA[0] * image[:, 0:1] + LUMA[1] * image[:, 1:2] + LUMA[2] * image[:, 2:3]
    return luma.repeat(1, 3, 1, 1)


def whitened(labels: torch.Tensor) -> torch.Tensor:
    """labels [B, 1, H, W] (the parsing's argmax) -> bool [B, 1, H, W], True where PuLID paints white."""
    return torch.isin(labels, torch.tensor(WHITENED_LABELS, device=labels.device))


def parse(bisenet: BiSeNet, face: torch.Tensor) -> torch.Tensor:
    """face [B, 3, H, W] -> CelebAMask-HQ labels [B, 1, H, W] (int64)."""
    return bisenet(normalize(face, IMAGENET_MEAN, IMAGENET_STD)).argmax(dim=1, keepdim=True)


def grey_face_on_white(bisenet: BiSeNet, face: torch.Tensor) -> torch.Tensor:
    """face [B, 3, 512, 512] -> the same size: grey face and hair, white background, clothes, ears, neck."""
    return torch.where(whitened(parse(bisenet, face)), torch.ones_like(face), to_gray(face))


def resize_for_eva(image: torch.Tensor, size: int = EVA_IMAGE_SIZE) -> torch.Tensor:
    """A square image [B, 3, H, H] -> [B, 3, size, size], bicubic, as torchvision 0.15.2 resizes tensors."""
    return F.interpolate(image, size=[size, size], mode="bicubic", align_corners=False, antialias=False)


def eva_input(image: torch.Tensor, size: int = EVA_IMAGE_SIZE) -> torch.Tensor:
    """A square image [B, 3, H, H] -> [B, 3, size, size], resized and normalised for EVA-CLIP."""
    return normalize(resize_for_eva(image, size), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
