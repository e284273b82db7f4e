"""Record the reference PuLID v1.1's outputs on seeded random weights: golden files for tests/test_pulid.py.

Not run in CI: it needs a checkout of ToTheBeginning/PuLID (read at commit 1aa2fc7) and of xinntao/facexlib
(for BiSeNet; read at 260620a), and einops and opencv (pure wheels from PyPI, e.g. installed with
`pip install --target DIR einops opencv-python-headless`, DIR given as --site). The reference's modules are
run as they are; what cannot load beside this torch (timm, torchvision, basicsr, torchsde, and facexlib's
and eva_clip's package __init__ files, which import those) is replaced by the small stand-ins in
`_install_stand_ins`, written here: a few no-op helpers the code imports but these runs never call, and
torchvision's `resize` and `normalize` on tensors as the reference's pinned torchvision 0.15.2 runs them.

    python -m devtools.pulid_golden --pulid /tmp/pulid-ref --facexlib /tmp/facexlib-ref \\
        --site /tmp/pulid-shims

Every weight and input comes from devtools.seeded_tensors (by seed and name), so the files hold only
outputs and the recipe (in their metadata), each under 1 MB:
  idformer.safetensors      the full v1.1 IDFormer on random id_cond / ViT features: 32 tokens,
                            and the null ID (the same on zeros)
  id_attention.safetensors  one SDXL cross-attention (640 wide, 10 heads, 64 image tokens) with
                            IDAttnProcessor2_0, ORTHO_v2, NUM_ZERO 20, id_scale 0.8, the CFG batch
                            (null ID, ID) from idformer; and NUM_ZERO 0, id_scale 1.0
  reference_layouts.json    the reference modules' state-dict keys and shapes (EVA without its RoPE tables)
  eva_tiny.safetensors      the EVA visual tower at reduced size (56 px, width 64, 4 heads, 24 blocks,
                            projection 32; the reference constructor's own arguments) on random images
  end_to_end.safetensors    get_id_embedding itself on a public-domain photo with the real-size EVA-CLIP
                            L-14-336 and IDFormer: the grey-face-on-white image at 336 px, the parsing labels,
                            the normalised CLS projection, rows of the 5 hidden states, the 32 ID
                            tokens (its null ID is idformer's: the same weights on zeros)
"""

from __future__ import annotations

import argparse
import enum
import importlib.machinery
import json
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from devtools.seeded_tensors import seeded_normal, seeded_state_dict

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "data" / "pulid"
PULID_COMMIT = "1aa2fc7"
FACEXLIB_COMMIT = "260620a"
PHOTO = ROOT / "tests" / "data" / "faces" / "obama_portrait_2012.jpg"
SEED = 20241203
# The reduced EVA of eva_tiny: 56 px / 14 = a 4x4 grid (RoPE interpolated from 16), 17 tokens.
EVA_TINY = {"image_size": 56, "patch_size": 14, "width": 64, "depth": 24, "heads": 4, "embed_dim": 32}
EVA_L_14_336 = {
    "image_size": 336,
    "patch_size": 14,
    "width": 1024,
    "depth": 24,
    "heads": 16,
    "embed_dim": 768,
}
ATTENTION = {"hidden": 640, "heads": 10, "tokens": 64, "text_tokens": 77, "cross": 2048}
# (name, NUM_ZERO, id_scale) of the cross-attention records, all with ORTHO_v2: v1.1's defaults, and none.
ATTENTION_CASES = (("ortho_v2", 20, 0.8), ("ortho_v2_no_zeros", 0, 1.0))
# Token rows of the real-size hidden states kept in end_to_end (CLS, first and last patches, two inside).
HIDDEN_ROWS = (0, 1, 200, 400, 576)


def face_stand_in(path: Path = PHOTO) -> np.ndarray:
    """The photo's central square at 512x512, uint8 RGB: the aligned face the parsing runs on (alignment
    itself is insightface's, not part of these records)."""
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((512, 512), Image.Resampling.BICUBIC))


