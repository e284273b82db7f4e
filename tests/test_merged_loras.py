"""LoRAs merged into the UNet's weights (model/generation/merged_loras.py): no per-step adapter operators,
the merged
output equal to peft's unmerged one, exact switching, and a switch that fails part-way.

The operator count of one UNet call (every aten operator dispatched, counted with a TorchDispatchMode) is
the CPU's deterministic proxy for the GPU's per-step kernel launches.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from peft.tuners.lora import LoraLayer
from PIL import Image

from devtools.counting import memory_budget, real_size_character, settings_for
from model.generation.merged_loras import MergedLoras
from model.generation.pipeline import (
    FACEID_LORA_ADAPTER,
    CharacterPipeline,
    attach_adapters,
)
from model.generation.settings import FaceCondition, GenerationSettings
from model.generation.speeds import SPEEDS, TURBO_LORA_ADAPTER
from model.weights.layout import SDXL_VARIANT, WeightsLayout
from tests.helpers.operators import count_step, unet_inputs

SIZE = 64
CPU = torch.device("cpu")
# FaceID's LoRA at the Fiction style's factor, as a request can merge it.
FICTION = {FACEID_LORA_ADAPTER: 0.8}


def load(layout: WeightsLayout, dtype: torch.dtype = torch.float32) -> CharacterPipeline:
    return CharacterPipeline.load(layout, CPU, dtype, identity_adapter="faceid")


def path_settings(speed: str, path: str, inpainting: bool) -> GenerationSettings:
    settings = settings_for(SPEEDS[speed], SIZE, SIZE)
    if path == "appearance":
        settings = dataclasses.replace(
            settings,
            adapters=settings.adapters.without_face().with_appearance(SPEEDS[speed].adapters.appearance),
            face=None,
            appearance_image=Image.new("RGB", (200, 300), "teal"),
        )
    if inpainting:
        mask = Image.new("L", (SIZE, SIZE), 0)
        mask.paste(255, (16, 16, 48, 48))
        settings = dataclasses.replace(
            settings, init_image=Image.new("RGB", (SIZE, SIZE), "grey"), mask_image=mask
        )
    return settings


def prepare_with(pipeline: CharacterPipeline, identity, settings: GenerationSettings):
    """pipeline.prepare, with the `identity` fixture's face on the face path (settings with a face)."""
    if settings.face is not None:
        settings = dataclasses.replace(settings, face=FaceCondition(*identity))
    return pipeline.prepare(settings)


@pytest.fixture(scope="module")
def plain_step_operators(tiny_layout, pipeline, identity) -> dict[bool, int]:
    """The plain tiny SDXL UNet (no adapter) at batch 1 and 2: guided or not."""
    plain = UNet2DConditionModel.from_pretrained(tiny_layout.sdxl, subfolder="unet", variant=SDXL_VARIANT)
    counts = {}
    for guided, speed in ((False, "Turbo"), (True, "Default")):
        pipe, inputs = prepare_with(pipeline, identity, path_settings(speed, "face", False))
        del inputs["ip_adapter_image_embeds"]
        counts[guided] = count_step(plain, *unet_inputs(pipe, inputs, guided))
    return counts


@pytest.mark.parametrize("inpainting", [False, True], ids=["text-to-image", "inpaint"])
@pytest.mark.parametrize("path", ["face", "appearance"])
@pytest.mark.parametrize("speed", list(SPEEDS))
def test_a_unet_step_dispatches_no_lora_operator(
    pipeline, identity, plain_step_operators, speed, path, inpainting
):
    settings = path_settings(speed, path, inpainting)
    pipe, inputs = prepare_with(pipeline, identity, settings)
    assert pipe is (pipeline.inpaint if inpainting else pipeline.text_to_image)
    guided = SPEEDS[speed].guided
    args, kwargs = unet_inputs(pipe, inputs, guided)
    ours = count_step(pipe.unet, args, kwargs)
    plain = plain_step_operators[guided]
    # Within 10% of the plain UNet: no LoRA operator (the LoRAs are merged), no image projection per step
    # and no image key or value projection per step (both once per call); what is left over the plain
    # UNet is one attention per cross-attention layer for the IP-Adapter in use. With both IP scales at 0
    # (that attention is then skipped) the same bound must hold.
    for processor in pipe.unet.attn_processors.values():
        if hasattr(processor, "scale"):
            processor.scale = [0.0, 0.0]
    without_ip_attention = count_step(pipe.unet, args, kwargs)
    mode = "inpaint" if inpainting else "text-to-image"
    print(f"{speed} {path} {mode}: {ours} operators ({without_ip_attention} without IP attention)")
    print(f"plain UNet: {plain}; ratio {ours / plain:.3f} ({without_ip_attention / plain:.3f} without)")
    assert without_ip_attention <= 1.10 * plain, (without_ip_attention, plain)
    assert ours <= 1.10 * plain, (ours, plain)


