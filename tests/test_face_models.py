"""insightface model packs through ComfyUI's folder system: layouts, missing files, providers, missing insightface."""
# ruff: noqa: F811  (pytest fixtures imported from face_fixtures are redefined as arguments)

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import folder_paths
import pytest
from face_fixtures import (  # noqa: F401
    blank_images,
    build_model_pack,
    face_analyzer,
    face_pack_root,
    paint_face,
    register_insightface_root,
)

import nodes as comfy_nodes
from instantid import face_analysis, face_models

PACK_DIR = Path(__file__).resolve().parent.parent


def test_folder_registration_keeps_user_entries(monkeypatch):
    user = "/somewhere/users/insightface"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([user], set()))
    face_models.register_folder()
    paths, extensions = folder_paths.folder_names_and_paths["insightface"]
    assert paths == [user, os.path.join(folder_paths.models_dir, "insightface")]
    assert ".onnx" in extensions


def test_default_folder_registered_when_pack_loads():
    assert os.path.join(folder_paths.models_dir, "insightface") in folder_paths.get_folder_paths("insightface")


def test_pack_found_through_registered_extra_path(tmp_path):
    build_model_pack(tmp_path, pack="extra_pack")
    register_insightface_root(tmp_path)  # what an `insightface:` entry in extra_model_paths.yaml does
    assert str(tmp_path) in folder_paths.get_folder_paths("insightface")
    assert face_models.find_packs()["extra_pack"] == tmp_path / "models" / "extra_pack"
    loader = comfy_nodes.NODE_CLASS_MAPPINGS["InstantIDFaceAnalyzerLoader"]
    assert "extra_pack" in loader.define_schema().inputs[0].options


def test_nested_zip_layout_is_used(tmp_path):
    folder = build_model_pack(tmp_path, nested=True)
    location = face_models.locate_pack("antelopev2", [tmp_path])
    assert location.folder == folder and location.nested
    assert face_models.find_packs([tmp_path]) == {"antelopev2": folder}
    analyzer = face_models.load_analyzer("antelopev2", roots=[tmp_path])
    bgr = face_analysis.rgb_to_bgr(face_analysis.image_to_rgb_uint8(paint_face(blank_images(), 200, 150, 64, 80)[0]))
    assert len(analyzer.detect(bgr)) == 1


def test_incomplete_pack_names_each_missing_file_and_folder(tmp_path):
    folder = tmp_path / "models" / "antelopev2"
    folder.mkdir(parents=True)
    (folder / "1k3d68.onnx").write_bytes(b"not needed")
    with pytest.raises(face_models.FaceModelsError) as err:
        face_models.load_analyzer("antelopev2", roots=[tmp_path])
    message = str(err.value)
    assert "scrfd_10g_bnkps.onnx" in message and "glintr100.onnx" in message and str(folder) in message
    build_model_pack(tmp_path)
    (folder / "glintr100.onnx").unlink()
    with pytest.raises(face_models.FaceModelsError, match="missing glintr100.onnx") as err:
        face_models.load_analyzer("antelopev2", roots=[tmp_path])
    assert "scrfd_10g_bnkps.onnx (" not in str(err.value)


def test_missing_pack_lists_searched_folders_and_never_downloads(tmp_path, monkeypatch):
    import insightface.utils.storage as storage

    def no_download(*args, **kwargs):
        raise AssertionError("insightface tried to download")

    monkeypatch.setattr(storage, "download_file", no_download, raising=False)
    monkeypatch.setattr(storage, "download", no_download, raising=False)
    with pytest.raises(face_models.FaceModelsError) as err:
        face_models.load_analyzer("antelopev2", roots=[tmp_path])
    message = str(err.value)
    assert str(tmp_path / "models" / "antelopev2") in message and "not found" in message
    assert "scrfd_10g_bnkps.onnx" in message


def test_only_detector_and_recognizer_are_loaded(tmp_path):
    folder = build_model_pack(tmp_path)
    for extra in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx"):
        (folder / extra).write_bytes(b"this would fail to load if anything opened it")
    analyzer = face_models.load_analyzer("antelopev2", roots=[tmp_path])
    assert analyzer.detector.taskname == "detection" and analyzer.recognizer.taskname == "recognition"


def test_unknown_pack_is_routed_by_signature(tmp_path):
    from onnx_fixtures import build_detector, build_recognizer

    folder = tmp_path / "models" / "mypack"
    build_recognizer(folder / "a_recognizer.onnx")
    build_detector(folder / "b_detector.onnx")
    analyzer = face_models.load_analyzer("mypack", roots=[tmp_path])
    assert analyzer.pack == "mypack" and analyzer.detector.taskname == "detection"