def id_inputs(seed: int, images: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """IDFormer inputs: id_cond [1, 1280] (a raw-scale 512 part, a unit 768 part) and vit_hidden
    5 x [1, 577 * images, 1024]."""
    arcface = seeded_normal(seed, "input.arcface", (1, 512), 1.0)
    clip = seeded_normal(seed, "input.clip", (1, 768))
    id_cond = torch.cat((arcface, clip / clip.norm(dim=-1, keepdim=True)), dim=-1)
    hidden = [seeded_normal(seed, f"input.vit_hidden.{i}", (1, 577 * images, 1024)) for i in range(5)]
    return id_cond, hidden


def attention_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden_states [2, 64, 640], encoder_hidden_states [2, 77, 2048]) for the cross-attention record."""
    a = ATTENTION
    return (
        seeded_normal(seed, "input.hidden_states", (2, a["tokens"], a["hidden"])),
        seeded_normal(seed, "input.encoder_hidden_states", (2, a["text_tokens"], a["cross"])),
    )


def sdxl_cross_attention(seed: int):
    """A diffusers Attention shaped as an SDXL attn2 of down_blocks.1, weights seeded by name."""
    from diffusers.models.attention_processor import Attention

    a = ATTENTION
    attention = Attention(
        query_dim=a["hidden"],
        cross_attention_dim=a["cross"],
        heads=a["heads"],
        dim_head=a["hidden"] // a["heads"],
    )
    return _seeded(attention, seed, "attn.")


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package="__path__" in attributes)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _unused(*args, **kwargs):
    raise RuntimeError("a stand-in the golden runs should never call")


class _InterpolationMode(enum.Enum):
    BICUBIC = "bicubic"
    BILINEAR = "bilinear"


RESIZED: list[torch.Tensor] = []


def _tv_resize(image: torch.Tensor, size, interpolation=_InterpolationMode.BILINEAR, *args, **kwargs):
    """torchvision 0.15.2 `resize` on a float tensor with an int size: the shorter side to size, the
    interpolation align_corners=False, no antialias (the tensor default before 0.17)."""
    height, width = image.shape[-2:]
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = size, int(size * long / short)
    new = (new_short, new_long) if height <= width else (new_long, new_short)
    out = F.interpolate(image, size=list(new), mode=interpolation.value, align_corners=False, antialias=False)
    RESIZED.append(out)
    return out


def _tv_normalize(tensor: torch.Tensor, mean, std, inplace=False):
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return (tensor - mean_t) / std_t


def _img2tensor(image: np.ndarray, bgr2rgb: bool = True, float32: bool = True) -> torch.Tensor:
    """basicsr's img2tensor for one HWC image: BGR -> RGB, float32, CHW."""
    import cv2

    if bgr2rgb:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    tensor = torch.from_numpy(image.transpose(2, 0, 1))
    return tensor.float() if float32 else tensor


def _install_stand_ins(pulid: Path, facexlib: Path) -> None:
    # What the reference imports from real packages, loaded first: they probe for torchvision and
    # torchsde themselves and must see them absent, not as the stand-ins below.
    import diffusers  # noqa: F401
    import insightface.app  # noqa: F401
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline  # noqa: F401
    from diffusers.models.attention_processor import Attention  # noqa: F401
    from transformers import PretrainedConfig  # noqa: F401

    layers = {"drop_path": _unused, "to_2tuple": lambda x: (x, x), "trunc_normal_": lambda t, **kw: t}
    _module("timm")
    _module("timm.models")
    _module("timm.models.layers", **layers)
    _module("timm.layers", **layers)
    _module("torchvision", __path__=[])
    _module("torchvision.ops")
    _module("torchvision.ops.misc", FrozenBatchNorm2d=None)
    _module("torchvision.transforms", InterpolationMode=_InterpolationMode)
    _module("torchvision.transforms.functional", resize=_tv_resize, normalize=_tv_normalize)
    _module("torchvision.utils", make_grid=_unused)
    _module("basicsr")
    _module("basicsr.utils", img2tensor=_img2tensor, tensor2img=lambda *a, **k: None)
    _module("torchsde")
    # Packages whose __init__ imports more than these runs need: their modules load from the checkout.
    _module("facexlib", __path__=[str(facexlib / "facexlib")])
    _module("facexlib.parsing", __path__=[str(facexlib / "facexlib" / "parsing")], init_parsing_model=_unused)
    _module("facexlib.utils", __path__=[])
    _module("facexlib.utils.face_restoration_helper", FaceRestoreHelper=_unused)
    _module("eva_clip", __path__=[str(pulid / "eva_clip")], create_model_and_transforms=_unused)
    sys.path.insert(0, str(pulid))


def _seeded(
    module: torch.nn.Module, seed: int, prefix: str, strict: bool = True, shapes=None
) -> torch.nn.Module:
    shapes = shapes or {k: tuple(v.shape) for k, v in module.state_dict().items()}
    state = seeded_state_dict(seed, {prefix + k: s for k, s in shapes.items()})
    result = module.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()}, strict=strict)
    if not strict and (result.unexpected_keys or any("rope" not in k for k in result.missing_keys)):
        raise RuntimeError(f"unexpected key mismatch: {result}")
    return module.eval()


