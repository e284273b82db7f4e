"""The generation pipeline on the tiny profile.

Sizes, seeds, the FaceID adapter and its LoRA, inpainting, and no state leaking between requests.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from transformers import CLIPTokenizer

from model.generation.decoding import to_pil
from model.generation.image_kv_cache import IPAttnProcessorWithPrecomputedKV
from model.generation.ip_adapter_scales import ip_adapter_attentions, set_ip_adapter_scales
from model.generation.pipeline import (
    APPEARANCE_ADAPTER_INDEX,
    FACEID_ADAPTER_INDEX,
    FACEID_LORA_ADAPTER,
    CharacterPipeline,
)
from model.generation.settings import AdapterScales, FaceCondition, GenerationSettings
from tests.helpers.tiny import random_identity

BASE = GenerationSettings(
    prompt="a portrait photo of a woman in a garden, soft light",
    negative_prompt="blurry, low quality",
    width=1024,
    height=1024,
    seed=1234,
    num_inference_steps=2,
    guidance_scale=5.0,
    face=FaceCondition(*random_identity(0)),
)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def scales(**changes: float) -> AdapterScales:
    """BASE's adapter scales with some changed."""
    return dataclasses.replace(BASE.adapters, **changes)


def run(pipeline: CharacterPipeline, identity, **changes) -> np.ndarray:
    face = FaceCondition(*identity)
    return pixels(pipeline.generate(dataclasses.replace(BASE, face=face, **changes)))


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (1344, 768)])
def test_text_to_image_has_the_requested_size_and_reports_each_step(pipeline, identity, width, height):
    steps = []
    image = pipeline.generate(
        dataclasses.replace(BASE, width=width, height=height, face=FaceCondition(*identity)),
        on_step=lambda step, total: steps.append((step, total)),
    )
    assert image.size == (width, height)
    assert image.mode == "RGB"
    assert steps == [(1, 2), (2, 2)]


def test_same_seed_gives_the_same_image_and_another_seed_another(pipeline, identity):
    first = run(pipeline, identity)
    assert np.array_equal(first, run(pipeline, identity))
    assert not np.array_equal(first, run(pipeline, identity, seed=BASE.seed + 1))


def test_identity_reaches_the_image_only_through_the_adapter_scale(pipeline, identity):
    # As diffusers' test_ip_adapter_faceid: at scale 0 the IP attention adds exactly nothing, so another
    # face gives the same image; at a large scale the face changes it.
    other = random_identity(1)
    assert np.array_equal(
        run(pipeline, identity, adapters=scales(ip_adapter=0.0)),
        run(pipeline, other, adapters=scales(ip_adapter=0.0)),
    )
    assert not np.array_equal(
        run(pipeline, identity, adapters=scales(ip_adapter=10.0)),
        run(pipeline, other, adapters=scales(ip_adapter=10.0)),
    )


def test_faceid_lora_is_loaded_on_every_attention_and_active(pipeline, identity):
    unet = pipeline.text_to_image.unet
    # The checkpoint holds a q/k/v/out LoRA for every attention processor of the UNet itself.
    unet_attentions = [name for name in unet.attn_processors if not name.startswith("encoder_hid_proj")]
    assert pipeline.loras.layer_count(FACEID_LORA_ADAPTER) == 4 * len(unet_attentions)

    with_lora = run(pipeline, identity, adapters=scales(faceid_lora=1.0))
    assert pipeline.loras.merged == {FACEID_LORA_ADAPTER: 1.0}
    assert not np.array_equal(with_lora, run(pipeline, identity, adapters=scales(faceid_lora=0.0)))


def test_face_structure_scale_changes_the_image(pipeline, identity):
    assert not np.array_equal(
        run(pipeline, identity, adapters=scales(face_structure=0.0)),
        run(pipeline, identity, adapters=scales(face_structure=2.0)),
    )


def inpaint_settings(width: int, height: int, **changes) -> GenerationSettings:
    rng = np.random.default_rng(5)
    init = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255  # white = repaint
    return dataclasses.replace(
        BASE, width=width, height=height, init_image=init, mask_image=Image.fromarray(mask, "L"), **changes
    )


