"""The tiny PuLID v1.1 files: a miniature adapter and EVA-CLIP checkpoint with the real key names, BiSeNet at
its real size, and antelopev2's two face models as the tiny insightface stand-ins.

The server reads these exactly as it reads the real files (model/identity/pulid/extraction.py and
model/generation/pipeline.py): `pulid_v1.1.safetensors` with `id_adapter.*` (an IDFormer 64 wide) and
`id_adapter_attn_layers.{i}.id_to_{k,v}.weight` for the tiny UNet's cross-attentions at the checkpoint's
indices; `EVA02_CLIP_L_336_psz14_s6B.pt` with a `visual.*` tower 64 wide and 21 blocks deep (deep enough for
the hidden states entering blocks 4-20) at the real 336 px and patch 14, beside a few `text.*` tensors as the
real file has; `parsing_bisenet.pth` with BiSeNet's real architecture (13 M parameters; no smaller variant
has its key layout), stored in fp16 to halve the file. Weights are seeded random draws
(devtools/seeded_tensors.py): images made with them are noise.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from safetensors.torch import save_file

from devtools.profiles.tiny.faces import RECOGNIZER_SEED, build_detector, build_recognizer
from devtools.profiles.tiny.sdxl import tiny_unet
from devtools.seeded_tensors import seeded_state_dict
from model.identity.pulid import BiSeNet, EVAVisionConfig, EVAVisionTower, IDFormer, id_attention_layers
from model.identity.pulid.unet_layers import ATTENTION_PREFIX, IDFORMER_PREFIX
from model.weights.layout import PULID_FACE_DETECTOR_FILE, PULID_FACE_RECOGNIZER_FILE, WeightsLayout

SEED = 11
# The miniature's sizes. The ID tokens are TINY_ID_TOKEN_WIDTH wide (2048 in v1.1); EVA's CLS projection
# TINY_EVA.embed_dim, so id_cond is 512 + that.
TINY_ID_TOKEN_WIDTH = 32
TINY_EVA = EVAVisionConfig(width=64, depth=21, heads=1, embed_dim=64)
TINY_IDFORMER = dict(
    dim=64,
    depth=5,
    dim_head=64,
    heads=1,
    output_dim=TINY_ID_TOKEN_WIDTH,
    ff_mult=2,
    vit_width=TINY_EVA.width,
    id_cond_width=512 + TINY_EVA.embed_dim,
)


def _seeded(module: torch.nn.Module, prefix: str, dtype: torch.dtype = torch.float32) -> dict:
    shapes = {prefix + key: tuple(value.shape) for key, value in module.state_dict().items()}
    return {key: value.to(dtype) for key, value in seeded_state_dict(SEED, shapes).items()}


def write_pulid(root: Path) -> list[Path]:
    """Write the PuLID files and antelopev2's face models into WeightsLayout(root); return their paths."""
    return write_pulid_checkpoints(root) + write_antelopev2(root)


def write_pulid_checkpoints(root: Path) -> list[Path]:
    """The miniature adapter (for the tiny UNet), EVA-CLIP checkpoint and BiSeNet weights, under pulid/."""
    layout = WeightsLayout(Path(root))
    layout.pulid.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        idformer = IDFormer(**TINY_IDFORMER)
        tower = EVAVisionTower(TINY_EVA)
        parser = BiSeNet()
        unet = tiny_unet()
    adapter = _seeded(idformer, IDFORMER_PREFIX, torch.float16)
    attention = {
        f"{ATTENTION_PREFIX}{layer.index}.id_to_{kind}.weight": (layer.hidden_size, TINY_ID_TOKEN_WIDTH)
        for layer in id_attention_layers(unet)
        for kind in "kv"
    }
    adapter |= {key: value.half() for key, value in seeded_state_dict(SEED, attention).items()}
    save_file(adapter, layout.pulid_adapter)
    eva = _seeded(tower, "visual.", torch.float16)
    # The real checkpoint holds the text tower too, which PuLID never reads.
    eva |= {
        "text.positional_embedding": torch.zeros(77, 64, dtype=torch.float16),
        "logit_scale": torch.ones(()),
    }
    torch.save(eva, layout.eva_clip)
    torch.save(_seeded(parser, "", torch.float16), layout.face_parsing)
    return [layout.pulid_adapter, layout.eva_clip, layout.face_parsing]


def write_antelopev2(root: Path) -> list[Path]:
    """antelopev2's two face models as tiny ONNX stand-ins, in the layout's insightface/antelopev2/.

    The same tiny detector as buffalo_l's, and a recognizer of other random weights (in production
    glintr100 and w600k_r50 are different networks: the identity score is not PuLID's own).
    """
    faces = WeightsLayout(Path(root)).pulid_face_analysis
    faces.mkdir(parents=True, exist_ok=True)
    onnx.save_model(build_detector(), str(faces / PULID_FACE_DETECTOR_FILE))
    onnx.save_model(build_recognizer(RECOGNIZER_SEED + 1), str(faces / PULID_FACE_RECOGNIZER_FILE))
    return [faces / PULID_FACE_DETECTOR_FILE, faces / PULID_FACE_RECOGNIZER_FILE]