def reference_eva(config: dict):
    """The reference's tower as eva_clip/model.py `_build_vision_tower` builds EVA02-CLIP-L-14-336
    (apex absent: its LayerNorm with eps 1e-6; xformers absent: plain attention)."""
    from eva_clip.eva_vit_model import EVAVisionTransformer
    from eva_clip.transformer import LayerNorm

    return EVAVisionTransformer(
        img_size=config["image_size"],
        patch_size=config["patch_size"],
        num_classes=config["embed_dim"],
        use_mean_pooling=False,
        init_values=None,
        patch_dropout=0.0,
        embed_dim=config["width"],
        depth=config["depth"],
        num_heads=config["heads"],
        mlp_ratio=2.6667,
        qkv_bias=True,
        drop_path_rate=0,
        norm_layer=partial(LayerNorm, eps=1e-6),
        xattn=True,
        rope=True,
        postnorm=False,
        pt_hw_seq_len=16,
        intp_freq=True,
        naiveswiglu=True,
        subln=True,
    )


def eva_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The checkpoint's keys: the reference's state dict without the RoPE tables (computed, not stored)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if "rope." not in k}


def record_idformer(out: Path) -> dict[str, torch.Tensor]:
    from pulid.encoders_transformer import IDFormer

    model = _seeded(IDFormer(), SEED, "id_adapter.")
    id_cond, hidden = id_inputs(SEED)
    with torch.no_grad():
        tokens = model(id_cond, hidden)
        null = model(torch.zeros_like(id_cond), [torch.zeros_like(h) for h in hidden])
    outputs = {"id_tokens": tokens.contiguous(), "null_id_tokens": null.contiguous()}
    save_file(outputs, out / "idformer.safetensors", metadata=_metadata(seed=SEED, prefix="id_adapter."))
    return outputs


def record_id_attention(out: Path, idformer: dict[str, torch.Tensor]) -> None:
    from pulid import attention_processor as reference

    attention = sdxl_cross_attention(SEED)
    processor = _seeded(reference.IDAttnProcessor2_0(ATTENTION["hidden"], ATTENTION["cross"]), SEED, "id.")
    hidden_states, text = attention_inputs(SEED)
    id_embedding = torch.cat((idformer["null_id_tokens"], idformer["id_tokens"]))
    outputs = {}
    for name, num_zero, scale in ATTENTION_CASES:
        reference.NUM_ZERO, reference.ORTHO, reference.ORTHO_v2 = num_zero, False, True
        with torch.no_grad():
            outputs[name] = processor(
                attention,
                hidden_states,
                encoder_hidden_states=text,
                id_embedding=id_embedding,
                id_scale=scale,
            ).contiguous()
    save_file(outputs, out / "id_attention.safetensors", metadata=_metadata(seed=SEED, attention=ATTENTION))


def record_eva_tiny(out: Path) -> None:
    model = reference_eva(EVA_TINY)
    model = _seeded(model, SEED, "visual.", strict=False, shapes=eva_shapes(model))
    size = EVA_TINY["image_size"]
    images = seeded_normal(SEED, "input.eva_images", (2, 3, size, size))
    with torch.no_grad():
        projection, hidden = model(images, return_all_features=False, return_hidden=True, shuffle=False)
    outputs = {"cls_projection": (projection / torch.norm(projection, 2, 1, True)).contiguous()}
    outputs.update({f"hidden_{i}": h.contiguous() for i, h in enumerate(hidden)})
    save_file(outputs, out / "eva_tiny.safetensors", metadata=_metadata(seed=SEED, eva=EVA_TINY))


class _FaceHelper:
    """FaceRestoreHelper's interface as get_id_embedding uses it, handing over the stand-in aligned face."""

    def __init__(self, aligned_bgr: np.ndarray, parser):
        self.aligned_bgr, self.face_parse, self.cropped_faces = aligned_bgr, parser, []

    def clean_all(self):
        self.cropped_faces = []

    def read_image(self, image):
        pass

    def get_face_landmarks_5(self, only_center_face=True):
        pass

    def align_warp_face(self):
        self.cropped_faces = [self.aligned_bgr]


