"""PuLID v1.1's modules against the reference's own outputs, and their key layout at real size.

The golden files in tests/data/pulid/ are ToTheBeginning/PuLID's modules (commit 1aa2fc7; BiSeNet from
xinntao/facexlib at 260620a) run by devtools/pulid_golden.py on weights and inputs drawn by
devtools.seeded_tensors from a seed and each tensor's name; ours get the same numbers the same way.
Tolerance, fp32 on the CPU: max |ours - reference| <= TOLERANCE * (1 + max |reference|), i.e. 1e-5 of
the output's scale (the outputs are of order 1-10; the differences come from operator order, e.g.
scaled_dot_product_attention against an explicit softmax).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors.torch import load_file

from devtools.counting import fits_gpu, memory_budget
from devtools.pulid_golden import (
    ATTENTION_CASES,
    EVA_TINY,
    GOLDEN_DIR,
    HIDDEN_ROWS,
    SEED,
    attention_inputs,
    face_stand_in,
    id_inputs,
    sdxl_cross_attention,
)
from devtools.seeded_tensors import seeded_normal, seeded_state_dict
from model.identity.pulid import (
    BiSeNet,
    EVAVisionConfig,
    EVAVisionTower,
    IDFormer,
    PuLIDAttnProcessor,
    id_attention_layers,
    id_attention_processors,
    split_checkpoint,
)
from model.identity.pulid.face_parsing import (
    eva_input,
    face_tensor,
    grey_face_on_white,
    parse,
    resize_for_eva,
    to_gray,
    whitened,
)

TOLERANCE = 1e-5
SDXL_UNET_CONFIG = Path(__file__).resolve().parent.parent / "specs" / "sdxl-architecture" / "unet_config.json"
LAYOUTS = json.loads((GOLDEN_DIR / "reference_layouts.json").read_text())


def golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(GOLDEN_DIR / f"{name}.safetensors")


def assert_close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.shape == reference.shape
    difference = (ours - reference).abs().max().item()
    assert difference <= TOLERANCE * (1 + reference.abs().max().item()), difference


def seeded(module: torch.nn.Module, prefix: str) -> torch.nn.Module:
    """Our module with the golden run's weights: the same (seed, name) draws, loaded strictly."""
    shapes = {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}
    state = {k.removeprefix(prefix): v for k, v in seeded_state_dict(SEED, shapes).items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def idformer() -> IDFormer:
    return seeded(IDFormer(), "id_adapter.")


def test_idformer_gives_the_reference_tokens_and_null_id(idformer):
    id_cond, hidden = id_inputs(SEED)
    reference = golden("idformer")
    with torch.no_grad():
        assert_close(idformer(id_cond, hidden), reference["id_tokens"])
        null = idformer(torch.zeros_like(id_cond), [torch.zeros_like(h) for h in hidden])
    assert_close(null, reference["null_id_tokens"])


def test_idformer_is_the_v1_1_architecture_with_the_checkpoint_keys():
    with torch.device("meta"):
        model = IDFormer()
    assert shapes(model) == LAYOUTS["idformer"]
    assert len(model.state_dict()) == 172
    assert sum(p.numel() for p in model.parameters()) == 151_398_400


def test_idformer_takes_several_references_as_more_id_tokens(idformer):
    """Two reference images: id_cond [B, 2, 1280] and 2 x 577 EVA tokens per scale still give 32 ID tokens."""
    id_cond, hidden = id_inputs(SEED, images=2)
    with torch.no_grad():
        tokens = idformer(torch.stack((id_cond, id_cond), dim=1), hidden)
    assert tokens.shape == (1, 32, 2048)


@pytest.mark.parametrize(("case", "num_zero", "id_scale"), ATTENTION_CASES)
def test_cross_attention_with_the_id_branch_matches_the_reference(idformer, case, num_zero, id_scale):
    """ORTHO_v2 over the CFG batch (the null ID, then the ID), with and without the zero tokens."""
    attention = sdxl_cross_attention(SEED)
    processor = seeded(PuLIDAttnProcessor(640), "id.")
    hidden_states, text = attention_inputs(SEED)
    ids = golden("idformer")
    processor.precompute(attention, torch.cat((ids["null_id_tokens"], ids["id_tokens"])), num_zero, id_scale)
    with torch.no_grad():
        assert_close(
            processor(attention, hidden_states, encoder_hidden_states=text), golden("id_attention")[case]
        )


def test_the_id_branch_is_confined_to_its_region_and_absent_without_precompute():
    attention = sdxl_cross_attention(SEED)
    processor = seeded(PuLIDAttnProcessor(640), "id.")
    hidden_states, text = attention_inputs(SEED)
    with torch.no_grad():
        plain = AttnProcessor2_0()(attention, hidden_states, encoder_hidden_states=text)
        assert torch.equal(processor(attention, hidden_states, encoder_hidden_states=text), plain)
        tokens = seeded_normal(SEED, "input.id_tokens", (2, 32, 2048))
        region = torch.zeros(2, 64, 1)
        region[:, :32] = 1.0
        processor.precompute(attention, tokens, 20, 0.8, region=region)
        confined = processor(attention, hidden_states, encoder_hidden_states=text)
        processor.precompute(attention, tokens, 20, 0.8)
        everywhere = processor(attention, hidden_states, encoder_hidden_states=text)
    # to_out is per token, so tokens outside the region get exactly the text attention's output.
    assert torch.allclose(confined[:, 32:], plain[:, 32:], atol=1e-6)
    assert torch.allclose(confined[:, :32], everywhere[:, :32], atol=1e-6)
    assert not torch.allclose(everywhere[:, :32], plain[:, :32], atol=1e-3)
    processor.forget()
    assert processor.key_values is None


def test_eva_tower_at_reduced_size_matches_the_reference():
    config = EVAVisionConfig(**EVA_TINY)
    tower = seeded(EVAVisionTower(config), "visual.")
    images = seeded_normal(SEED, "input.eva_images", (2, 3, config.image_size, config.image_size))
    reference = golden("eva_tiny")
    with torch.no_grad():
        projection, hidden = tower(images)
    assert_close(projection, reference["cls_projection"])
    assert len(hidden) == 5
    for i, state in enumerate(hidden):
        assert_close(state, reference[f"hidden_{i}"])


def test_eva_tower_has_the_checkpoint_keys_and_computes_its_rope_tables():
    with torch.device("meta"):
        tower = EVAVisionTower()
    assert shapes(tower) == LAYOUTS["eva_l_14_336"]
    # The reference registers 50 RoPE buffers the checkpoint lacks; ours are not in the state dict.
    assert len(LAYOUTS["eva_rope_buffers"]) == 50
    assert tower.rope_cos.shape == (576, 64)
    assert sum(p.numel() for p in tower.parameters()) == 304_432_832


def test_bisenet_has_the_parsing_checkpoint_keys():
    with torch.device("meta"):
        assert shapes(BiSeNet()) == LAYOUTS["bisenet"]


def test_the_whole_id_extraction_on_a_photo_matches_the_reference(idformer):
    """The reference's get_id_embedding at real size on a public-domain photo (its antelopev2 embedding a
    seeded stand-in): parsing labels, the grey-face-on-white image at 336 px, EVA-CLIP's normalised CLS
    projection and hidden-state rows, and the 32 ID tokens of cat(embedding, CLS projection)."""
    reference = golden("end_to_end")
    face = face_tensor(face_stand_in())
    parser = seeded(BiSeNet(), "bisenet.")
    tower = seeded(EVAVisionTower(), "visual.")
    with torch.no_grad():
        labels = parse(parser, face)[0, 0].to(torch.uint8)
        # An argmax can flip where two random logits nearly tie (which pixels depends on the thread
        # count); allow one pixel in 10,000, and build the rest of the chain on the reference's labels,
        # so that one flipped pixel does not move every later output.
        assert (labels != reference["labels_512"]).float().mean() <= 1e-4
        reference_labels = reference["labels_512"].long()[None, None]
        grey = torch.where(whitened(reference_labels), torch.ones_like(face), to_gray(face))
        # Ours, on our own labels: the same image wherever the two labellings whiten alike.
        agree = (whitened(parse(parser, face)) == whitened(reference_labels)).expand_as(face)
        assert agree.float().mean() >= 1 - 1e-4
        assert torch.equal(grey_face_on_white(parser, face)[agree], grey[agree])
        assert_close(resize_for_eva(grey)[0, 0], reference["grey_face_336"])
        projection, hidden = tower(eva_input(grey))
        assert_close(projection, reference["cls_projection"])
        for i, state in enumerate(hidden):
            assert_close(state[0, list(HIDDEN_ROWS)], reference[f"hidden_{i}_rows"])
        arcface = seeded_normal(SEED, "input.arcface", (1, 512))
        tokens = idformer(torch.cat((arcface, projection), dim=-1).unsqueeze(1), hidden)
    assert_close(tokens, reference["id_tokens"])


@pytest.fixture(scope="module")
def real_unet() -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(json.loads(SDXL_UNET_CONFIG.read_text()))


def test_the_70_cross_attentions_take_the_odd_checkpoint_indices_at_their_widths(real_unet):
    layers = id_attention_layers(real_unet)
    assert [layer.index for layer in layers] == list(range(1, 140, 2))
    by_index = {layer.index: layer.hidden_size for layer in layers}
    # ToTheBeginning/PuLID's order: down_blocks.1 (640), down_blocks.2, up_blocks.0 (1280), up_blocks.1 (640),
    # mid_block (1280).
    expected = {**dict.fromkeys(range(1, 8, 2), 640), **dict.fromkeys(range(9, 108, 2), 1280)}
    expected.update({**dict.fromkeys(range(109, 120, 2), 640), **dict.fromkeys(range(121, 140, 2), 1280)})
    assert by_index == expected
    assert layers[0].processor_name.startswith("down_blocks.1.")
    assert layers[-1].processor_name.startswith("mid_block.")


def real_size_checkpoint(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """pulid_v1.1.safetensors' layout on meta: the IDFormer's keys and 140 attention keys, fp16."""
    with torch.device("meta"):
        state = {f"id_adapter.{k}": v.half() for k, v in IDFormer().state_dict().items()}
        for layer in id_attention_layers(unet):
            for kind in "kv":
                weight = torch.empty(layer.hidden_size, 2048, dtype=torch.float16)
                state[f"id_adapter_attn_layers.{layer.index}.id_to_{kind}.weight"] = weight
    return state


def test_the_real_size_checkpoint_has_312_tensors_filling_the_published_file(real_unet):
    state = real_size_checkpoint(real_unet)
    assert len(state) == 312
    payload = sum(t.numel() * t.element_size() for t in state.values())
    # pulid_v1.1.safetensors is 984,405,232 bytes: the tensors and a JSON header of about 34 KB.
    assert payload == 984_371_200
    assert 0 < 984_405_232 - payload < 40_000
    idformer_state, attention_state = split_checkpoint(state)
    with torch.device("meta"):
        IDFormer().load_state_dict(idformer_state, strict=True, assign=True)
    processors = id_attention_processors(real_unet, attention_state)
    assert len(processors) == 70
    real_unet.set_attn_processor({**real_unet.attn_processors, **processors})
    assert sum(isinstance(p, PuLIDAttnProcessor) for p in real_unet.attn_processors.values()) == 70
    assert shapes(next(iter(processors.values()))) == LAYOUTS["id_attention_640"]


def test_a_checkpoint_missing_a_layer_or_with_stray_keys_is_refused(real_unet):
    _, attention_state = split_checkpoint(real_size_checkpoint(real_unet))
    with pytest.raises(ValueError, match="lacks"):
        id_attention_processors(
            real_unet, {k: v for k, v in attention_state.items() if not k.startswith("1.")}
        )
    with pytest.raises(ValueError, match="no layer for"):
        id_attention_processors(
            real_unet, {**attention_state, "140.id_to_k.weight": attention_state["1.id_to_k.weight"]}
        )
    with pytest.raises(ValueError, match="not a PuLID checkpoint"):
        split_checkpoint({"image_proj.latents": torch.zeros(1)})


def test_pulid_is_in_the_memory_budget_and_the_whole_production_set_fits_24_gb():
    rows = {row.name: row for row in memory_budget()}
    pulid = rows["PuLID v1.1 (IDFormer + 140 ID attention weights)"]
    assert pulid.parameters == 492_185_600 and pulid.bytes == 984_371_200
    assert rows["EVA02-CLIP-L-14-336 visual tower (PuLID)"].parameters == 304_432_832
    # antelopev2 from its file sizes: glintr100 (an IResNet-100, ~65.2 M fp32 parameters) and SCRFD-10G.
    assert 65_000_000 < rows["insightface antelopev2 (ONNX, PuLID)"].parameters < 75_000_000
    fits, left = fits_gpu(list(rows.values()))
    assert fits and left > 0