@pytest.mark.parametrize("path", ["face", "appearance"])
def test_precomputed_image_keys_give_diffusers_output_bitwise(pipeline, identity, path):
    # The UNet with each layer's image key and value computed once per call, against the same UNet with
    # diffusers' own IPAdapterAttnProcessor2_0 path (key_values cleared: to_k_ip/to_v_ip per layer).
    pipe, inputs = prepare_with(pipeline, identity, path_settings("Default", path, False))
    args, kwargs = unet_inputs(pipe, inputs, True)
    processors = [p for p in pipe.unet.attn_processors.values() if hasattr(p, "key_values")]
    assert len(processors) == sum(name.endswith("attn2.processor") for name in pipe.unet.attn_processors)
    with torch.no_grad():
        precomputed = pipe.unet(*args, **kwargs).sample
        assert all(p.key_values is not None for p in processors)
        for processor in processors:
            processor.key_values = None
        per_step = pipe.unet(*args, **kwargs).sample
    assert torch.equal(precomputed, per_step)
    assert not torch.equal(precomputed, torch.zeros_like(precomputed))


def test_merged_output_equals_peft_unmerged_output(tiny_layout, pipeline, identity):
    reference = StableDiffusionXLPipeline.from_pretrained(
        tiny_layout.sdxl,
        vae=pipeline.text_to_image.vae,
        image_encoder=pipeline.text_to_image.image_encoder,
        variant=SDXL_VARIANT,
        add_watermarker=False,
    )
    layout = tiny_layout
    attach_adapters(reference, layout.faceid_adapter, layout.appearance_adapter, layout.turbo_lora_file)
    assert any(isinstance(m, LoraLayer) for m in reference.unet.modules())
    pipe, inputs = prepare_with(pipeline, identity, path_settings("Default", "face", False))
    args, kwargs = unet_inputs(pipe, inputs, True)
    # The per-request state that prepare() set on ours: the face crop's tokens and the IP scales.
    projection = reference.unet.encoder_hid_proj.image_projection_layers[0]
    projection.clip_embeds = pipeline.faceid_projection.clip_embeds
    projection.shortcut, projection.shortcut_scale = True, pipeline.faceid_projection.shortcut_scale
    reference.set_ip_adapter_scale([1.0, 0.0])
    sets = [{FACEID_LORA_ADAPTER: 1.0, TURBO_LORA_ADAPTER: 1.0}, FICTION, {TURBO_LORA_ADAPTER: 1.0}, {}]
    with torch.no_grad():
        for lora_set in sets:
            pipeline.loras.use(lora_set)
            if lora_set:
                reference.unet.enable_lora()
                reference.set_adapters(list(lora_set), adapter_weights=list(lora_set.values()))
            else:
                reference.unet.disable_lora()
            merged = pipe.unet(*args, **kwargs).sample
            unmerged = reference.unet(*args, **kwargs).sample
            torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5, msg=str(lora_set))


def test_merged_delta_is_peft_delta(tiny_layout):
    # Our delta (up @ down in fp32, at peft's scaling) against peft's get_delta_weight, layer by layer,
    # on the Lightning LoRA: Linear, 3x3 and 1x1 Conv2d layers.
    unet = UNet2DConditionModel.from_pretrained(tiny_layout.sdxl, subfolder="unet", variant=SDXL_VARIANT)
    lora = tiny_layout.turbo_lora_file
    state_dict, alphas = StableDiffusionXLPipeline.lora_state_dict(str(lora.parent), weight_name=lora.name)
    StableDiffusionXLPipeline.load_lora_into_unet(state_dict, alphas, unet, adapter_name=TURBO_LORA_ADAPTER)
    layers = {name: m for name, m in unet.named_modules() if isinstance(m, LoraLayer)}
    deltas = {name: m.get_delta_weight(TURBO_LORA_ADAPTER).detach().clone() for name, m in layers.items()}
    bases = {name: m.get_base_layer().weight.detach().clone() for name, m in layers.items()}
    assert {type(m.get_base_layer()).__name__ for m in layers.values()} == {"Linear", "Conv2d"}
    loras = MergedLoras.take_from(unet)
    assert not any(isinstance(m, LoraLayer) for m in unet.modules())
    loras.use({TURBO_LORA_ADAPTER: 1.0})
    modules = dict(unet.named_modules())
    assert len(deltas) == loras.layer_count(TURBO_LORA_ADAPTER)
    for name, delta in deltas.items():
        torch.testing.assert_close(modules[name].weight.detach() - bases[name], delta, rtol=1e-4, atol=1e-6)


