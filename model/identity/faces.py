"""The identity stage: a reference image -> the largest face's ArcFace embedding and its aligned crop.

FaceAnalyzer wraps insightface's FaceAnalysis (SCRFD detector + ArcFace recognizer of buffalo_l, or their tiny
stand-ins: same files, same code path). insightface works on BGR numpy arrays, as OpenCV does; this module
takes and returns RGB PIL images and does the conversion in one place (`_bgr`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from google.protobuf.message import DecodeError
from insightface.app import FaceAnalysis
from insightface.app.common import Face
from insightface.utils import face_align
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from PIL import Image

from model.errors import InputError, WeightsError
from model.weights.checks import require_file
from model.weights.layout import FACE_DETECTOR_FILE, FACE_RECOGNIZER_FILE

log = logging.getLogger(__name__)

# The detector's working size, as in insightface's buffalo_l examples and IP-Adapter FaceID's preprocessing.
DETECTION_SIZE = (640, 640)
# SCRFD's own default: a detection below this score is not a face.
DETECTION_THRESHOLD = 0.5
# Below this width ArcFace has too few pixels for a usable identity (its input is 112 px for the whole face).
MIN_FACE_PIXELS = 40
# IP-Adapter FaceID Plus v2 feeds the CLIP image encoder the face aligned to insightface's template at 224 px.
FACE_CROP_SIZE = 224
EMBEDDING_DIM = 512
_CORRUPT_MODEL_ERRORS = (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, DecodeError)


# eq=False: field-wise == on numpy arrays is ambiguous; an Identity compares by object.
@dataclass(frozen=True, eq=False)
class Identity:
    """The largest face of the reference image."""

    embedding: np.ndarray  # (512,) float32, L2-normalised ArcFace embedding (insightface's normed_embedding)
    face_crop: Image.Image  # 224 x 224 RGB, aligned like ArcFace's crop, for the CLIP image encoder
    faces_found: int
    face_box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the reference image's pixels
    # The detector's five landmarks (eyes, nose, mouth corners), [5, 2] in the reference image's pixels.
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class NoUsableFace:
    """Why a reference gives no face identity: no face at all, or a face too small for ArcFace."""

    reason: str  # one sentence naming the input, without advice (the caller knows what happens next)
    faces_found: int


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two embeddings (1 = same direction); 0 if either is all zeros."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms > 0 else 0.0


CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def execution_providers(available: Sequence[str] | None = None) -> tuple[list[str], int]:
    """onnxruntime providers, in order of preference, and insightface's ctx_id.

    CUDA first when this onnxruntime has it (the onnxruntime-gpu wheel of the Cog image), with the CPU as
    the fallback; the CPU alone otherwise (the onnxruntime wheel of the tests). `available` defaults to
    onnxruntime.get_available_providers().
    """
    available = onnxruntime.get_available_providers() if available is None else available
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER], 0
    # ctx_id -1 makes insightface pin its sessions to the CPU provider.
    return [CPU_PROVIDER], -1


# The CUDA provider's options for the face models. cuDNN's convolution algorithm by its heuristic, not by
# onnxruntime's default EXHAUSTIVE search, which benchmarks every algorithm on the first run of each input
# shape (a first request would pay it, and the search needs workspace memory beside the diffusion models);
# the heuristic's pick is what cuDNN recommends for the shape. The memory arena grown by what is asked,
# not to the next power of two, which can double a large allocation on a GPU the UNet shares.
CUDA_PROVIDER_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}


def provider_options(providers: Sequence[str]) -> list[dict[str, str]]:
    """onnxruntime's provider_options for `providers`, one dict each: CUDA_PROVIDER_OPTIONS for the CUDA
    provider, the defaults ({}) for the others."""
    return [dict(CUDA_PROVIDER_OPTIONS) if provider == CUDA_PROVIDER else {} for provider in providers]


def session_provider(app: FaceAnalysis) -> str:
    """The provider the face models' sessions actually run on: onnxruntime falls back to the CPU alone
    (with a warning) when the CUDA provider is listed but cannot start, e.g. without the CUDA libraries."""
    used = {model.session.get_providers()[0] for model in app.models.values()}
    return " and ".join(sorted(used))


class FaceAnalyzer:
    """Loads the face models once; finds, embeds and crops faces of RGB PIL images."""

    cosine_similarity = staticmethod(cosine_similarity)

    def __init__(
        self,
        model_dir: Path,
        detector_file: str = FACE_DETECTOR_FILE,
        recognizer_file: str = FACE_RECOGNIZER_FILE,
    ):
        """Load a folder's SCRFD detector and ArcFace recognizer: buffalo_l's by default, antelopev2's for
        PuLID (model/identity/pulid/extraction.py)."""
        model_dir = Path(model_dir)
        for file_name in (detector_file, recognizer_file):
            require_file(model_dir / file_name, "Face model")
        providers, ctx_id = execution_providers()
        try:
            # A directory name makes FaceAnalysis load every *.onnx in it, never download anything.
            # provider_options reaches every onnxruntime.InferenceSession it makes (model_zoo's
            # ModelRouter passes its keyword arguments on; SCRFD's extra sessions copy the main one's).
            app = FaceAnalysis(
                name=str(model_dir),
                allowed_modules=["detection", "recognition"],
                providers=providers,
                provider_options=provider_options(providers),
            )
        except AssertionError as error:
            # FaceAnalysis asserts that some file was routed to detection (by its outputs, as SCRFD).
            raise WeightsError(
                f"{model_dir / detector_file} is not an insightface detection model (SCRFD)"
            ) from error
        except _CORRUPT_MODEL_ERRORS as error:
            raise WeightsError(
                f"A face model in {model_dir} is corrupt ({error}): "
                "delete it and run scripts/download_weights.py"
            ) from error
        # FaceAnalysis routes files by their signatures, not their names; make sure both roles were filled.
        for task, file_name in (("detection", detector_file), ("recognition", recognizer_file)):
            if task not in app.models:
                raise WeightsError(f"{model_dir / file_name} is not an insightface {task} model")
        app.prepare(ctx_id=ctx_id, det_thresh=DETECTION_THRESHOLD, det_size=DETECTION_SIZE)
        self._app = app
        self.provider = session_provider(app)
        log.info("Face analysis runs on %s (asked for %s)", self.provider, ", ".join(providers))

    def find_identity(
        self, image: Image.Image, input_name: str = "character_reference_image"
    ) -> Identity | NoUsableFace:
        """The identity of the largest face, or why there is none that FaceID can use."""
        bgr = _bgr(image)
        faces = self._app.get(bgr)
        if not faces:
            return NoUsableFace(f"No human face found in {input_name}", faces_found=0)
        face = max(faces, key=_box_area)
        if len(faces) > 1:
            log.info("Found %d faces in %s; using the largest", len(faces), input_name)
        face_width = float(face.bbox[2] - face.bbox[0])
        if face_width < MIN_FACE_PIXELS:
            return NoUsableFace(
                f"The largest face in {input_name} is only {face_width:.0f} pixels wide "
                f"(a face identity needs at least {MIN_FACE_PIXELS})",
                faces_found=len(faces),
            )
        crop_bgr = face_align.norm_crop(bgr, landmark=face.kps, image_size=FACE_CROP_SIZE)
        return Identity(
            embedding=_embedding(face),
            face_crop=Image.fromarray(np.ascontiguousarray(crop_bgr[:, :, ::-1])),
            faces_found=len(faces),
            face_box=tuple(float(value) for value in face.bbox[:4]),
            landmarks=np.asarray(face.kps, dtype=np.float32),
        )

    def largest_face(self, image: Image.Image) -> Face | None:
        """insightface's Face of the largest detected face (bbox, kps, raw `embedding`), or None."""
        faces = self._app.get(_bgr(image))
        return max(faces, key=_box_area) if faces else None

    def face_at(self, image: Image.Image, landmarks: np.ndarray) -> Face:
        """A Face at given five landmarks, embedded by this folder's recognizer (ArcFace's own 112-px
        alignment on them): for when another detector found the face."""
        face = Face(kps=np.asarray(landmarks, dtype=np.float32))
        self._app.models["recognition"].get(_bgr(image), face)
        return face

    def analyze(self, image: Image.Image, input_name: str = "character_reference_image") -> Identity:
        """The identity of the largest face; InputError naming `input_name` when there is no usable face."""
        found = self.find_identity(image, input_name)
        if isinstance(found, NoUsableFace):
            raise InputError(
                f"{found.reason}: use a clear, front-facing photo of one person in which the face is at "
                f"least {MIN_FACE_PIXELS} pixels wide"
            )
        return found

    def embed_largest_face(self, image: Image.Image) -> np.ndarray | None:
        """The normalised embedding of the largest face of an image (e.g. an output); None if it has none."""
        faces = self._app.get(_bgr(image))
        if not faces:
            return None
        return _embedding(max(faces, key=_box_area))


def _bgr(image: Image.Image) -> np.ndarray:
    """RGB PIL image -> contiguous uint8 BGR array, the layout insightface and OpenCV expect."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _box_area(face) -> float:
    x1, y1, x2, y2 = face.bbox[:4]
    return float((x2 - x1) * (y2 - y1))


def _embedding(face) -> np.ndarray:
    # IP-Adapter FaceID was trained on normed_embedding (insightface's Face property: embedding / its norm).
    embedding = np.asarray(face.normed_embedding, dtype=np.float32)
    if embedding.shape != (EMBEDDING_DIM,):
        raise WeightsError(f"The face recognizer gave an embedding of shape {embedding.shape}, not (512,)")
    return embedding
