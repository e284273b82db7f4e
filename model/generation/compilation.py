"""Compiling the UNet: what torch.compile compiles, where its cache lives, and the eager fallback.

Owns compile_unet (the whole UNet under torch.compile, in place, so the text-to-image and inpaint pipelines
that share it both run compiled), the dynamo settings that keep a request from recompiling, the persistent
compile cache beside the weights (a restarted server reuses the kernels the last one built), and the eager
fallback: a compile failure, at the setup's warm-up or in a request, logs a warning and the UNet runs
eagerly from then on, so compilation can make a server faster but never makes it fail.

Whole-UNet rather than regional compilation (the transformer blocks alone): the merged LoRAs leave no
per-block code for regional compilation to share, and only a whole graph lets CUDA graphs remove the CPU's
launch overhead of SDXL's ~1,700 kernels per step (docs/PERFORMANCE.md). The warm-up
(model/generation/warm_up.py) runs every graph a request can need before the server reports ready.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.options import set_compile_cache_folders

log = logging.getLogger(__name__)

# Graphs dynamo keeps per code object before it gives up on compiling it (its default is 8; past it, the
# frame runs eagerly). The UNet's forward has a graph per path (which adapters' scales are 0: they skip
# code; PuLID's ID region or none) and per batch (1 without CFG, 2 with), on each side of its graph break:
# the tiny profile's warm-up makes 13.
RECOMPILE_LIMIT = 64
# The mode on a CUDA GPU: inductor's Triton kernels replayed as CUDA graphs (torch.compile's
# "reduce-overhead"), which record one graph per input shape on its first call. A prediction until
# scripts/gpu_check.sh measures it against the eager and the default mode.
CUDA_MODE = "reduce-overhead"
# The compile cache's folder in the weights folder: inductor's FX-graph, AOTAutograd and autotuning caches and
# Triton's kernels, per torch version (another version's entries are never valid).
CACHE_FOLDER = ".compile-cache"


class CompileFailed(RuntimeError):
    """Raised by a test's backend to stand for any failure of torch.compile's compiler."""


def compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean torch.compile failed (dynamo's tracing, a backend's code generation, the
    recompile limit with fullgraph), as opposed to the UNet's own errors, which propagate."""
    errors: list[type[BaseException]] = [torch._dynamo.exc.TorchDynamoException]
    inductor_error = getattr(torch._inductor.exc, "InductorError", None)
    if inductor_error is not None:
        errors.append(inductor_error)
    return tuple(errors)


def compile_unet(
    unet: nn.Module, *, backend: str | Any = "inductor", mode: str | None = None, dynamic: bool | None = True
) -> nn.Module:
    """Compile `unet` in place (nn.Module.compile's hook, so every holder of the module runs compiled);
    returns it. Nothing compiles here: the first calls do (run the warm-up next).

    backend: torch.compile's ("eager" and "aot_eager" trace without generating code, for tests; a callable
    backend injects failures). mode: torch.compile's (None: its default; CUDA_MODE on a GPU server).
    dynamic: torch.compile's. True (the default): every graph takes any size and prompt length from its
    first compilation; None would compile each path's graph twice, for its first shapes and then for any,
    and each compilation of the whole UNet costs tens of seconds of tracing (measured: the tiny profile's
    warm-up made 16 graphs with None, 13 with True). On a compile error in any call, the call is run
    eagerly; when that succeeds, the UNet logs a warning and runs eagerly from then on (unet_is_compiled()
    tells which, unet.compile_failure why).
    """
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # Without duck shaping, a square first dynamic size gives height and width their own symbols: with it,
    # dynamo would assume height == width and a non-square request would recompile.
    torch.fx.experimental._config.use_duck_shape = False
    compiled = torch.compile(unet._call_impl, backend=backend, mode=mode, dynamic=dynamic)
    errors = compile_errors()

    def call_compiled_or_eagerly(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except errors as error:
            # dynamo reports the UNet's own errors met while tracing (a shape mismatch) as its own too: the
            # eager call tells them apart. If it fails as well, its error is the request's and compilation
            # stays on; if it succeeds, the compiler failed, and the UNet stays eager.
            output = unet._call_impl(*args, **kwargs)
            reason = describe_failure(error)
            log.warning("torch.compile failed (%s); the UNet runs eagerly from now on", reason)
            unet._compiled_call_impl = None
            unet.compile_failure = reason
            return output

    unet._compiled_call_impl = call_compiled_or_eagerly
    unet.compile_failure = None
    log.info("UNet set to compile (torch.compile, backend %s, mode %s) at its first calls", backend, mode)
    return unet


def describe_failure(error: BaseException) -> str:
    """One line for the log: dynamo's exception and the compiler's own error inside it (dynamo's message
    goes on with a long guide to reproducing it, which the log line leaves out)."""
    inner = getattr(error, "inner_exception", None) or error.__cause__
    line = f"{type(error).__name__}"
    if inner is not None:
        return f"{line}: {type(inner).__name__}: {(str(inner).strip().splitlines() or [''])[0]}"
    return f"{line}: {(str(error).strip().splitlines() or [''])[0]}"


def unet_is_compiled(unet: nn.Module) -> bool:
    """Whether the UNet runs compiled: compile_unet was applied and no compile error has switched it back."""
    return getattr(unet, "_compiled_call_impl", None) is not None


def use_compile_cache(weights_dir: Path, configured: Path | None = None) -> Path:
    """Point inductor's and Triton's caches at the weights folder's CACHE_FOLDER, per torch version, so that
    a restarted server (a new container on the same weights volume) loads the kernels the last one built
    instead of generating them. `configured`: the operator's own folder (ServiceOptions.compile_cache_dir,
    TORCHINDUCTOR_CACHE_DIR), which wins. A read-only weights folder falls back to a temporary folder
    (logged: the cache then lasts one process). Returns inductor's cache folder."""
    if configured is not None:
        log.info("Compile cache: %s (TORCHINDUCTOR_CACHE_DIR, as set)", configured)
        return configured
    folder = Path(weights_dir) / CACHE_FOLDER / f"torch-{torch.__version__}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as error:
        folder = Path(tempfile.mkdtemp(prefix="character-compile-cache-"))
        log.warning(
            "Compile cache: the weights folder is not writable (%s); using %s, which a restart loses",
            error,
            folder,
        )
    set_compile_cache_folders(folder)
    log.info("Compile cache: %s", folder)
    return folder / "inductor"
