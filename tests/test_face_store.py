"""Saved faces: bit-exact safetensors round trip; altered or foreign files refused with a clear message."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from instantid import face_store
from instantid.faces import FaceRecord, Faces


def _faces() -> Faces:
    rng = np.random.default_rng(3)

    def record(w: int, h: int) -> FaceRecord:
        return FaceRecord(
            bbox=rng.uniform(0, 500, 4).astype(np.float32),
            keypoints=rng.uniform(0, 500, (5, 2)).astype(np.float32),
            embedding=(rng.standard_normal(512) * 20).astype(np.float32),
            score=float(rng.uniform(0.5, 1.0)),
            source_size=(w, h),
        )

    return Faces(
        frames=(record(640, 480), None, record(1024, 1536)),
        model_pack="antelopev2",
        weights=(1.0, 0.5, 2.0),
        no_face_policy="skip",
        notes=("frame 2: no face found; slot left empty (skip)",),
    )


def test_round_trip_is_bit_exact(tmp_path):
    faces = _faces()
    path = face_store.save_faces(faces, tmp_path / "person")
    assert path.name == "person.safetensors"
    loaded = face_store.load_faces(path)
    assert loaded.frames[1] is None and len(loaded) == 3
    for a, b in ((faces.frames[0], loaded.frames[0]), (faces.frames[2], loaded.frames[2])):
        for name in ("bbox", "keypoints", "embedding"):
            got, want = getattr(b, name), getattr(a, name)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        assert b.score == a.score and b.source_size == a.source_size
    assert (loaded.model_pack, loaded.weights, loaded.no_face_policy, loaded.notes) == (
        faces.model_pack,
        faces.weights,
        faces.no_face_policy,
        faces.notes,
    )


def _rewrite(path, edit_arrays=None, edit_metadata=None):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata())
    arrays = load_file(str(path))
    if edit_arrays:
        edit_arrays(arrays)
    if edit_metadata:
        edit_metadata(metadata)
    save_file(arrays, str(path), metadata=metadata)


def test_edited_values_are_refused(tmp_path):
    path = face_store.save_faces(_faces(), tmp_path / "f.safetensors")

    def nudge(arrays):
        arrays["embedding"][0, 7] += 0.001

    _rewrite(path, edit_arrays=nudge)
    with pytest.raises(face_store.FaceFileError, match="checksum") as err:
        face_store.load_faces(path)
    assert str(path) in str(err.value)


def test_wrong_shapes_are_refused_even_with_a_matching_checksum(tmp_path):
    path = face_store.save_faces(_faces(), tmp_path / "f.safetensors")

    def shrink(arrays):
        arrays["embedding"] = np.ascontiguousarray(arrays["embedding"][:, :256])

    def rehash(metadata):
        metadata["sha256"] = face_store._checksum(load_file(str(path)) | {"embedding": shrunk["embedding"]})

    shrunk = load_file(str(path))
    shrink(shrunk)
    _rewrite(path, edit_arrays=shrink, edit_metadata=rehash)
    with pytest.raises(face_store.FaceFileError, match=r"tensor 'embedding' is float32\[3, 256\], expected float32\[3, 512\]"):
        face_store.load_faces(path)


def test_other_safetensors_files_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"weight": np.zeros((4, 4), np.float32)}, str(path), metadata={"format": "pt"})
    with pytest.raises(face_store.FaceFileError, match="expected 'instantid-faces'"):
        face_store.load_faces(path)


def test_metadata_edits_are_refused(tmp_path):
    path = face_store.save_faces(_faces(), tmp_path / "f.safetensors")
    _rewrite(path, edit_metadata=lambda m: m.update(frame_count="2"))
    with pytest.raises(face_store.FaceFileError, match="expected float32"):
        face_store.load_faces(path)
    path = face_store.save_faces(_faces(), tmp_path / "g.safetensors")
    _rewrite(path, edit_metadata=lambda m: m.update(format_version="9"))
    with pytest.raises(face_store.FaceFileError, match="version '9' is not supported"):
        face_store.load_faces(path)


def test_pickles_and_garbage_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(face_store.FaceFileError, match="cannot be read as safetensors"):
        face_store.load_faces(path)
    with pytest.raises(face_store.FaceFileError, match="does not exist"):
        face_store.load_faces(tmp_path / "nope.safetensors")


def test_saved_faces_folder_is_registered():
    import os

    import folder_paths

    assert os.path.join(folder_paths.models_dir, "instantid_faces") in folder_paths.get_folder_paths("instantid_faces")