def test_inpainting_returns_the_working_size(pipeline, identity):
    steps = []
    image = pipeline.generate(
        inpaint_settings(1152, 896, face=FaceCondition(*identity)),
        on_step=lambda step, total: steps.append((step, total)),
    )
    assert image.size == (1152, 896)
    assert steps == [(1, 2), (2, 2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_decode_on_the_device_gives_diffusers_pil_bytes(dtype):
    # What the VAE gives, beyond [-1, 1] at both ends (postprocess clamps), and the values that land
    # exactly half-way between two uint8 levels, where the rounding rule decides.
    generator = torch.Generator().manual_seed(0)
    decoded = torch.rand(1, 3, 96, 64, generator=generator) * 2.4 - 1.2
    ties = (torch.arange(256.0) + 0.5) / 255 * 2 - 1
    decoded[0, :, 0, :64] = ties[:64]
    decoded[0, :, 1, :64] = ties[64:128]
    decoded = decoded.to(dtype)
    processor = VaeImageProcessor()
    expected = processor.postprocess(decoded, output_type="pil")[0]
    image = to_pil(processor.postprocess(decoded, output_type="pt")[0])
    assert (image.mode, image.size) == (expected.mode, expected.size) == ("RGB", (64, 96))
    assert image.tobytes() == expected.tobytes()
    if dtype == torch.float16:
        # Why to_pil upcasts: fp16 times 255 rounds to other levels than diffusers' float32.
        in_half = (processor.postprocess(decoded, output_type="pt")[0] * 255).round().to(torch.uint8)
        assert not np.array_equal(in_half.permute(1, 2, 0).numpy(), pixels(expected))


@pytest.mark.parametrize("inpainting", [False, True])
def test_generate_gives_the_bytes_of_the_pipelines_own_pil_output(pipeline, identity, inpainting):
    face = FaceCondition(*identity)
    settings = inpaint_settings(1024, 1024, face=face) if inpainting else dataclasses.replace(BASE, face=face)
    pipe, inputs = pipeline.prepare(settings)
    assert pipe is (pipeline.inpaint if inpainting else pipeline.text_to_image)
    expected = pipe(**inputs, output_type="pil").images[0]
    assert pipeline.generate(settings).tobytes() == expected.tobytes()


def test_clip_tokens_equal_encode_image_and_the_zero_image_is_encoded_once(pipeline):
    encoder = pipeline.text_to_image.image_encoder
    calls = []
    hook = encoder.register_forward_pre_hook(lambda module, args: calls.append(args[0].abs().sum().item()))
    try:
        pipeline._zero_image_tokens.clear()
        for seed, pipe in enumerate([pipeline.text_to_image, pipeline.inpaint, pipeline.text_to_image]):
            image = appearance_image(seed)
            with torch.no_grad():
                tokens, unconditional = pipe.encode_image(image, pipeline.device, 1, True)
                calls.clear()
                guided = pipeline._clip_tokens(pipe, image, guided=True)
                assert torch.equal(guided, torch.cat([unconditional, tokens])[:, None])
                # The zero image only on the first call, of either pipeline (they share the encoder).
                zero_images = 1 if seed == 0 else 0
                assert (len(calls), calls.count(0.0)) == (1 + zero_images, zero_images)
                assert torch.equal(pipeline._clip_tokens(pipe, image, guided=False), tokens[:, None])
        assert len(pipeline._zero_image_tokens) == 1
    finally:
        hook.remove()


def ip_scales(unet) -> dict[str, list]:
    """Every IP-Adapter processor's scale list (the list objects themselves), by processor name."""
    return {name: p.scale for name, p in unet.attn_processors.items() if hasattr(p, "to_k_ip")}


@pytest.mark.parametrize("fixture", ["pipeline", "pulid_pipeline"])
def test_setting_the_scales_directly_is_set_ip_adapter_scale(request, fixture):
    character = request.getfixturevalue(fixture)
    pipe = character.text_to_image
    adapters = len(pipe.unet.encoder_hid_proj.image_projection_layers)
    lists = {2: [[0.0, 0.6], [1.0, 0.0], [0.35, 1.25], [0.0, 0.0]], 1: [[0.6], [0.0], [1.25]]}[adapters]
    processors = character._ip_adapter_processors(pipe.unet)
    # The PuLID pipeline's cross-attentions carry the ID branch inside these same processors.
    assert processors and all(isinstance(p, IPAttnProcessorWithPrecomputedKV) for p in processors)
    assert len(processors) == len(ip_scales(pipe.unet))
    for scales in lists:
        pipe.set_ip_adapter_scale([0.5] * adapters)
        pipe.set_ip_adapter_scale(list(scales))
        expected = {name: list(values) for name, values in ip_scales(pipe.unet).items()}
        pipe.set_ip_adapter_scale([0.5] * adapters)
        before = ip_scales(pipe.unet)
        set_ip_adapter_scales(processors, list(scales))
        after = ip_scales(pipe.unet)
        assert after == expected
        # In place, as diffusers does it: the same list objects, holding Python floats.
        assert all(after[name] is before[name] for name in after)
        assert {type(value) for values in after.values() for value in values} == {float}
    for wrong in ([0.5] * (adapters + 1), [0.5] * (adapters - 1)):
        with pytest.raises(ValueError):
            pipe.set_ip_adapter_scale(wrong)
        with pytest.raises(ValueError):
            set_ip_adapter_scales(processors, wrong)


def test_prepare_sets_the_scales_without_walking_the_unet(pipeline, identity, monkeypatch):
    def walk(*args):
        raise AssertionError("prepare() called set_ip_adapter_scale")

    for pipe in (pipeline.text_to_image, pipeline.inpaint):
        monkeypatch.setattr(pipe, "set_ip_adapter_scale", walk)
    face = dataclasses.replace(BASE, face=FaceCondition(*identity), adapters=scales(ip_adapter=0.7))
    pipe, _ = pipeline.prepare(face)
    assert adapter_state(pipeline, pipe)[0] == [[0.7, 0.0]]
    # A processor replaced after the first request (nothing does so today) still gets its scales.
    module, old = ip_adapter_attentions(pipe.unet)[0]
    module.set_processor(IPAttnProcessorWithPrecomputedKV.replacing(old))
    try:
        pipe, _ = pipeline.prepare(inpaint_settings(1024, 1024, face=FaceCondition(*identity)))
        assert pipe is pipeline.inpaint and module.processor.scale == [1.0, 0.0]
        assert adapter_state(pipeline, pipe)[0] == [[1.0, 0.0]]
    finally:
        module.set_processor(old)


def test_inpaint_pipeline_shares_every_module(pipeline):
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "image_encoder"):
        assert getattr(pipeline.inpaint, name) is getattr(pipeline.text_to_image, name), name


def appearance_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8), "RGB")


