"""Reusable face-analysis fixtures: a synthetic insightface pack, painted faces, a ready analyzer.

Use from any test module::

    from face_fixtures import face_analyzer, painted_faces  # noqa: F401  (pytest fixtures)

    def test_something(painted_faces, face_analyzer):
        image, faces = painted_faces          # IMAGE [1,512,512,3], FACES with one face
        ...

A painted face is a rectangle of marker colour that the synthetic detector
(tests/onnx_fixtures.py) finds exactly: its box is the rectangle, its
keypoints fixed fractions of it, its score ``0.95 - green/255``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_fixtures import KEYPOINT_FRACTIONS, build_detector, build_recognizer

BACKGROUND = 0.15  # grey, far from the marker colour


def build_model_pack(root: Path, pack: str = "antelopev2", nested: bool = False) -> Path:
    """Write a synthetic pack under an insightface root; returns the folder holding the .onnx files.

    Classic layout ``<root>/models/<pack>/``; ``nested`` gives the public zip's
    ``<root>/models/<pack>/<pack>/``. File names are antelopev2's.
    """
    folder = Path(root) / "models" / pack
    if nested:
        folder = folder / pack
    build_detector(folder / "scrfd_10g_bnkps.onnx")
    build_recognizer(folder / "glintr100.onnx")
    return folder


def register_insightface_root(root: Path) -> None:
    """Add ``root`` to ComfyUI's ``insightface`` folder, as an extra_model_paths.yaml entry would."""
    import folder_paths

    folder_paths.add_model_folder_path("insightface", str(root))


def blank_images(height: int = 512, width: int = 512, batch: int = 1, channels: int = 3) -> torch.Tensor:
    """A grey ComfyUI IMAGE ``[B,H,W,C]``."""
    return torch.full((batch, height, width, channels), BACKGROUND, dtype=torch.float32)


def paint_face(
    images: torch.Tensor,
    x: int,
    y: int,
    w: int,
    h: int,
    frame: int = 0,
    green: int = 0,
    red: int = 255,
    blue: int = 255,
) -> torch.Tensor:
    """Paint a face rectangle (pixels) into ``images[frame]`` in place; returns ``images``.

    green sets the detection score (0.95 - green/255); red and blue (200..255)
    change the identity embedding without changing detection.
    """
    colour = torch.tensor([red, green, blue], dtype=torch.float32) / 255.0
    channels = images.shape[-1]
    if channels == 1:
        raise ValueError("paint faces in RGB, then convert to grayscale (the marker is a colour)")
    images[frame, y : y + h, x : x + w, :3] = colour
    if channels == 4:
        images[frame, y : y + h, x : x + w, 3] = 1.0
    return images


def expected_keypoints(x: float, y: float, w: float, h: float) -> np.ndarray:
    """Keypoints ``[5,2]`` the synthetic detector reports for a face painted at (x, y, w, h)."""
    return np.array([x, y], dtype=np.float32) + KEYPOINT_FRACTIONS * np.array([w, h], dtype=np.float32)


@pytest.fixture(scope="session")
def face_pack_root(tmp_path_factory) -> Path:
    """An insightface root with a synthetic ``antelopev2``, registered with ComfyUI."""
    root = tmp_path_factory.mktemp("insightface")
    build_model_pack(root)
    register_insightface_root(root)
    return root


@pytest.fixture(scope="session")
def face_analyzer(face_pack_root):
    """A FaceAnalyzer (CPU, det size 640) over the synthetic pack."""
    from instantid import face_models

    return face_models.load_analyzer("antelopev2", "CPU", 640, roots=[face_pack_root])


@pytest.fixture
def painted_faces(face_analyzer):
    """(IMAGE ``[1,512,512,3]`` with one face at x=200, y=150, 64x80 px; its FACES value)."""
    from instantid import face_analysis

    image = paint_face(blank_images(), 200, 150, 64, 80)
    faces, _ = face_analysis.analyze(image, face_analyzer)
    return image, faces
