"""Where each component lives inside a weights folder.

The production folder (written by scripts/download_weights.py) and the tiny folder (written by
scripts/make_tiny_weights.py) share this layout; the pipeline only ever sees a WeightsLayout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FACEID_ADAPTER_FILE = "ip-adapter-faceid-plusv2_sdxl.bin"
# IP-Adapter Plus for SDXL with the ViT-H encoder: the character's whole appearance when it has no human face.
APPEARANCE_ADAPTER_FILE = "ip-adapter-plus_sdxl_vit-h.safetensors"
FACE_DETECTOR_FILE = "det_10g.onnx"
FACE_RECOGNIZER_FILE = "w600k_r50.onnx"
# SDXL-Lightning's 8-step LoRA (kohya key names), the file the Turbo speed loads from turbo_lora/.
TURBO_LORA_FILE = "sdxl_lightning_8step_lora.safetensors"
# PuLID v1.1 (model/identity/pulid/): its IDFormer and ID attention weights, the EVA02-CLIP-L-14-336
# checkpoint whose visual tower it reads, and facexlib's BiSeNet face-parsing weights, all under pulid/.
PULID_ADAPTER_FILE = "pulid_v1.1.safetensors"
EVA_CLIP_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"
FACE_PARSING_FILE = "parsing_bisenet.pth"
# insightface antelopev2, PuLID's face models: SCRFD-10G detector and the Glint360K ResNet-100 ArcFace.
PULID_FACE_DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
PULID_FACE_RECOGNIZER_FILE = "glintr100.onnx"
# Diffusers loads the SDXL components of this variant ("*.fp16.safetensors").
SDXL_VARIANT = "fp16"


@dataclass(frozen=True)
class WeightsLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        """The manifest of the files in this folder (profile, paths, sizes, sha256)."""
        return self.root / "manifest.json"

    @property
    def sdxl(self) -> Path:
        """Diffusers folder of the SDXL base: text encoders, tokenizers, UNet, scheduler."""
        return self.root / "sdxl"

    @property
    def vae(self) -> Path:
        """Diffusers folder of the fp16-safe SDXL VAE."""
        return self.root / "vae"

    @property
    def image_encoder(self) -> Path:
        """transformers folder of the CLIP ViT-H/14 vision encoder read by FaceID Plus v2."""
        return self.root / "image_encoder"

    @property
    def faceid_adapter(self) -> Path:
        """IP-Adapter FaceID Plus v2 for SDXL: image projection, IP attention and LoRA weights."""
        return self.root / "ip_adapter" / FACEID_ADAPTER_FILE

    @property
    def appearance_adapter(self) -> Path:
        """IP-Adapter Plus for SDXL (ViT-H): a resampler over the image encoder's tokens and IP attention."""
        return self.root / "ip_adapter" / APPEARANCE_ADAPTER_FILE

    @property
    def face_analysis(self) -> Path:
        """insightface model folder (buffalo_l): SCRFD detector and ArcFace recognizer."""
        return self.root / "insightface" / "buffalo_l"

    @property
    def pulid_face_analysis(self) -> Path:
        """insightface model folder (antelopev2): the detector and recognizer of PuLID's ID embedding."""
        return self.root / "insightface" / "antelopev2"

    @property
    def pulid(self) -> Path:
        """Folder of PuLID v1.1's files: the adapter, the EVA-CLIP checkpoint and the face-parsing weights."""
        return self.root / "pulid"

    @property
    def pulid_adapter(self) -> Path:
        """PuLID v1.1: the IDFormer (`id_adapter.*`) and the 140 ID attention weights
        (`id_adapter_attn_layers.*`)."""
        return self.pulid / PULID_ADAPTER_FILE

    @property
    def eva_clip(self) -> Path:
        """EVA02-CLIP-L-14-336 (a torch state dict): PuLID reads its `visual.*` tower only."""
        return self.pulid / EVA_CLIP_FILE

    @property
    def face_parsing(self) -> Path:
        """BiSeNet face parsing (CelebAMask-HQ labels, a torch state dict), as facexlib fetches it."""
        return self.pulid / FACE_PARSING_FILE

    @property
    def prompt_model(self) -> Path:
        """transformers folder of the production Magic Prompt LLM (absent in the tiny profile)."""
        return self.root / "prompt_model"

    @property
    def turbo_lora(self) -> Path:
        """Folder of the few-step distilled SDXL LoRA that the Turbo speed stacks with the FaceID LoRA."""
        return self.root / "turbo_lora"

    @property
    def turbo_lora_file(self) -> Path:
        return self.turbo_lora / TURBO_LORA_FILE

    @property
    def evaluation_clip(self) -> Path:
        """transformers folder of the CLIP model that scores prompt adherence (CLIP-T); evaluation only."""
        return self.root / "evaluation" / "clip"

    @property
    def safety_checker(self) -> Path:
        """Folder of the NSFW output checker (diffusers' StableDiffusionSafetyChecker) and its processor."""
        return self.root / "safety_checker"
