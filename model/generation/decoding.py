"""The decoded image, from the VAE's output on the device to the PIL image the service writes."""

from __future__ import annotations

import torch
from PIL import Image


def to_pil(image: torch.Tensor) -> Image.Image:
    """A decoded image (3, H, W) in [0, 1] (diffusers' output_type="pt") as an RGB PIL image, with exactly
    the bytes of diffusers' "pil" output.

    diffusers' "pil" path copies the float image to the host and scales and rounds it in numpy: on a GPU a
    1024 x 1024 image crosses PCIe as 12 MiB of float32 and is converted on one CPU core. Here the uint8
    pixels are made on the device and 3 MiB cross once. The same arithmetic as diffusers' (upcast to float32
    first, as its pt_to_numpy does: fp16 times 255 rounds differently; then * 255, round half to even,
    truncate to uint8), so the same bytes.
    """
    pixels = (image.float() * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(pixels.cpu().numpy())
