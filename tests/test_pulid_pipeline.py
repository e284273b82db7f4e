"""PuLID v1.1 as the identity adapter, in the pipeline and through the live server (tiny profile), and its
per-step cost at real size (meta weights).

What is checked: the server uses PuLID for a face by default and FaceID when CHARACTER_IDENTITY_ADAPTER says
so; the ID keys and values are computed once per pipeline call, with the null ID in CFG's unconditional rows;
inpainting confines the ID branch to the mask; nothing of a PuLID request reaches the next one; a UNet step
dispatches at most 1.10x the plain UNet's operators (tiny) and costs at most 1.03x its FLOPs (real size).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from devtools.counting import (
    META,
    count_flops,
    pulid_settings_for,
    real_size_character,
    real_size_modules,
    settings_for,
)
from model.generation.pulid_branch import mask_regions
from model.generation.settings import FaceCondition, GenerationSettings, IDTokens
from model.generation.speeds import SPEEDS
from model.generation.warm_up import stand_in_face
from model.identity.pulid.alignment import ALIGNED_FACE_SIZE, BORDER_RGB, FFHQ_TEMPLATE_512, align_face
from model.identity.pulid.extraction import PuLIDEncoder
from model.options import IDENTITY_ADAPTER_ENV, ConfigurationError, ServiceOptions
from model.timing import StageTimer
from model.weights.layout import SDXL_VARIANT
from tests.helpers.cog_server import running_cog_server
from tests.helpers.images import cartoon_robot, data_uri, decode_image, pixels
from tests.helpers.operators import count_step, unet_inputs

SIZE = 64
CPU = torch.device("cpu")
# The bounds of the issue this adapter answers: per UNet call, FLOPs at real size and operators (tiny).
FLOP_BOUND = 1.03
OPERATOR_BOUND = 1.10


def pulid_request(pipeline, speed: str = "Default", **changes) -> GenerationSettings:
    settings = settings_for(SPEEDS[speed], SIZE, SIZE)
    face = stand_in_face(pipeline.id_token_width)
    settings = dataclasses.replace(settings, face=face, adapters=settings.adapters.for_pulid())
    settings = dataclasses.replace(settings, **{"num_inference_steps": 3} | changes)
    return settings


def centre_mask(size: int = SIZE) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return mask


def inpainting(settings: GenerationSettings) -> GenerationSettings:
    return dataclasses.replace(
        settings, init_image=Image.new("RGB", (SIZE, SIZE), "grey"), mask_image=centre_mask()
    )


# --- The pipeline (tiny) ---------------------------------------------------------------------------------


def test_pulid_replaces_faceid_its_lora_and_projection(pulid_pipeline):
    assert pulid_pipeline.identity_adapter == "pulid"
    unet = pulid_pipeline.text_to_image.unet
    # The appearance adapter alone among the IP-Adapters; no FaceID LoRA among the merged ones.
    assert len(unet.encoder_hid_proj.image_projection_layers) == 1
    assert pulid_pipeline.loras.adapters == {"turbo"}
    assert len(pulid_pipeline.id_attentions) == sum(
        1 for name in unet.attn_processors if name.endswith("attn2.processor")
    )
    with pytest.raises(ValueError, match="identity adapter is PuLID"):
        _ = pulid_pipeline.faceid_projection


def test_each_pipeline_refuses_the_other_adapters_face(pulid_pipeline, pipeline, identity):
    with pytest.raises(ValueError, match="identity adapter is PuLID"):
        faceid_face = dataclasses.replace(pulid_request(pulid_pipeline), face=FaceCondition(*identity))
        pulid_pipeline.prepare(faceid_face)
    with pytest.raises(ValueError, match="identity adapter is FaceID"):
        pipeline.prepare(pulid_request(pulid_pipeline))


def test_id_keys_are_computed_once_per_call_with_the_null_id_unconditional(pulid_pipeline):
    settings = pulid_request(pulid_pipeline)
    calls = []
    hooks = [
        attention.processor.id_branch.id_to_k.register_forward_hook(lambda *_: calls.append(1))
        for attention in pulid_pipeline.id_attentions
    ]
    steps = []
    try:
        pulid_pipeline.generate(settings, on_step=lambda step, total: steps.append(len(calls)))
    finally:
        for hook in hooks:
            hook.remove()
    layers = len(pulid_pipeline.id_attentions)
    # Once per layer before the loop, never during its 3 steps.
    assert steps == [layers] * 3
    attention = pulid_pipeline.id_attentions[0]
    branch = attention.processor.id_branch
    key = branch.key_values[0]
    face = settings.face
    with torch.no_grad():
        zeros = torch.zeros(1, settings.adapters.zero_tokens, face.tokens.shape[-1])
        for row, tokens in enumerate((face.null, face.tokens)):  # CFG's batch: unconditional first
            expected = branch.id_to_k(torch.cat((tokens, zeros), dim=1))
            assert torch.equal(key[row].transpose(0, 1).reshape(expected.shape[1:]), expected[0])


def test_the_id_branch_changes_the_image_and_never_leaks_into_the_next_request(pulid_pipeline):
    settings = pulid_request(pulid_pipeline, "Turbo")
    without_id = dataclasses.replace(settings, adapters=dataclasses.replace(settings.adapters, id_scale=0.0))
    appearance_only = dataclasses.replace(
        settings,
        face=None,
        adapters=settings.adapters.without_face().with_appearance(0.6),
        appearance_image=Image.new("RGB", (200, 300), "teal"),
    )
    before = np.asarray(pulid_pipeline.generate(appearance_only))
    plain = np.asarray(pulid_pipeline.generate(without_id))
    with_id = np.asarray(pulid_pipeline.generate(settings))
    after = np.asarray(pulid_pipeline.generate(appearance_only))
    assert np.abs(with_id.astype(int) - plain).mean() > 0.1
    assert np.array_equal(before, after)
    assert all(attention.processor.id_branch.key_values is None for attention in pulid_pipeline.id_attentions)


def test_the_appearance_adapter_works_beside_pulid(pulid_pipeline):
    # CHARACTER_APPEARANCE_WITH_FACE: the head-and-shoulders crop through IP-Adapter Plus, with the ID tokens.
    settings = pulid_request(pulid_pipeline, "Turbo")
    crop = Image.fromarray(np.random.default_rng(5).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    with_appearance = dataclasses.replace(
        settings, adapters=settings.adapters.with_appearance(0.5), appearance_image=crop
    )
    pipe, inputs = pulid_pipeline.prepare(with_appearance)
    assert pulid_pipeline.id_attentions[0].processor.scale == [0.5]
    assert inputs["ip_adapter_image_embeds"][0].abs().sum() > 0
    alone = np.asarray(pulid_pipeline.generate(settings))
    beside = np.asarray(pulid_pipeline.generate(with_appearance))
    assert not np.array_equal(alone, beside)


def test_inpainting_confines_the_id_branch_to_the_mask_on_every_token_grid(pulid_pipeline):
    # 128 px, so that the tiny UNet's first attention level (two halvings below the latent) has a 4 x 4 grid.
    size = 2 * SIZE
    settings = settings_for(SPEEDS["Turbo"], size, size)
    settings = dataclasses.replace(
        settings,
        face=stand_in_face(pulid_pipeline.id_token_width),
        adapters=settings.adapters.for_pulid(),
        init_image=Image.new("RGB", (size, size), "grey"),
        mask_image=centre_mask(size),
    )
    pulid_pipeline.prepare(settings)
    branches = [attention.processor.id_branch for attention in pulid_pipeline.id_attentions]
    # Every cross-attention has the mask on its own grid: the latent (128 / 8 = 16) halved at each level.
    for branch in branches:
        side = 16 >> branch.level
        assert branch.region.shape == (1, 1, side * side, 1)
    grid = next(b.region for b in branches if b.level == 2).reshape(4, 4)
    # The mask's centre square, and nothing around it.
    assert torch.equal(grid[1:3, 1:3], torch.ones(2, 2)) and grid.sum() == 4
    assert {branch.level for branch in branches} == {2, 3}
    # Text-to-image next: no region is left behind.
    pulid_pipeline.prepare(pulid_request(pulid_pipeline))
    assert all(branch.region is None for branch in branches)


def test_mask_regions_average_each_tokens_pixels():
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 32, 48))  # the left half regenerates
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D",) * 2,
            up_block_types=("UpBlock2D",) * 2,
            cross_attention_dim=32,
        )
    regions = mask_regions(mask, unet, CPU)
    assert [region.shape[1] for region in regions] == [48, 12]
    level0 = regions[0].reshape(6, 8)
    assert torch.equal(level0[:, :4], torch.ones(6, 4)) and torch.equal(level0[:, 4:], torch.zeros(6, 4))


@pytest.fixture(scope="module")
def plain_unet(tiny_layout) -> UNet2DConditionModel:
    """The plain tiny UNet as a server holds it: without gradients, as ours (aten's matmul takes another
    path for weights that require them: a clone and mm where ours runs expand, view and bmm)."""
    unet = UNet2DConditionModel.from_pretrained(tiny_layout.sdxl, subfolder="unet", variant=SDXL_VARIANT)
    return unet.requires_grad_(False).eval()


@pytest.mark.parametrize("inpaint", [False, True], ids=["text-to-image", "inpaint"])
@pytest.mark.parametrize("speed", list(SPEEDS))
def test_a_pulid_unet_step_stays_within_the_operator_bound(pulid_pipeline, plain_unet, speed, inpaint):
    settings = pulid_request(pulid_pipeline, speed)
    settings = inpainting(settings) if inpaint else settings
    pipe, inputs = pulid_pipeline.prepare(settings)
    guided = SPEEDS[speed].guided
    args, kwargs = unet_inputs(pipe, inputs, guided, SIZE)
    ours = count_step(pipe.unet, args, kwargs)
    plain_kwargs = dict(kwargs, added_cond_kwargs=dict(kwargs["added_cond_kwargs"]))
    del plain_kwargs["added_cond_kwargs"]["image_embeds"]
    plain = count_step(plain_unet, args, plain_kwargs)
    # The branch's own operators: the same call with the branch cleared.
    for attention in pulid_pipeline.id_attentions:
        attention.processor.id_branch.forget()
    without_branch = count_step(pipe.unet, args, kwargs)
    per_layer = (ours - without_branch) / len(pulid_pipeline.id_attentions)
    print(
        f"{speed} {'inpaint' if inpaint else 'text-to-image'}: {ours} operators, plain {plain}, "
        f"ratio {ours / plain:.3f}; the ID branch {per_layer:.1f} per cross-attention"
    )
    assert per_layer <= 11
    assert ours <= OPERATOR_BOUND * plain, (ours, plain)


def real_unet_step_flops(unet, batch: int, image_embeds=None) -> int:
    latent = (batch, 4, 128, 128)
    added = {
        "text_embeds": torch.empty(batch, 1280, device=META, dtype=unet.dtype),
        "time_ids": torch.empty(batch, 6, device=META, dtype=unet.dtype),
    }
    if image_embeds is not None:
        added["image_embeds"] = image_embeds
    return count_flops(
        lambda: unet(
            torch.empty(latent, device=META, dtype=unet.dtype),
            torch.tensor(999.0, device=META),
            encoder_hidden_states=torch.empty(batch, 77, 2048, device=META, dtype=unet.dtype),
            added_cond_kwargs=added,
        )
    ).get_total_flops()


@pytest.mark.parametrize("speed", ["Turbo", "Default"])
def test_a_pulid_unet_step_at_real_size_costs_at_most_1_03x_the_plain_unets_flops(speed):
    character = real_size_character(identity_adapter="pulid")
    settings = pulid_settings_for(SPEEDS[speed])
    pipe, inputs = character.prepare(settings)
    guided = SPEEDS[speed].guided
    batch = 2 if guided else 1
    with torch.no_grad():
        image_embeds = pipe.prepare_ip_adapter_image_embeds(
            None, inputs["ip_adapter_image_embeds"], META, 1, do_classifier_free_guidance=guided
        )
    ours = real_unet_step_flops(pipe.unet, batch, image_embeds)
    plain = real_unet_step_flops(real_size_modules()["unet"], batch)
    print(f"{speed}: {ours / 1e12:.3f} TFLOP a UNet call, plain {plain / 1e12:.3f}, ratio {ours / plain:.4f}")
    assert plain < ours <= FLOP_BOUND * plain


# --- ID extraction (tiny) --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(tiny_layout) -> PuLIDEncoder:
    """PuLID's face side on the tiny folder (write_pulid writes antelopev2's stand-ins there too)."""
    return PuLIDEncoder.load(tiny_layout, CPU, torch.float32)


@pytest.fixture(scope="module")
def cartoon() -> Image.Image:
    return cartoon_robot()


def test_id_extraction_gives_32_tokens_per_face_timed_per_stage(encoder, portrait, cartoon):
    timer = StageTimer()
    tokens = encoder.encode(portrait, timer=timer)
    assert isinstance(tokens, IDTokens)
    assert tokens.tokens.shape == tokens.null.shape == (1, 32, 32)
    assert list(timer.seconds) == ["pulid_face", "pulid_parse", "pulid_eva", "pulid_idformer"]
    # The null ID is the IDFormer's output for zero inputs, computed once.
    assert encoder.encode(portrait).null is tokens.null
    assert not torch.equal(tokens.tokens, tokens.null)
    assert encoder.encode(cartoon) is None


def test_landmarks_of_another_detector_are_the_fallback(encoder, cartoon, portrait):
    landmarks = FFHQ_TEMPLATE_512 * (min(cartoon.size) / ALIGNED_FACE_SIZE)
    tokens = encoder.encode(cartoon, fallback_landmarks=landmarks)
    assert tokens is not None and tokens.tokens.shape == (1, 32, 32)


def test_alignment_undoes_a_known_similarity_transform():
    rng = np.random.default_rng(3)
    face = np.kron(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    # The face rotated by 20 degrees, scaled by 0.6 and moved, on a larger canvas; its landmarks move alike.
    angle, scale, shift = np.deg2rad(20), 0.6, np.array([310.0, 140.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.hstack([rotation, shift[:, None]])
    photo = cv2.warpAffine(face, matrix, (900, 700), flags=cv2.INTER_CUBIC)
    landmarks = FFHQ_TEMPLATE_512 @ rotation.T + shift
    aligned = align_face(photo, landmarks)
    assert aligned.shape == (ALIGNED_FACE_SIZE, ALIGNED_FACE_SIZE, 3)
    inner = (slice(48, -48), slice(48, -48))
    assert np.abs(aligned[inner].astype(int) - face[inner]).mean() < 12
    # A white 40 x 40 photo at a quarter of the template's scale covers the aligned face's top-left
    # 160 x 160 pixels; the rest lies outside the photo and gets facexlib's grey border.
    small = align_face(np.full((40, 40, 3), 255, np.uint8), FFHQ_TEMPLATE_512 / 4)
    assert tuple(small[0, 0]) == (255, 255, 255)
    assert tuple(small[-1, -1]) == BORDER_RGB
    with pytest.raises(ValueError, match="no similarity transform"):
        align_face(photo, np.zeros((5, 2)))


def test_an_unknown_identity_adapter_fails_setup_naming_the_variable():
    assert ServiceOptions.from_environment({}).identity_adapter == "pulid"
    assert ServiceOptions.from_environment({IDENTITY_ADAPTER_ENV: "FaceID"}).identity_adapter == "faceid"
    with pytest.raises(ConfigurationError, match=f"{IDENTITY_ADAPTER_ENV}='instantid'.*pulid.*faceid"):
        ServiceOptions.from_environment({IDENTITY_ADAPTER_ENV: "instantid"})


# --- The live server (tiny profile) ----------------------------------------------------------------------

REQUEST = dict(prompt="the character in a garden", rendering_speed="Turbo", magic_prompt_option="Off", seed=3)


def adapter_line(logs: str) -> str:
    (line,) = [line for line in logs.splitlines() if line.startswith("Adapters: ")]
    return line


@pytest.mark.server
def test_the_server_uses_pulid_for_a_face_by_default(cog_server, portrait):
    body = cog_server.predict(character_reference_image=data_uri(portrait), **REQUEST).json()
    assert body["status"] == "succeeded", body.get("error")
    assert adapter_line(body["logs"]) == "Adapters: PuLID 0.80 (num_zero 20), appearance 0.00"
    server_log = cog_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Identity adapter for faces: PuLID v1.1" in server_log


@pytest.fixture(scope="module")
def faceid_server(tiny_weights, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("faceid-server") / "server.log"
    with running_cog_server(tiny_weights, log_path, **{IDENTITY_ADAPTER_ENV: "faceid"}) as server:
        yield server


@pytest.mark.server
def test_the_server_uses_faceid_when_set_and_inpainting_keeps_every_white_pixel(faceid_server, portrait):
    health = faceid_server.health()
    assert health["status"] == "READY", health["setup"].get("logs", "")[-3000:]
    image = portrait.resize((256, 192))
    mask = Image.new("L", image.size, 255)
    mask.paste(0, (64, 48, 192, 144))  # black: regenerate (the contract's convention)
    body = faceid_server.predict(
        character_reference_image=data_uri(portrait), image=data_uri(image), mask=data_uri(mask), **REQUEST
    ).json()
    assert body["status"] == "succeeded", body.get("error")
    assert adapter_line(body["logs"]) == "Adapters: FaceID 1.00 (LoRA 1.00, structure 1.00), appearance 0.00"
    output = pixels(decode_image(body["output"]))
    white = np.asarray(mask) == 255
    assert np.array_equal(output[white], pixels(image)[white])
    server_log = faceid_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Identity adapter for faces: FaceID Plus v2" in server_log