def test_providers_offered_only_when_onnxruntime_reports_them(monkeypatch):
    import onnxruntime

    assert face_models.available_providers()[0] == "CPU"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert face_models.available_providers() == ["CPU", "CUDA"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["DmlExecutionProvider", "CPUExecutionProvider"])
    assert face_models.available_providers() == ["CPU", "DirectML"]


def test_unavailable_provider_falls_back_to_cpu(face_pack_root, caplog):
    with caplog.at_level(logging.WARNING):
        analyzer = face_models.load_analyzer("antelopev2", "CUDA", roots=[face_pack_root])
    assert analyzer.provider == "CPU" and "using CPU" in caplog.text


def test_both_onnxruntime_builds_installed_are_reported(monkeypatch):
    real = importlib.metadata.distribution

    def fake(name):
        if name in ("onnxruntime", "onnxruntime-gpu"):
            return real("onnxruntime")
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", fake)
    warning = face_models.onnxruntime_conflict()
    assert warning and "onnxruntime, onnxruntime-gpu" in warning and "pip uninstall -y onnxruntime onnxruntime-gpu" in warning
    monkeypatch.setattr(importlib.metadata, "distribution", lambda n: real("onnxruntime") if n == "onnxruntime" else fake(n + "x"))
    assert face_models.onnxruntime_conflict() is None


def test_det_size_must_be_a_multiple_of_32(face_pack_root):
    with pytest.raises(ValueError, match="multiple of 32"):
        face_models.load_analyzer("antelopev2", det_size=650, roots=[face_pack_root])


def test_pack_loads_without_insightface(tmp_path, face_analyzer, face_pack_root):
    """insightface and onnxruntime made unimportable: the pack still loads, saved faces load, the loader says what to install."""
    from instantid import face_store

    image = paint_face(blank_images(), 200, 150, 64, 80)
    faces, _ = face_analysis.analyze(image, face_analyzer)
    saved = face_store.save_faces(faces, tmp_path / "face.safetensors")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["insightface"] = None   # import insightface -> ImportError
        sys.modules["onnxruntime"] = None
        sys.path.insert(0, {str(PACK_DIR / "tests")!r})
        import conftest  # boots ComfyUI and loads the pack through its loader
        import folder_paths, nodes
        folder_paths.add_model_folder_path("insightface", {str(face_pack_root)!r})
        ids = [k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("InstantID")]
        assert "InstantIDLoadFaces" in ids and "InstantIDFaceAnalyzerLoader" in ids and "InstantIDApply" in ids, ids
        from instantid import face_store, face_models
        faces = face_store.load_faces({str(saved)!r})
        assert faces.frames[0].embedding.shape == (512,)
        loader = nodes.NODE_CLASS_MAPPINGS["InstantIDFaceAnalyzerLoader"]
        assert loader.define_schema().inputs[1].options == ["CPU"]
        try:
            loader.execute("antelopev2", "CPU", 640)
        except face_models.InsightFaceUnavailableError as exc:
            assert "python -m pip install insightface onnxruntime" in str(exc), exc
            print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, cwd=str(PACK_DIR))
    assert "OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_missing_insightface_error_says_what_to_install(monkeypatch, face_pack_root):
    monkeypatch.setitem(sys.modules, "insightface", None)
    with pytest.raises(face_models.InsightFaceUnavailableError) as err:
        face_models.load_analyzer("antelopev2", roots=[face_pack_root])
    assert "python -m pip install insightface onnxruntime" in str(err.value)


def test_detect_keeps_insightface_thresholds(face_analyzer):
    assert face_analyzer.detector.det_thresh == 0.5 and face_analyzer.detector.nms_thresh == 0.4
    image = paint_face(blank_images(), 200, 150, 64, 80, green=125)  # score 0.46: below the threshold
    bgr = face_analysis.rgb_to_bgr(face_analysis.image_to_rgb_uint8(image[0]))
    assert face_analyzer.detect(bgr) == []


def test_runs_on_a_tested_insightface_version():
    """The suite runs on whichever insightface the environment has: a version the pack is tested with, and under
    `make test-full` (INSTANTID_EXPECT_INSIGHTFACE, set from .venv-other) really the other one, not a shadowed copy."""
    import insightface

    assert insightface.__version__ in ("0.7.3", "2.1")  # spec section 2: the two measured versions
    assert importlib.metadata.version("insightface") == insightface.__version__, "metadata and module disagree"
    expected = os.environ.get("INSTANTID_EXPECT_INSIGHTFACE")
    if expected:
        assert insightface.__version__ == expected, f"asked to test insightface {expected}, imported {insightface.__file__}"