def record_end_to_end(out: Path) -> None:
    """The reference's get_id_embedding on the stand-in face, with its own BiSeNet, EVA and IDFormer."""
    from eva_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from facexlib.parsing.bisenet import BiSeNet
    from pulid.encoders_transformer import IDFormer
    from pulid.pipeline_v1_1 import PuLIDPipeline

    face = face_stand_in()
    arcface = seeded_normal(SEED, "input.arcface", (512,)).numpy()
    eva = reference_eva(EVA_L_14_336)
    eva = _seeded(eva, SEED, "visual.", strict=False, shapes=eva_shapes(eva))
    captured = {}
    eva_forward = eva.forward

    def capturing_forward(image, **kwargs):
        captured["projection"], captured["hidden"] = eva_forward(image, **kwargs)
        return captured["projection"], captured["hidden"]

    eva.forward = capturing_forward
    parser = _seeded(BiSeNet(num_class=19), SEED, "bisenet.")
    parse_forward = parser.forward

    def capturing_parse(x):
        outputs = parse_forward(x)
        captured["labels"] = outputs[0].argmax(dim=1)
        return outputs

    parser.forward = capturing_parse
    pipeline = types.SimpleNamespace(
        device="cpu",
        face_helper=_FaceHelper(np.ascontiguousarray(face[:, :, ::-1]), parser),
        app=types.SimpleNamespace(
            get=lambda bgr: [{"bbox": np.array([0, 0, 512, 512]), "embedding": arcface}]
        ),
        handler_ante=None,
        clip_vision_model=eva,
        eva_transform_mean=OPENAI_DATASET_MEAN,
        eva_transform_std=OPENAI_DATASET_STD,
        id_adapter=_seeded(IDFormer(), SEED, "id_adapter."),
        debug_img_list=[],
    )
    pipeline.to_gray = partial(PuLIDPipeline.to_gray, pipeline)
    RESIZED.clear()
    with torch.no_grad():
        _, tokens = PuLIDPipeline.get_id_embedding(pipeline, [face])
    grey = RESIZED[-1][0]
    if not (torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])):
        raise RuntimeError("the grey-face-on-white image should have three equal channels")
    projection = captured["projection"]
    outputs = {
        "grey_face_336": grey[0].contiguous(),
        "labels_512": captured["labels"][0].to(torch.uint8).contiguous(),
        "cls_projection": (projection / torch.norm(projection, 2, 1, True)).contiguous(),
        "id_tokens": tokens.contiguous(),
    }
    rows = list(HIDDEN_ROWS)
    outputs.update({f"hidden_{i}_rows": h[0, rows].contiguous() for i, h in enumerate(captured["hidden"])})
    save_file(outputs, out / "end_to_end.safetensors", metadata=_metadata(seed=SEED, hidden_rows=rows))


def record_layouts(out: Path) -> None:
    from facexlib.parsing.bisenet import BiSeNet
    from pulid import attention_processor as reference
    from pulid.encoders_transformer import IDFormer

    def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in module.state_dict().items()}

    eva = reference_eva(EVA_L_14_336)  # on the CPU: its constructor calls .item()
    with torch.device("meta"):
        layouts = {
            "reference": _metadata()["reference"],
            "idformer": shapes(IDFormer()),
            "bisenet": shapes(BiSeNet(num_class=19)),
            "eva_l_14_336": {k: list(v) for k, v in eva_shapes(eva).items()},
            "eva_rope_buffers": sorted(k for k in eva.state_dict() if "rope." in k),
            "id_attention_640": shapes(reference.IDAttnProcessor2_0(640, 2048)),
        }
    (out / "reference_layouts.json").write_text(json.dumps(layouts, indent=0, sort_keys=True) + "\n")


def _metadata(**recipe) -> dict[str, str]:
    return {
        "reference": f"ToTheBeginning/PuLID@{PULID_COMMIT}, xinntao/facexlib@{FACEXLIB_COMMIT}",
        "recipe": json.dumps(recipe),
        "written_by": "devtools/pulid_golden.py",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pulid", type=Path, required=True, help="a checkout of ToTheBeginning/PuLID")
    parser.add_argument("--facexlib", type=Path, required=True, help="a checkout of xinntao/facexlib")
    parser.add_argument("--site", type=Path, help="a folder with einops and opencv (pip install --target)")
    parser.add_argument("--out", type=Path, default=GOLDEN_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.site:
        sys.path.insert(0, str(args.site))
    _install_stand_ins(args.pulid.resolve(), args.facexlib.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    idformer = record_idformer(args.out)
    record_id_attention(args.out, idformer)
    record_eva_tiny(args.out)
    record_end_to_end(args.out)
    record_layouts(args.out)
    for path in sorted(args.out.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
