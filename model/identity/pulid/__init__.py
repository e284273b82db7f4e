"""PuLID v1.1 (ToTheBeginning/PuLID @ 1aa2fc7), the identity adapter for human faces: our own code for its
IDFormer, its ID branch in SDXL's cross-attention, the EVA02-CLIP-L-14-336 visual tower and BiSeNet face
parsing, each loading the real checkpoint's key layout strictly; each module says what it mirrors."""

from model.identity.pulid.bisenet import BiSeNet
from model.identity.pulid.eva_visual import EVAVisionConfig, EVAVisionTower
from model.identity.pulid.id_attention import DEFAULT_ID_SCALE, DEFAULT_NUM_ZERO, PuLIDAttnProcessor
from model.identity.pulid.idformer import IDFormer
from model.identity.pulid.unet_layers import (
    IDAttentionLayer,
    id_attention_layers,
    id_attention_processors,
    split_checkpoint,
)

__all__ = [
    "DEFAULT_ID_SCALE",
    "DEFAULT_NUM_ZERO",
    "BiSeNet",
    "EVAVisionConfig",
    "EVAVisionTower",
    "IDAttentionLayer",
    "IDFormer",
    "PuLIDAttnProcessor",
    "id_attention_layers",
    "id_attention_processors",
    "split_checkpoint",
]
