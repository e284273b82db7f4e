"""The tiny insightface models: a skin-colour SCRFD stand-in and a random-weight ArcFace stand-in.

`write_face_models` writes `det_10g.onnx` and `w600k_r50.onnx` with the input and output signatures of
buffalo_l's real files, so that insightface's own `FaceAnalysis` routes, loads and runs them through its
normal code path (SCRFD decoding, NMS, `norm_crop` alignment, ArcFace embedding). Both graphs are written
with `onnx.helper` from fixed numbers, offline, in milliseconds; nothing is trained.

The detector is a hand-set network, not a learned one: it finds skin-coloured, textured blobs that stand out
from their surroundings (see `build_detector`). It is deterministic and behaves like a detector on photos of
light-to-medium skin in colour; it does not see faces in greyscale images, and it takes other skin-coloured
textured blobs (a ginger cat, a coffee cup) for faces. Production uses the real SCRFD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model.weights.layout import FACE_DETECTOR_FILE, FACE_RECOGNIZER_FILE

# Opset 17 and IR 8 load in every onnxruntime from 1.14 on, older than any GPU image we would build.
OPSET = 17
IR_VERSION = 8

# SCRFD's feature pyramid (det_10g): three strides, two anchors per cell, distances in units of the stride.
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2

# --- Detector constants. Units: the detector sees insightface's blob, (pixel - 127.5) / 128, channels RGB,
# letterboxed into det_size (640 x 640 in FaceAnalyzer), padding black.
# Skin likelihood: a Gaussian in the (Cb, Cr) chroma plane of ITU-R BT.601 YCbCr (8-bit units), where skin of
# every tone clusters (Chai & Ngan, 1999) and lightness does not matter. Centre and spread are those of the
# lit face in skimage's astronaut photo; they reject saturated orange and red (Cr > 170) and neutral greys.
SKIN_CB, SKIN_CR = 110.0, 150.0
SKIN_SIGMA = 9.0
_CB_FROM_RGB = np.array([-0.168736, -0.331264, 0.5])
_CR_FROM_RGB = np.array([0.5, -0.418688, -0.081312])
_Y_FROM_RGB = np.array([0.299, 0.587, 0.114])
# Cell size of the analysis grid: the finest SCRFD stride, so every detection is reported at stride 8.
CELL = STRIDES[0]
# Face window sides in cells (odd, so a window is centred on its cell): 40 px to 520 px at det_size 640,
# about 1.25x apart. A blob is compared with a surround SURROUND times as wide (centre-surround contrast).
WINDOW_SIDES = (5, 7, 9, 11, 13, 17, 21, 27, 33, 41, 51, 65)
SURROUND = 3
# A face has texture (eyes, brows, mouth, hair line); a flat skin-coloured wall or fill does not. The contrast
# is scaled down when the mean in-cell standard deviation of luma is below this (about 2 grey levels).
MIN_TEXTURE = 0.015
# Contrast (skin fraction in the window minus in the surround, 0..1) at which the score crosses 0.5, and the
# slope there. On skimage photos, faces score 0.64-0.78 and skin-free blobs at most 0.32.
CONTRAST_AT_HALF = 0.45
CONTRAST_GAIN = 12.0
# Where the five landmarks sit in a face window: insightface's ArcFace template (112 px crop), centred on
# the window centre at the midpoint between the eyes and the mouth, a window side being FACE_SIDE_IN_TEMPLATE
# template pixels. Measured on skimage's astronaut: her window is 83 px wide, centred 2 px below that
# midpoint, with eyes 42 px apart and 40 px above the mouth (template: 35 and 41 px); 77 px fit her best.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
TEMPLATE_FACE_CENTRE = np.array([56.0, (ARCFACE_TEMPLATE[:2, 1].mean() + ARCFACE_TEMPLATE[3:, 1].mean()) / 2])
FACE_SIDE_IN_TEMPLATE = 77.0

# --- Recognizer constants: ArcFace input 112 x 112, 512-d output; a small conv net of seeded random weights.
RECOGNIZER_SIZE = 112
EMBEDDING_DIM = 512
RECOGNIZER_CHANNELS = (3, 8, 16, 16, 16)
RECOGNIZER_SEED = 600


class _GraphBuilder:
    """Collects nodes and constants; `op` returns the name of the node's single (or first) output."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value, dtype=np.float32, hint: str = "const") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attrs) -> str | list[str]:
        hint = op_type.lower()
        names = [self._name(hint) for _ in range(outputs)] if isinstance(outputs, int) else outputs
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self._name(f"node_{hint}"), **attrs))
        return names[0] if len(names) == 1 else names

    def model(self, graph_name: str, inputs, outputs, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="ideogram-character tiny profile",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def _box_filter_bank(lengths: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Separable centred box-mean kernels, one output channel per length, zero-padded to one odd width."""
    width = max(lengths)
    horizontal = np.zeros((len(lengths), 1, 1, width), np.float32)
    for channel, length in enumerate(lengths):
        start = (width - length) // 2
        horizontal[channel, 0, 0, start : start + length] = 1.0 / length
    vertical = horizontal.transpose(0, 1, 3, 2).copy()
    return horizontal, vertical, width


def build_detector() -> onnx.ModelProto:
    """SCRFD-signature detector: skin-colour centre-surround blobs with texture, at one scale per blob.

    Per pixel: skin likelihood from chroma, and luma. Per 8x8 cell: mean skin, luma texture (std). For every
    window side k and every cell: contrast_k = skin fraction in the k-window minus skin fraction in its
    surround (a ring SURROUND times as wide), times min(1, texture / MIN_TEXTURE). Each cell keeps its best
    side; a cell is a detection only if no cell with a higher contrast has a box that covers it (so one blob
    fires once, and a face's cheek cannot fire inside the face's box). Score = sigmoid(gain * (contrast -
    threshold)). Only the stride-8 head fires; strides 16 and 32 report zero scores with the right shapes.
    """
    g = _GraphBuilder("det_")
    image = "input.1"

    # Chroma distances from the skin centre (in skin sigmas) and luma, all from one 1x1 convolution. The blob
    # is (v - 127.5) / 128 per channel, so Cb - 128 = 128 * (CB_FROM_RGB . blob) (the coefficients sum to 0).
    colour_weight = np.stack(
        [128.0 * _CB_FROM_RGB / SKIN_SIGMA, 128.0 * _CR_FROM_RGB / SKIN_SIGMA, _Y_FROM_RGB]
    ).reshape(3, 3, 1, 1)
    colour_bias = np.array([(128.0 - SKIN_CB) / SKIN_SIGMA, (128.0 - SKIN_CR) / SKIN_SIGMA, 0.0])
    colour = g.op("Conv", [image, g.const(colour_weight), g.const(colour_bias)])
    chroma, luma = g.op("Split", [colour, g.const([2, 1], np.int64)], outputs=2, axis=1)
    squared_distance = g.op("Conv", [g.op("Mul", [chroma, chroma]), g.const(np.full((1, 2, 1, 1), -0.5))])
    skin = g.op("Exp", [squared_distance])

    # Per-cell means of skin, luma and luma squared -> texture (in-cell luma standard deviation).
    per_pixel = g.op("Concat", [skin, luma, g.op("Mul", [luma, luma])], axis=1)
    cells = g.op("AveragePool", [per_pixel], kernel_shape=[CELL, CELL], strides=[CELL, CELL])
    skin_cells, luma_mean, luma_square_mean = g.op("Split", [cells, g.const([1, 1, 1], np.int64)], 3, axis=1)
    variance = g.op("Sub", [luma_square_mean, g.op("Mul", [luma_mean, luma_mean])])
    texture = g.op("Sqrt", [g.op("Relu", [variance])])

    # All window means in two separable convolutions (zero padding: outside the image counts as not skin).
    sides = list(WINDOW_SIDES)
    surrounds = [SURROUND * side for side in sides]
    count = len(sides)
    horizontal, vertical, width = _box_filter_bank(sides + surrounds + sides)
    half = width // 2
    bank_input = g.op("Concat", [skin_cells, skin_cells, texture], axis=1)
    rows = g.op("Conv", [bank_input, g.const(horizontal)], group=3, pads=[0, half, 0, half])
    means = g.op("Conv", [rows, g.const(vertical)], group=3 * count, pads=[half, 0, half, 0])
    inner, outer, window_texture = g.op("Split", [means, g.const([count] * 3, np.int64)], 3, axis=1)

    # Skin in the window minus skin in the ring around it: inner - ring = s^2 / (s^2 - k^2) * (inner - outer).
    ring_factor = [s * s / (s * s - k * k) for k, s in zip(sides, surrounds, strict=True)]
    ring_factor = np.array(ring_factor).reshape(1, count, 1, 1)
    contrast = g.op("Mul", [g.op("Sub", [inner, outer]), g.const(ring_factor)])
    texture_gate = g.op(
        "Min", [g.op("Mul", [window_texture, g.const(1.0 / MIN_TEXTURE)]), g.const(np.ones((1, 1, 1, 1)))]
    )
    contrast = g.op("Mul", [contrast, texture_gate])
    best = g.op("ReduceMax", [contrast], axes=[1], keepdims=1)
    best_side = g.op("ArgMax", [contrast], axis=1, keepdims=1)

    # Suppression inside the graph: for every side k, the strongest contrast among cells that chose k and
    # whose k-box covers this cell (a max-pool of side k over those cells); a cell survives if none is higher.
    chose = g.op("Equal", [best_side, g.const(np.arange(count).reshape(1, count, 1, 1), np.int64)])
    by_side = g.op("Where", [chose, best, g.const(np.full((1, 1, 1, 1), -1e4))])
    covering = []
    per_side = g.op("Split", [by_side, g.const([1] * count, np.int64)], count, axis=1)
    for channel, side in zip(per_side, sides, strict=True):
        pad = side // 2
        along_rows = g.op("MaxPool", [channel], kernel_shape=[1, side], pads=[0, pad, 0, pad])
        covering.append(g.op("MaxPool", [along_rows], kernel_shape=[side, 1], pads=[pad, 0, pad, 0]))
    strongest_cover = g.op("ReduceMax", [g.op("Concat", covering, axis=1)], axes=[1], keepdims=1)
    survives = g.op("Cast", [g.op("GreaterOrEqual", [best, strongest_cover])], to=TensorProto.FLOAT)
    logit = g.op("Mul", [g.op("Sub", [best, g.const(CONTRAST_AT_HALF)]), g.const(CONTRAST_GAIN)])
    score = g.op("Mul", [g.op("Sigmoid", [logit]), survives])

    # Box and landmarks from the chosen side, as distances from the anchor point (the cell's top-left corner,
    # in strides); the window is centred half a cell right of and below the anchor.
    side_cells = g.op("Gather", [g.const(np.array(sides, np.float32)), best_side], axis=0)
    flat_side = g.op("Reshape", [side_cells, g.const([-1, 1], np.int64)])
    box = g.op(
        "Add",
        [
            g.op("MatMul", [flat_side, g.const(np.full((1, 4), 0.5))]),
            g.const(np.array([[-0.5, -0.5, 0.5, 0.5]])),
        ],
    )
    landmark_per_side = ((ARCFACE_TEMPLATE - TEMPLATE_FACE_CENTRE) / FACE_SIDE_IN_TEMPLATE).reshape(1, 10)
    landmarks = g.op(
        "Add", [g.op("MatMul", [flat_side, g.const(landmark_per_side)]), g.const(np.full((1, 10), 0.5))]
    )
    flat_score = g.op("Reshape", [score, g.const([-1, 1], np.int64)])

    def per_anchor(values: str, columns: int, first_anchor_only: bool) -> str:
        # insightface lists the anchors of a cell consecutively; the second anchor never fires.
        second = g.op("Mul", [values, g.const(0.0)]) if first_anchor_only else values
        both = g.op("Concat", [values, second], axis=1)
        return g.op("Reshape", [both, g.const([-1, columns], np.int64)])

    heads = {
        "score": [per_anchor(flat_score, 1, True)],
        "bbox": [per_anchor(box, 4, False)],
        "kps": [per_anchor(landmarks, 10, False)],
    }
    # Strides 16 and 32: empty heads of the right size (their grids are the stride-8 grid halved, floor).
    grid = score
    for _ in STRIDES[1:]:
        grid = g.op("MaxPool", [grid], kernel_shape=[2, 2], strides=[2, 2])
        zeros = g.op("Reshape", [g.op("Mul", [grid, g.const(0.0)]), g.const([-1, 1], np.int64)])
        for head, columns in (("score", 1), ("bbox", 4), ("kps", 10)):
            expand = g.const(np.ones((1, ANCHORS_PER_CELL * columns)))
            heads[head].append(
                g.op("Reshape", [g.op("MatMul", [zeros, expand]), g.const([-1, columns], np.int64)])
            )

    # SCRFD's output order: scores 8/16/32, boxes 8/16/32, landmarks 8/16/32.
    outputs = []
    for head, columns in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride, tensor in zip(STRIDES, heads[head], strict=True):
            name = f"{head}_{stride}"
            g.nodes.append(helper.make_node("Identity", [tensor], [name], name=f"det_out_{name}"))
            outputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"anchors_{stride}", columns])
            )
    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, [1, 3, "height", "width"])]
    return g.model("tiny_scrfd", inputs, outputs, "Tiny SCRFD stand-in: skin-colour blob detector.")


def build_recognizer(seed: int = RECOGNIZER_SEED) -> onnx.ModelProto:
    """ArcFace-signature recognizer: four stride-2 conv + PReLU layers, pooling, a linear 512-d head.

    Node names avoid the "Sub"/"Mul" prefixes that make insightface treat a model as an MXNet export with
    in-graph normalisation; like the real w600k_r50 it expects insightface's (pixel - 127.5) / 127.5 input.
    """
    rng = np.random.RandomState(seed)
    g = _GraphBuilder("rec_")
    tensor = "input.1"
    size = RECOGNIZER_SIZE
    for in_channels, out_channels in zip(RECOGNIZER_CHANNELS[:-1], RECOGNIZER_CHANNELS[1:], strict=True):
        # He initialisation keeps activations at a similar scale through the layers.
        weight = rng.normal(0.0, np.sqrt(2.0 / (in_channels * 9)), (out_channels, in_channels, 3, 3))
        bias = rng.normal(0.0, 0.1, out_channels)
        tensor = g.op("Conv", [tensor, g.const(weight), g.const(bias)], pads=[1, 1, 1, 1], strides=[2, 2])
        tensor = g.op("PRelu", [tensor, g.const(np.full((out_channels, 1, 1), 0.25))])
        size //= 2
    # Average 3x3 neighbourhoods (7x7 -> 3x3) so that an alignment off by a few pixels, as the tiny detector's
    # 8-pixel grid gives, moves the embedding only a little, as it would with the real ArcFace.
    tensor = g.op("AveragePool", [tensor], kernel_shape=[3, 3], strides=[2, 2])
    size = (size - 3) // 2 + 1
    features = RECOGNIZER_CHANNELS[-1] * size * size
    flat = g.op("Flatten", [tensor], axis=1)
    projection = rng.normal(0.0, 1.0 / np.sqrt(features), (features, EMBEDDING_DIM))
    embedding = g.op("Gemm", [flat, g.const(projection), g.const(np.zeros(EMBEDDING_DIM))])
    g.nodes.append(helper.make_node("Identity", [embedding], ["embedding"], name="rec_out_embedding"))
    square = [RECOGNIZER_SIZE, RECOGNIZER_SIZE]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, *square])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["None", EMBEDDING_DIM])]
    return g.model("tiny_arcface", inputs, outputs, "Tiny ArcFace stand-in: random conv features, 512-d.")


def write_face_models(folder: Path) -> list[Path]:
    """Write det_10g.onnx and w600k_r50.onnx into `folder` (created if needed); return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, build in ((FACE_DETECTOR_FILE, build_detector), (FACE_RECOGNIZER_FILE, build_recognizer)):
        path = folder / file_name
        onnx.save_model(build(), str(path))
        written.append(path)
    return written