WITHOUT_FACE = AdapterScales(ip_adapter=0.0, faceid_lora=0.0, face_structure=0.0)


def run_without_face(pipeline: CharacterPipeline, appearance_scale: float = 0.0, **changes) -> np.ndarray:
    adapters = WITHOUT_FACE.with_appearance(appearance_scale)
    settings = dataclasses.replace(BASE, face=None, adapters=adapters, **changes)
    return pixels(pipeline.generate(settings))


def adapter_state(pipeline: CharacterPipeline, pipe) -> tuple[list[list[float]], dict[str, float] | None]:
    """The distinct IP scale lists of the attention processors, and the LoRAs merged into the UNet."""
    scales = {tuple(p.scale) for p in pipe.unet.attn_processors.values() if hasattr(p, "to_k_ip")}
    return [list(s) for s in scales], pipeline.loras.merged


def test_both_adapters_are_loaded_in_order(pipeline):
    projections = pipeline.text_to_image.unet.encoder_hid_proj.image_projection_layers
    assert [type(p).__name__ for p in projections] == [
        "IPAdapterFaceIDPlusImageProjection",
        "IPAdapterPlusImageProjection",
    ]
    assert pipeline.faceid_projection is projections[FACEID_ADAPTER_INDEX]
    assert projections[APPEARANCE_ADAPTER_INDEX].latents.shape[1] == 16


