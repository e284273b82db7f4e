"""PuLID's 512-px face alignment: five landmarks -> the FFHQ-aligned face that BiSeNet and EVA-CLIP read.

Mirrors `FaceRestoreHelper.align_warp_face` of xinntao/facexlib (facexlib/utils/face_restoration_helper.py,
v0.3.0, MIT), as PuLID v1.1 builds it (face_size 512, crop_ratio (1, 1), the 5-point FFHQ template, border
'constant'): a similarity transform fitted to the template by OpenCV's LMEDS estimator, and a warp with the
helper's grey border. Written here, not imported: facexlib imports torchvision at the top, which does not load
beside this torch. One difference, on purpose: facexlib's landmarks come from its own RetinaFace detector
(again torchvision); here they are the SCRFD detector's from antelopev2, the same five points (eye centres,
nose tip, mouth corners) from the detector PuLID already runs for the ID embedding.
"""

from __future__ import annotations

import cv2
import numpy as np

ALIGNED_FACE_SIZE = 512
# facexlib's 5 landmarks of an FFHQ face at 512 x 512: left eye, right eye, nose, left and right mouth corner.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
# facexlib's border value (135, 133, 132) is in BGR order; the images here are RGB.
BORDER_RGB = (132, 133, 135)


def align_face(image_rgb: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_FACE_SIZE) -> np.ndarray:
    """uint8 RGB [H, W, 3] and landmarks [5, 2] (pixels) -> the aligned face, uint8 RGB [size, size, 3].

    Raises ValueError when the landmarks are degenerate (OpenCV finds no transform).
    """
    template = FFHQ_TEMPLATE_512 * (size / ALIGNED_FACE_SIZE)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = cv2.estimateAffinePartial2D(points, template, method=cv2.LMEDS)[0]
    if matrix is None:
        raise ValueError(f"no similarity transform maps the landmarks {points.tolist()} onto the template")
    return cv2.warpAffine(
        np.ascontiguousarray(image_rgb),
        matrix,
        (size, size),
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=BORDER_RGB,
    )
