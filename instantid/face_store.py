"""Saved faces: a FACES value as a safetensors file (never a pickle).

Folder: ``instantid_faces``, default ``<ComfyUI>/models/instantid_faces``
(add more via ``instantid_faces:`` in ``extra_model_paths.yaml``). It is a
sibling of the adapter's ``instantid`` folder, not inside it, so saved faces
never show up in the adapter file list.

File layout (all arrays have the frame count ``N`` first; empty slots are
zero rows with ``present = 0``):

- ``bbox`` float32 ``[N,4]``, ``keypoints`` float32 ``[N,5,2]``,
  ``embedding`` float32 ``[N,512]``, ``score`` float64 ``[N]``,
  ``source_size`` int64 ``[N,2]`` (w, h), ``present`` uint8 ``[N]``.
- metadata (strings): ``format`` = ``instantid-faces``, ``format_version``,
  ``model_pack``, ``frame_count``, ``no_face_policy``, ``weights`` (JSON or
  empty), ``notes`` (JSON), ``source_sizes`` (JSON, for people reading the
  header), ``sha256`` of the tensor bytes (catches edited values).

Loading imports neither insightface nor onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import InstantIDError
from .faces import EMBEDDING_DIM, NUM_KEYPOINTS, FaceRecord, Faces
from .paths import register_folder as _register_model_folder

FOLDER_NAME = "instantid_faces"
FORMAT = "instantid-faces"
FORMAT_VERSION = "1"
EXTENSION = ".safetensors"
_SHAPES = {
    "bbox": ((4,), np.float32),
    "keypoints": ((NUM_KEYPOINTS, 2), np.float32),
    "embedding": ((EMBEDDING_DIM,), np.float32),
    "score": ((), np.float64),
    "source_size": ((2,), np.int64),
    "present": ((), np.uint8),
}


class FaceFileError(InstantIDError, ValueError):
    """A saved-face file is missing, not a saved-face file, or was altered."""


def register_folder() -> None:
    """Register ``instantid_faces`` (default ``models/instantid_faces``), keeping user entries."""
    _register_model_folder(FOLDER_NAME, FOLDER_NAME, {EXTENSION})


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def faces_to_arrays(faces: Faces) -> dict[str, np.ndarray]:
    """The tensors of the file format (see the module docstring)."""
    n = len(faces.frames)
    arrays = {name: np.zeros((n, *shape), dtype=dtype) for name, (shape, dtype) in _SHAPES.items()}
    for i, record in enumerate(faces.frames):
        if record is None:
            continue
        arrays["bbox"][i] = np.asarray(record.bbox, dtype=np.float32).reshape(4)
        arrays["keypoints"][i] = np.asarray(record.keypoints, dtype=np.float32).reshape(NUM_KEYPOINTS, 2)
        arrays["embedding"][i] = np.asarray(record.embedding, dtype=np.float32).reshape(EMBEDDING_DIM)
        arrays["score"][i] = float(record.score)
        arrays["source_size"][i] = [int(v) for v in record.source_size]
        arrays["present"][i] = 1
    return arrays


def save_faces(faces: Faces, path: str | os.PathLike) -> Path:
    """Write ``faces`` to ``path`` (``.safetensors``); returns the path written."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != EXTENSION:
        path = path.with_name(path.name + EXTENSION)
    arrays = faces_to_arrays(faces)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_pack": faces.model_pack,
        "frame_count": str(len(faces.frames)),
        "no_face_policy": faces.no_face_policy,
        "weights": "" if faces.weights is None else json.dumps([float(w) for w in faces.weights]),
        "notes": json.dumps(list(faces.notes)),
        "source_sizes": json.dumps([None if r is None else list(r.source_size) for r in faces.frames]),
        "sha256": _checksum(arrays),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(path), metadata=metadata)
    return path


def load_faces(path: str | os.PathLike) -> Faces:
    """Read a file written by :func:`save_faces`; raise :class:`FaceFileError` naming what is wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FaceFileError(f"saved-face file {path} does not exist. Save one with the InstantID Save Face node.")

    def refuse(problem: str) -> FaceFileError:
        return FaceFileError(
            f"{path} is not a usable InstantID saved-face file: {problem}. Save the face again with the "
            "InstantID Save Face node; files are checked because they are shared between people."
        )

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise refuse(f"it cannot be read as safetensors ({exc})") from exc

    if metadata.get("format") != FORMAT:
        raise refuse(f"metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise refuse(f"format version {metadata.get('format_version')!r} is not supported (this pack reads {FORMAT_VERSION!r})")
    if set(arrays) != set(_SHAPES):
        raise refuse(f"tensors {sorted(arrays)} found, expected {sorted(_SHAPES)}")
    try:
        n = int(metadata.get("frame_count", ""))
    except ValueError as exc:
        raise refuse(f"frame_count {metadata.get('frame_count')!r} is not a number") from exc
    for name, (shape, dtype) in _SHAPES.items():
        array = arrays[name]
        if array.shape != (n, *shape) or array.dtype != dtype:
            raise refuse(f"tensor '{name}' is {array.dtype}{list(array.shape)}, expected {np.dtype(dtype)}{[n, *shape]}")
    if _checksum(arrays) != metadata.get("sha256"):
        raise refuse("its tensors do not match the checksum stored with them (the values were edited)")
    weights = None
    try:
        if metadata.get("weights"):
            weights = tuple(float(w) for w in json.loads(metadata["weights"]))
        notes = tuple(str(x) for x in json.loads(metadata.get("notes", "[]")))
    except (ValueError, TypeError) as exc:
        raise refuse(f"metadata weights/notes are not valid JSON ({exc})") from exc
    if metadata.get("no_face_policy", "error") not in ("error", "skip", "pass_through"):
        raise refuse(f"no_face_policy {metadata.get('no_face_policy')!r} is not one of error, skip, pass_through")
    if weights is not None and len(weights) != n:
        raise refuse(f"{len(weights)} weights stored for {n} frames")
    if not np.isin(arrays["present"], (0, 1)).all():
        raise refuse("tensor 'present' holds values other than 0 and 1")

    frames: list[FaceRecord | None] = []
    for i in range(n):
        if not arrays["present"][i]:
            frames.append(None)
            continue
        frames.append(
            FaceRecord(
                bbox=arrays["bbox"][i].copy(),
                keypoints=arrays["keypoints"][i].copy(),
                embedding=arrays["embedding"][i].copy(),
                score=float(arrays["score"][i]),
                source_size=(
                    int(arrays["source_size"][i][0]),
                    int(arrays["source_size"][i][1]),
                ),
            )
        )
    return Faces(
        frames=tuple(frames),
        model_pack=metadata.get("model_pack", ""),
        weights=weights,
        no_face_policy=metadata.get("no_face_policy", "error"),
        notes=notes,
    )