def test_face_path_runs_faceid_only_and_the_appearance_path_the_appearance_adapter_only(pipeline, identity):
    pipe, _ = pipeline.prepare(dataclasses.replace(BASE, face=FaceCondition(*identity)))
    assert adapter_state(pipeline, pipe) == ([[1.0, 0.0]], {FACEID_LORA_ADAPTER: 1.0})

    without_face = dataclasses.replace(
        BASE, face=None, adapters=WITHOUT_FACE.with_appearance(0.6), appearance_image=appearance_image(0)
    )
    pipe, inputs = pipeline.prepare(without_face)
    # FaceID's attention is skipped (scale 0) and its LoRA left out of the weights; its ID input is zeros.
    assert adapter_state(pipeline, pipe) == ([[0.0, 0.6]], {})
    assert not inputs["ip_adapter_image_embeds"][FACEID_ADAPTER_INDEX].any()
    assert inputs["ip_adapter_image_embeds"][APPEARANCE_ADAPTER_INDEX].shape == (2, 1, 257, 32)


def test_appearance_reaches_the_image_only_through_its_scale(pipeline):
    # As for FaceID: at scale 0 another appearance image gives the same image; at a large scale it differs.
    def image(seed: int, scale: float) -> np.ndarray:
        return run_without_face(pipeline, appearance_image=appearance_image(seed), appearance_scale=scale)

    assert np.array_equal(image(0, 0.0), image(1, 0.0))
    assert not np.array_equal(image(0, 10.0), image(1, 10.0))


def test_a_request_without_face_or_appearance_is_a_callers_mistake():
    with pytest.raises(ValueError, match="face or an appearance_image"):
        dataclasses.replace(BASE, face=None, adapters=WITHOUT_FACE)
    with pytest.raises(ValueError, match="without FaceID's face"):
        dataclasses.replace(BASE, face=None, appearance_image=appearance_image(0))
    with pytest.raises(ValueError, match="appearance_image is not"):
        dataclasses.replace(BASE, adapters=scales(appearance=0.5))
    with pytest.raises(ValueError, match="one vector"):
        FaceCondition(np.zeros((1, 512), np.float32), Image.new("RGB", (224, 224)))


def test_no_state_leaks_from_one_request_into_the_next(pipeline, identity):
    first = run(pipeline, identity)
    # Requests that change every per-request setting, with guidance off, and an inpainting one.
    run(
        pipeline,
        random_identity(2),
        seed=99,
        guidance_scale=1.0,
        adapters=scales(ip_adapter=0.3, faceid_lora=0.0, face_structure=0.5),
        num_inference_steps=3,
    )
    pipeline.generate(
        inpaint_settings(
            1024, 1024, face=FaceCondition(*random_identity(3)), adapters=scales(ip_adapter=2.0), strength=0.6
        )
    )
    # The appearance path: FaceID off, its LoRA layers switched off, the appearance adapter on.
    without_face = run_without_face(pipeline, appearance_image=appearance_image(4), appearance_scale=0.8)
    pipeline.generate(
        inpaint_settings(1024, 1024, face=None, adapters=WITHOUT_FACE, appearance_image=appearance_image(5))
    )
    assert np.array_equal(first, run(pipeline, identity))
    assert np.array_equal(
        without_face,
        run_without_face(pipeline, appearance_image=appearance_image(4), appearance_scale=0.8),
    )


@pytest.mark.parametrize(("folder", "pad_token"), [("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")])
def test_tiny_tokenizers_load_from_their_folders_and_take_any_text(tiny_layout, folder, pad_token):
    tokenizer = CLIPTokenizer.from_pretrained(tiny_layout.sdxl / folder)
    assert tokenizer.pad_token == pad_token
    ids = tokenizer("Naïve café — 日本語, emoji 😀 & the end!", truncation=True, max_length=77).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]  # every byte is in the vocabulary
    assert max(ids) < len(tokenizer)


def test_settings_reject_a_mask_without_an_image():
    with pytest.raises(ValueError, match="together"):
        dataclasses.replace(BASE, mask_image=Image.new("L", (BASE.width, BASE.height)))