def state(pipeline: CharacterPipeline) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipeline.text_to_image.unet.state_dict().items()}


def assert_bitwise_equal(actual: dict, expected: dict, label: str) -> None:
    assert actual.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not different, f"{label}: {different[:5]}"


SWITCHES = [
    {FACEID_LORA_ADAPTER: 1.0, TURBO_LORA_ADAPTER: 1.0},  # Turbo, face
    {FACEID_LORA_ADAPTER: 1.0},  # Default, face
    {},  # Default, appearance
    {TURBO_LORA_ADAPTER: 1.0},  # Turbo, appearance
    FICTION,  # Default, face, Fiction style
    {FACEID_LORA_ADAPTER: 0.8, TURBO_LORA_ADAPTER: 1.0},  # Turbo, face, Fiction
    {FACEID_LORA_ADAPTER: 1.0, TURBO_LORA_ADAPTER: 1.0},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_any_sequence_of_switches_equals_a_fresh_merge_bitwise(tiny_layout, dtype):
    switching = load(tiny_layout, dtype)
    fresh_states = {}
    for lora_set in SWITCHES:
        key = tuple(sorted(lora_set.items()))
        if key not in fresh_states:
            fresh = load(tiny_layout, dtype)
            fresh.loras.use(lora_set)
            fresh_states[key] = state(fresh)
    pristine = state(switching)
    for lora_set in SWITCHES:
        switching.loras.use(lora_set)
        assert switching.loras.merged == lora_set
        assert_bitwise_equal(state(switching), fresh_states[tuple(sorted(lora_set.items()))], str(lora_set))
    switching.loras.use({})
    assert_bitwise_equal(state(switching), pristine, "back to no LoRA")


def test_a_switch_that_fails_part_way_leaves_no_mixed_weights(tiny_layout, identity, monkeypatch):
    pipeline = load(tiny_layout)
    fresh = load(tiny_layout)
    turbo = path_settings("Turbo", "face", False)
    prepare_with(pipeline, identity, path_settings("Default", "face", False))
    written = []
    write = MergedLoras._write

    def fail_after_three_layers(layer, part):
        if len(written) == 3:
            raise RuntimeError("injected failure")
        written.append(layer.name)
        write(layer, part)

    monkeypatch.setattr(MergedLoras, "_write", staticmethod(fail_after_three_layers))
    with pytest.raises(RuntimeError, match="injected"):
        prepare_with(pipeline, identity, turbo)
    # Three layers hold the new set and the others the old one: the state says it does not know.
    assert pipeline.loras.merged is None
    monkeypatch.setattr(MergedLoras, "_write", staticmethod(write))
    # The next request of the same set as before the failure re-merges every layer from pristine.
    prepare_with(pipeline, identity, path_settings("Default", "face", False))
    fresh.loras.use({FACEID_LORA_ADAPTER: 1.0})
    assert_bitwise_equal(state(pipeline), state(fresh), "after the failure")
    # And a switch from there is exact too.
    prepare_with(pipeline, identity, turbo)
    fresh.loras.use({})
    fresh.loras.use({FACEID_LORA_ADAPTER: 1.0, TURBO_LORA_ADAPTER: 1.0})
    assert_bitwise_equal(state(pipeline), state(fresh), "Turbo after the failure")


def test_unknown_adapter_is_a_callers_mistake(pipeline):
    with pytest.raises(ValueError, match="not loaded"):
        pipeline.loras.use({"other": 1.0})


def test_pristine_copy_at_real_size_is_in_the_memory_budget():
    character = real_size_character()
    (row,) = [row for row in memory_budget() if row.name.startswith("pristine copy")]
    assert character.loras.pristine_bytes == row.bytes
    # Every Linear and Conv2d in SDXL's down, mid and up blocks: most of the UNet's 2.57 B parameters.
    print(f"pristine copy at real size: {row.bytes / 2**30:.2f} GiB")
    assert 4.0 < row.bytes / 2**30 < 4.8
