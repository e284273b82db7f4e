"""Rendering speeds as data: the schedule (solver, steps, guidance), identity scales and LoRAs of each speed.

One row per contract speed, used both by the service (dispatch) and by tests and the benchmark (what a
speed costs). Nothing here imports torch or diffusers: the scheduler is named, and the pipeline builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from model.generation.settings import AdapterScales

# The peft adapter name of the few-step distilled LoRA (SDXL-Lightning 8-step) in the UNet.
TURBO_LORA_ADAPTER = "turbo"


@dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler class by name, and the options it takes on top of the model's own config."""

    class_name: str
    options: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        # Read-only, so that a row of the table cannot be changed by the code that reads it.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True)
class Speed:
    scheduler: SchedulerSpec
    num_inference_steps: int
    # Classifier-free guidance is on when guidance_scale > 1 (diffusers' rule): two UNet passes per step.
    guidance_scale: float
    # The identity adapters' scales. FaceID Plus v2's three as its authors publish them (1.0 each);
    # IP-Adapter Plus's attention weight when it carries a character without a human face, below 1: at
    # full weight the adapter copies the reference's composition and drowns the prompt; 0.5-0.7 is the
    # usual range. The evaluation script (scores per speed) is where this is tuned.
    adapters: AdapterScales = AdapterScales(appearance=0.6)
    # Weight of the distilled few-step LoRA; 0 leaves that adapter inactive.
    turbo_lora_scale: float = 0.0

    def schedule(self, max_steps: int | None = None) -> dict[str, Any]:
        """This speed's schedule as GenerationSettings fields (the adapter scales go through the style),
        with at most max_steps denoising steps when given."""
        steps = self.num_inference_steps if max_steps is None else min(max_steps, self.num_inference_steps)
        return {
            "scheduler": self.scheduler,
            "num_inference_steps": steps,
            "guidance_scale": self.guidance_scale,
            "turbo_lora_scale": self.turbo_lora_scale,
        }

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def denoiser_evaluations(self) -> int:
        """UNet forward passes per image: one per step, two with classifier-free guidance."""
        return self.num_inference_steps * (2 if self.guided else 1)


# SDXL-Lightning's model card: Euler with "trailing" timesteps, exactly the step count the LoRA was
# distilled for, and no CFG (guidance_scale 0). Fewer steps would need another LoRA file.
LIGHTNING_SCHEDULER = SchedulerSpec("EulerDiscreteScheduler", {"timestep_spacing": "trailing"})
# DPM++ 2M with Karras sigmas: the usual SDXL solver for 25-30 steps (diffusers' "DPM++ 2M Karras").
DPM_2M_KARRAS = SchedulerSpec(
    "DPMSolverMultistepScheduler",
    {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
)
# Its stochastic variant (DPM++ 2M SDE Karras) adds fresh noise at each step, which corrects the
# drift of earlier steps and gives finer detail with more steps; the noise comes from the seeded
# generator, so a seed still fixes the image.
DPM_2M_SDE_KARRAS = SchedulerSpec(
    "DPMSolverMultistepScheduler",
    {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
)

SPEEDS: dict[str, Speed] = {
    "Turbo": Speed(
        scheduler=LIGHTNING_SCHEDULER,
        num_inference_steps=8,
        guidance_scale=0.0,
        turbo_lora_scale=1.0,
    ),
    "Default": Speed(scheduler=DPM_2M_KARRAS, num_inference_steps=28, guidance_scale=6.0),
    "Quality": Speed(scheduler=DPM_2M_SDE_KARRAS, num_inference_steps=45, guidance_scale=6.5),
}
