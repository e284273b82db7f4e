"""The server's settings that the contract has no input for: every environment variable, read once.

ServiceOptions.from_environment is the only reader of the environment in the serving package. The Cog
predictor calls it at setup and passes the value down: the weights folder and its tarball
(model/weights/url.py), the compilation of the UNet and its cache folder (model/generation/compilation.py,
which sets torch's cache variables through set_compile_cache_folders), the appearance adapter beside FaceID
and the safety checker (model/service.py). A value it cannot use fails setup with a
ConfigurationError that names the variable and what to set, before any weights are fetched or loaded.
VARIABLES lists each variable with the field it sets; a test checks the README's configuration table
against it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from model.errors import ConfigurationError

WEIGHTS_DIR_ENV = "WEIGHTS_DIR"
WEIGHTS_URL_ENV = "WEIGHTS_URL"
WEIGHTS_SHA256_ENV = "WEIGHTS_SHA256"
COMPILE_ENV = "CHARACTER_TORCH_COMPILE"
APPEARANCE_WITH_FACE_ENV = "CHARACTER_APPEARANCE_WITH_FACE"
SAFETY_CHECKER_ENV = "CHARACTER_SAFETY_CHECKER"
IDENTITY_ADAPTER_ENV = "CHARACTER_IDENTITY_ADAPTER"
# torch.compile's cache folders (inductor's, Triton's): read here, and set by set_compile_cache_folders.
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
TRITON_CACHE_ENV = "TRITON_CACHE_DIR"

DEFAULT_WEIGHTS_DIR = Path("weights")
# Above about 1 the appearance adapter copies the reference image outright.
MAX_APPEARANCE_WITH_FACE = 1.0
SAFETY_SWITCH = {"on": True, "off": False}
# On by default: compile on a CUDA GPU (the CPU ignores it); 0 serves the UNet eagerly.
COMPILE_SWITCH = {"": True, "0": False, "1": True}
# The identity adapter for a reference with a human face: PuLID v1.1 (the default), or IP-Adapter FaceID
# Plus v2 with its LoRA.
PULID = "pulid"
FACEID = "faceid"
IDENTITY_ADAPTERS = (PULID, FACEID)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ServiceOptions:
    # The weights folder: production or tiny, the same layout (model/weights/layout.py).
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    # A tarball of a weights folder, fetched at setup when weights_dir is missing or incomplete, and its
    # sha256 (64 lower-case hex digits; required with the URL, so that what is installed is verified).
    weights_url: str | None = None
    weights_sha256: str | None = None
    # Compile the UNet with torch.compile at setup (model/generation/compilation.py); CUDA only (ignored on
    # the CPU).
    torch_compile: bool = True
    # The appearance adapter's scale on a head-and-shoulders crop beside FaceID (hair, outfit); 0 = off.
    appearance_scale_with_face: float = 0.0
    # The NSFW check of each output (model/safety.py); on unless switched off.
    safety_checker: bool = True
    # The identity adapter for a face reference, loaded at setup: "pulid" (PuLID v1.1) or "faceid".
    identity_adapter: str = PULID
    # An operator's torch.compile cache folder (TORCHINDUCTOR_CACHE_DIR); None: the weights folder's
    # .compile-cache (model/generation/compilation.py).
    compile_cache_dir: Path | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServiceOptions:
        """Read and check every variable of VARIABLES (`environ` defaults to os.environ).

        Raises ConfigurationError naming the first variable with a value the server cannot use.
        """
        environ = os.environ if environ is None else environ
        url = environ.get(WEIGHTS_URL_ENV, "").strip() or None
        return cls(
            weights_dir=weights_dir_from_environment(environ),
            weights_url=url,
            weights_sha256=_sha256(environ) if url else None,
            torch_compile=_switch(
                environ, COMPILE_ENV, COMPILE_SWITCH, "1 or empty to compile (the default), 0 not to"
            ),
            appearance_scale_with_face=_appearance_scale(environ),
            safety_checker=_switch(
                environ, SAFETY_CHECKER_ENV, SAFETY_SWITCH, "on (the default) or off", default="on"
            ),
            identity_adapter=_identity_adapter(environ),
            compile_cache_dir=Path(cache) if (cache := environ.get(INDUCTOR_CACHE_ENV, "").strip()) else None,
        )


# Each variable and the ServiceOptions field it sets.
VARIABLES = {
    WEIGHTS_DIR_ENV: "weights_dir",
    WEIGHTS_URL_ENV: "weights_url",
    WEIGHTS_SHA256_ENV: "weights_sha256",
    COMPILE_ENV: "torch_compile",
    APPEARANCE_WITH_FACE_ENV: "appearance_scale_with_face",
    SAFETY_CHECKER_ENV: "safety_checker",
    IDENTITY_ADAPTER_ENV: "identity_adapter",
    INDUCTOR_CACHE_ENV: "compile_cache_dir",
}


def set_compile_cache_folders(folder: Path) -> None:
    """Point inductor's and Triton's caches into `folder` (its inductor/ and triton/), where torch reads
    them: from the environment, at each compilation. An operator's TRITON_CACHE_DIR is kept."""
    os.environ[INDUCTOR_CACHE_ENV] = str(folder / "inductor")
    os.environ.setdefault(TRITON_CACHE_ENV, str(folder / "triton"))


def weights_dir_from_environment(environ: Mapping[str, str] | None = None) -> Path:
    """WEIGHTS_DIR, else weights/: also the default of the command-line scripts' --weights-dir."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(WEIGHTS_DIR_ENV, "").strip() or DEFAULT_WEIGHTS_DIR)


def _switch(
    environ: Mapping[str, str], name: str, values: Mapping[str, bool], advice: str, default: str = ""
) -> bool:
    """An unknown value is a configuration error, never silently taken as on or off."""
    value = environ.get(name, default).strip().lower()
    if value not in values:
        shown = ", ".join(known or repr(known) for known in values)
        raise ConfigurationError(f"{name}={value!r} is not one of {shown}: set it to {advice}.")
    return values[value]


def _sha256(environ: Mapping[str, str]) -> str:
    digest = environ.get(WEIGHTS_SHA256_ENV, "").strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ConfigurationError(
            f"{WEIGHTS_URL_ENV} is set but {WEIGHTS_SHA256_ENV} is {digest or 'not set'}: set it to the "
            f"64-hex sha256 of the tarball (`sha256sum weights.tar`), so that the weights are verified."
        )
    return digest


def _appearance_scale(environ: Mapping[str, str]) -> float:
    raw = environ.get(APPEARANCE_WITH_FACE_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not 0.0 <= scale <= MAX_APPEARANCE_WITH_FACE:
        raise ConfigurationError(
            f"{APPEARANCE_WITH_FACE_ENV}={raw!r}: set a number from 0 (off) to "
            f"{MAX_APPEARANCE_WITH_FACE}, the appearance adapter's scale beside FaceID"
        )
    return scale


def _identity_adapter(environ: Mapping[str, str]) -> str:
    value = environ.get(IDENTITY_ADAPTER_ENV, "").strip().lower() or PULID
    if value not in IDENTITY_ADAPTERS:
        raise ConfigurationError(
            f"{IDENTITY_ADAPTER_ENV}={value!r} is not one of {', '.join(IDENTITY_ADAPTERS)}: set it to "
            f"{PULID} (PuLID v1.1, the default) or {FACEID} (IP-Adapter FaceID Plus v2)."
        )
    return value
