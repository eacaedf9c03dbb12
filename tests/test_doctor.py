"""The install doctor names each setup mistake, with its fix, from a temp models tree (no large file is read)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models
import torch
from conftest import PACK_DIR, PACK_PACKAGE
from face_fixtures import build_model_pack
from safetensors.torch import load_file, save_file
from tiny_models import adapter_state_dict, flat, plain_ipadapter_state_dict, resampler_state_dict

from instantid import doctor, doctor_env, face_models, published

SMALL_RESAMPLER = dict(dim=64, depth=1, dim_head=64, heads=1, num_queries=4, embedding_dim=512, output_dim=2048, ff_mult=2)


def _adapter_sd() -> dict:
    return adapter_state_dict({n: 8 for n in range(1, 140, 2)}, resampler=resampler_state_dict(cfg=SMALL_RESAMPLER))


def _controlnet(path: Path, context: int) -> Path:
    """A header-sized stand-in with the key names and input widths of a diffusers ControlNet (see the tiny_* fixtures for real ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"controlnet_down_blocks.0.weight": torch.zeros(4, 4, 1, 1),
               "controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 3, 3, 3),
               "add_embedding.linear_1.weight": torch.zeros(8, 2816 if context == 2048 else 8),
               "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, context)}, str(path))
    return path


def _like(path: Path, digest: str | None = None) -> published.PublishedFile:
    """A published-file record for a test-built file: its own size and (unless given) its own sha256."""
    return published.PublishedFile(path.name, path.stat().st_size, digest or hashlib.sha256(path.read_bytes()).hexdigest())


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)  # sparse: no disk space used
    return path


def _only(findings: list, check: str):
    matching = [f for f in findings if f.check.startswith(check)]
    assert len(matching) == 1, findings
    return matching[0]


# ---------------------------------------------------------------- host and packages


def test_host_version():
    assert doctor.check_host("0.3.75").status == "ok"
    assert doctor.check_host("0.4.1").status == "ok"
    old = doctor.check_host("0.3.60")
    assert old.status == "error" and "older than 0.3.75" in old.detail and "Update ComfyUI" in old.fix
    assert doctor.check_host("unknown").status == "warn"


def test_both_onnxruntimes_installed_is_an_error_with_the_uninstall_command(monkeypatch):
    monkeypatch.setattr(face_models, "installed_onnxruntimes", lambda: ["onnxruntime", "onnxruntime-gpu"])
    finding = doctor.check_onnxruntime()
    assert finding.status == "error" and "onnxruntime, onnxruntime-gpu" in finding.detail
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in finding.fix and "pip install onnxruntime-gpu" in finding.fix


def test_no_onnxruntime_is_an_error(monkeypatch):
    monkeypatch.setattr(face_models, "installed_onnxruntimes", lambda: [])
    finding = doctor.check_onnxruntime()
    assert finding.status == "error" and "never both" in finding.fix


def test_one_onnxruntime_reports_flavour_and_providers():
    finding = doctor.check_onnxruntime()
    assert finding.status == "ok" and "onnxruntime" in finding.detail and "CPU" in finding.detail


def test_insightface_built_for_numpy_1_is_named_with_the_fix(monkeypatch):
    def broken():
        try:
            raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C header, got 88")
        except ValueError as exc:
            raise face_models.InsightFaceUnavailableError("insightface could not be imported") from exc

    monkeypatch.setattr(face_models, "import_insightface", broken)
    findings = doctor.check_insightface()
    assert _only(findings, "insightface").status == "error"
    numpy_finding = _only(findings, "numpy")
    assert numpy_finding.status == "error" and "numpy 1" in numpy_finding.detail
    assert 'pip install "numpy<2"' in numpy_finding.fix


def test_insightface_missing_gives_the_install_command(monkeypatch):
    def missing():
        raise face_models.InsightFaceUnavailableError("needs the `insightface==0.7.3` package")

    monkeypatch.setattr(face_models, "import_insightface", missing)
    finding = _only(doctor.check_insightface(), "insightface")
    assert finding.status == "error" and "python -m pip install insightface" in finding.fix


def test_insightface_importable_reports_its_version():
    findings = doctor.check_insightface()
    finding = _only(findings, "insightface")
    assert finding.status == "ok" and finding.detail.startswith(f"insightface {importlib.metadata.version('insightface')}")
    assert _only(findings, "numpy").status == "ok"


@pytest.mark.parametrize(("version", "status"), [("0.7.3", "ok"), ("2.1", "ok"), ("2.1.0", "ok"), ("2.3.1", "ok"),
                                                 ("0.7.2", "warn"), ("0.6.2", "warn"), ("3.0.0", "warn")])
def test_insightface_0_7_3_and_2_x_are_supported(monkeypatch, version, status):
    monkeypatch.setattr(doctor_env, "insightface_version", lambda: version)
    finding = _only(doctor.check_insightface(), "insightface")
    assert finding.status == status and finding.detail.startswith(f"insightface {version}")
    if status == "warn":
        assert "0.7.3 and 2.x" in finding.detail and 'pip install --upgrade "insightface>=2.1,<3"' in finding.fix


# ---------------------------------------------------------------- doubled installs


def _opencv(monkeypatch, installed: dict[str, str], requirers: dict[str, list[str]] | None = None):
    monkeypatch.setattr(doctor_env, "installed_versions", lambda names: {n: v for n, v in installed.items() if n in names})
    monkeypatch.setattr(doctor_env, "required_by", lambda names: {n: (requirers or {}).get(n, []) for n in names})
    return doctor.check_opencv()


def test_one_opencv_is_ok_and_reports_cv2():
    import cv2

    finding = doctor.check_opencv()
    assert finding.status == "ok" and f"(cv2 {cv2.__version__})" in finding.detail
    assert [n for n in doctor_env.OPENCV_DISTRIBUTIONS if n in finding.detail.split()] != []


def test_opencv_python_beside_headless_is_named_with_the_commands(monkeypatch):
    # what insightface 2.x brings (it depends on opencv-python) into an environment that has the headless build
    finding = _opencv(monkeypatch, {"opencv-python": "4.10.0.84", "opencv-python-headless": "4.11.0.86"},
                      {"opencv-python": ["insightface"]})
    assert finding.status == "error"  # different versions: the files in cv2/ are a mix
    assert "opencv-python 4.10.0.84, opencv-python-headless 4.11.0.86" in finding.detail
    assert "opencv-python required by insightface" in finding.detail
    assert "`python -m pip uninstall -y opencv-python opencv-python-headless` then `python -m pip install opencv-python-headless`" in finding.fix
    assert "insightface requires `opencv-python` by name" in finding.fix and "--no-deps" in finding.fix


def test_same_version_doubles_are_a_warning_and_contrib_is_kept(monkeypatch):
    finding = _opencv(monkeypatch, {"opencv-python-headless": "4.11.0.86", "opencv-contrib-python": "4.11.0.86"})
    assert finding.status == "warn"
    assert "`python -m pip uninstall -y opencv-python-headless opencv-contrib-python` then " \
           "`python -m pip install opencv-contrib-python-headless`" in finding.fix
    assert "by name" not in finding.fix  # nobody requires the removed ones


def test_no_opencv_distribution(monkeypatch):
    monkeypatch.setattr(doctor_env, "_cv2_version", lambda: (None, "ModuleNotFoundError: No module named 'cv2'"))
    finding = _opencv(monkeypatch, {})
    assert finding.status == "error" and finding.fix == "`python -m pip install opencv-python-headless`"


def test_doubled_onnxruntime_says_who_brings_the_cpu_build_back(monkeypatch):
    monkeypatch.setattr(face_models, "installed_onnxruntimes", lambda: ["onnxruntime", "onnxruntime-gpu"])
    monkeypatch.setattr(doctor_env, "required_by", lambda names: {n: ["insightface"] if n == "onnxruntime" else [] for n in names})
    finding = doctor.check_onnxruntime()
    assert finding.status == "error"
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in finding.fix and "pip install onnxruntime-gpu" in finding.fix
    assert "insightface requires `onnxruntime` by name" in finding.fix and "--no-deps" in finding.fix


def test_required_by_reads_the_installed_metadata():
    found = doctor_env.required_by({"numpy", "sympy"})
    assert "insightface" in found["numpy"]  # insightface declares numpy
    assert "onnxruntime" not in found["sympy"]  # onnxruntime needs sympy only for its "symbolic" extra


# ---------------------------------------------------------------- insightface pack


def test_nested_antelopev2_is_named_with_the_move(tmp_path):
    folder = build_model_pack(tmp_path, nested=True)
    finding = _only(doctor.check_face_pack([tmp_path]), "insightface antelopev2")
    assert finding.status == "warn" and "nested" in finding.detail
    assert f"move the .onnx files up to {folder.parent}" in finding.fix


def test_missing_face_model_file(tmp_path):
    folder = build_model_pack(tmp_path)
    (folder / "glintr100.onnx").unlink()
    finding = _only(doctor.check_face_pack([tmp_path]), "insightface antelopev2")
    assert finding.status == "error" and "missing glintr100.onnx" in finding.detail
    assert "download_models.py --only antelopev2" in finding.fix and "make models" not in finding.fix


def test_no_face_pack(tmp_path):
    finding = _only(doctor.check_face_pack([tmp_path]), "insightface antelopev2")
    assert finding.status == "error" and str(tmp_path / "models" / "antelopev2") in finding.fix


def test_face_model_of_the_wrong_size(tmp_path):
    build_model_pack(tmp_path)  # tiny synthetic models: far smaller than the published files
    findings = doctor.check_face_pack([tmp_path])
    assert _only(findings, "insightface antelopev2").status == "ok"
    small = _only(findings, "insightface glintr100.onnx")
    assert small.status == "error" and "incomplete download" in small.detail and "download it again" in small.fix
    assert f"the published file has {published.RECOGNIZER.size:,}" in small.detail


def test_face_models_of_the_published_size_are_hashed_only_with_deep(tmp_path, monkeypatch):
    folder = build_model_pack(tmp_path)
    detector = folder / "scrfd_10g_bnkps.onnx"
    monkeypatch.setitem(published.FACE_FILES, detector.name, _like(detector))
    monkeypatch.setitem(published.FACE_FILES, "glintr100.onnx", _like(folder / "glintr100.onnx", "0" * 64))
    assert [f.check for f in doctor.check_face_pack([tmp_path])] == ["insightface antelopev2"]
    findings = doctor.check_face_pack([tmp_path], deep=True)
    assert _only(findings, "insightface scrfd_10g_bnkps.onnx").status == "ok"
    bad = _only(findings, "insightface glintr100.onnx")
    assert bad.status == "error" and "published size" in bad.detail and "download_models.py --only antelopev2" in bad.fix


# ---------------------------------------------------------------- adapter


def test_missing_adapter(tmp_path):
    finding = _only(doctor.check_adapters([tmp_path / "instantid"]), "InstantID adapter")
    assert finding.status == "error" and f"no adapter file in {tmp_path / 'instantid'}" in finding.detail
    assert "download_models.py --only adapter" in finding.fix and "make models" not in finding.fix
    assert published.ADAPTER.url in finding.fix


def test_adapter_of_the_published_size_is_verified_by_digest_not_unpickled(tmp_path, monkeypatch):
    from instantid import adapter

    path = tmp_path / "instantid" / "ip-adapter.bin"
    path.parent.mkdir()
    torch.save(_adapter_sd(), str(path))
    monkeypatch.setattr(adapter, "read_adapter_file", lambda *a: pytest.fail("unpickled the published-size file"))
    finding = doctor.check_adapter_file(path, file=_like(path))
    assert finding.status == "ok" and "sha256 verified" in finding.detail and "re-saved" not in finding.detail
    damaged = doctor.check_adapter_file(path, file=_like(path, "0" * 64))
    assert damaged.status == "error" and "has the published size" in damaged.detail and "damaged download" in damaged.detail
    assert "download_models.py --only adapter" in damaged.fix


def test_wrong_size_adapter(tmp_path):
    big = _sparse(tmp_path / "instantid" / "ip-adapter.bin", 900_000_000)
    finding = doctor.check_adapter_file(big)
    assert finding.status == "warn" and f"{published.ADAPTER.size:,}" in finding.detail and "--deep" in finding.fix
    resaved = tmp_path / "instantid" / "resaved.bin"
    torch.save(_adapter_sd(), str(resaved))
    finding = doctor.check_adapter_file(resaved)
    assert finding.status == "warn" and "InstantID's keys" in finding.detail and "re-saved" in finding.detail


def test_truncated_adapter(tmp_path):
    path = tmp_path / "instantid" / "ip-adapter.bin"
    path.parent.mkdir()
    torch.save(_adapter_sd(), str(path))
    path.write_bytes(path.read_bytes()[:5000])
    finding = doctor.check_adapter_file(path)
    assert finding.status == "error" and "could not be read" in finding.detail and published.ADAPTER.url in finding.fix


def test_ip_adapter_file_in_the_instantid_folder(tmp_path):
    folder = tmp_path / "instantid"
    folder.mkdir()
    torch.save(plain_ipadapter_state_dict(), str(folder / "ip-adapter_sdxl.bin"))
    save_file(flat(plain_ipadapter_state_dict()), str(folder / "ip-adapter_sdxl.safetensors"))
    findings = doctor.check_adapters([folder])
    assert len(findings) == 2
    for finding in findings:
        assert finding.status == "error" and "plain IP-Adapter" in finding.detail
        assert "Move other files out of the instantid folder" in finding.fix


def test_flat_safetensors_adapter_is_checked_from_its_header(tmp_path):
    path = tmp_path / "ip-adapter.safetensors"
    save_file(flat(_adapter_sd()), str(path))
    assert doctor.check_adapter_file(path).status == "ok"


# ---------------------------------------------------------------- IdentityNet and checkpoint


@pytest.fixture(scope="module")
def controlnet_state_dicts() -> dict[str, dict]:
    """Real tiny ControlNets (diffusers-built, SDXL and SD1.5 topology) in both layouts ComfyUI loads."""
    sdxl = tiny_models.build_diffusers_controlnet(tiny_models.SDXL_CONTROLNET_CONFIG, 1).state_dict()
    sd15 = tiny_models.build_diffusers_controlnet(tiny_models.SD15_CONTROLNET_CONFIG, 2).state_dict()
    return {"sdxl_diffusers": sdxl, "sdxl_ldm": tiny_models.controlnet_to_comfy(sdxl, tiny_models.SDXL_COMFY_UNET_CONFIG),
            "sd15_ldm": tiny_models.controlnet_to_comfy(sd15, tiny_models.SD15_COMFY_UNET_CONFIG)}


def _save(sd: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def test_identitynet_is_found_by_its_tensors_under_the_published_name(tmp_path, controlnet_state_dicts):
    folder = tmp_path / "controlnet"
    path = _save(controlnet_state_dicts["sdxl_diffusers"], folder / "diffusion_pytorch_model.safetensors")
    _save(controlnet_state_dicts["sd15_ldm"], folder / "control_canny_sd15.safetensors")  # ignored: not SDXL, not named so
    finding = _only(doctor.check_identitynet([folder], file=_like(path)), "IdentityNet")
    assert finding.check == "IdentityNet diffusion_pytorch_model.safetensors" and finding.status == "ok"
    assert "the published size" in finding.detail and "--deep checks its sha256" in finding.detail
    deep = _only(doctor.check_identitynet([folder], deep=True, file=_like(path)), "IdentityNet")
    assert deep.status == "ok" and "sha256 verified" in deep.detail
    damaged = _only(doctor.check_identitynet([folder], deep=True, file=_like(path, "0" * 64)), "IdentityNet")
    assert damaged.status == "error" and "damaged download" in damaged.detail


def test_the_file_the_loader_accepts_is_what_the_doctor_finds(tmp_path, controlnet_state_dicts, base_dir):
    from instantid.identitynet import check_controlnet

    folder = tmp_path / "controlnet"
    ldm = _save(controlnet_state_dicts["sdxl_ldm"], folder / "any name.safetensors")
    check_controlnet(tiny_models.load_controlnet(ldm), 2048)  # ComfyUI's loader and the pack's check take it
    prefixed = _save({f"control_model.{k}": v for k, v in load_file(str(ldm)).items()}, folder / "old" / "prefixed.safetensors")
    finding = _only(doctor.check_identitynet([folder]), "IdentityNet")
    # Neither has the published size: both listed as usable, with the advice to download the real file.
    assert finding.status == "warn" and str(ldm) in finding.detail and str(prefixed) in finding.detail
    assert f"published IdentityNet size ({published.IDENTITYNET.size:,} bytes)" in finding.detail
    assert "download_models.py --only identitynet" in finding.fix


def test_sd15_controlnet_named_as_identitynet(tmp_path, controlnet_state_dicts):
    _save(controlnet_state_dicts["sd15_ldm"], tmp_path / "controlnet" / "instantid-controlnet.safetensors")
    finding = _only(doctor.check_identitynet([tmp_path / "controlnet"]), "IdentityNet")
    assert finding.status == "error" and "an SD1.5 ControlNet (cross-attention 768)" in finding.detail and "2048" in finding.detail
    assert "ControlNetModel/diffusion_pytorch_model.safetensors" in finding.fix


def test_a_unet_sized_or_named_as_identitynet_is_not_a_controlnet(tmp_path):
    folder = tmp_path / "controlnet"
    _save({"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 2048)}, folder / "identitynet.safetensors")
    finding = _only(doctor.check_identitynet([folder]), "IdentityNet")
    assert finding.status == "error" and "not a ControlNet" in finding.detail


def test_truncated_controlnet_file_and_no_identitynet(tmp_path, controlnet_state_dicts):
    folder = tmp_path / "controlnet"
    path = _save(controlnet_state_dicts["sdxl_diffusers"], folder / "diffusion_pytorch_model.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    findings = doctor.check_identitynet([folder])
    broken = _only(findings, "ControlNet diffusion_pytorch_model.safetensors")
    assert broken.status == "error" and "truncated" in broken.detail
    assert [f.check for f in findings] == ["ControlNet diffusion_pytorch_model.safetensors"]


def test_no_identitynet(tmp_path, controlnet_state_dicts):
    _save(controlnet_state_dicts["sd15_ldm"], tmp_path / "controlnet" / "depth-sd15.safetensors")
    finding = _only(doctor.check_identitynet([tmp_path / "controlnet"]), "IdentityNet")
    assert finding.status == "error" and f"no SDXL ControlNet in {tmp_path / 'controlnet'}" in finding.detail
    assert "download_models.py --only identitynet" in finding.fix and "any file name works" in finding.fix


def test_sdxl_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_file({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 768)},
              str(folder / "sd15.safetensors"))
    finding = doctor.check_checkpoints([folder])
    assert finding.status == "warn" and "no SDXL checkpoint" in finding.detail and "SDXL only" in finding.fix
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(4)}, str(folder / "sdxl.safetensors"))
    finding = doctor.check_checkpoints([folder])
    assert finding.status == "ok" and "sdxl.safetensors" in finding.detail
    assert doctor.check_checkpoints([tmp_path / "empty"]).status == "error"


# ---------------------------------------------------------------- the command and the node


def _complete_tree(models: Path) -> None:
    torch.save(_adapter_sd(), str(_sparse(models / "instantid" / "x", 0).parent / "ip-adapter.bin"))
    (models / "instantid" / "x").unlink()
    _controlnet(models / "controlnet" / "instantid-controlnet.safetensors", 2048)
    build_model_pack(models / "insightface", nested=True)


def test_command_checks_a_models_dir(tmp_path):
    models = tmp_path / "models"
    _complete_tree(models)
    env = {k: v for k, v in os.environ.items() if k != "INSTANTID_COMFYUI"}
    result = subprocess.run([sys.executable, "-m", "instantid.doctor", "--models-dir", str(models)], cwd=PACK_DIR,
                            capture_output=True, text=True, timeout=120, env=env)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr  # no SDXL checkpoint in the tree
    assert "[ok]    ComfyUI version: ComfyUI 0.3.75" in out
    assert "[warn]  adapter ip-adapter.bin" in out and "[warn]  IdentityNet: SDXL ControlNets that can serve as IdentityNet" in out
    assert f"download_models.py --only identitynet --models-dir {models}" in out  # the models folder the doctor checked
    assert "[warn]  insightface antelopev2" in out and "nested" in out
    assert "[error] SDXL checkpoint" in out and "fix: InstantID works with SDXL only" in out


def test_node_returns_the_report_as_text_and_ui():
    module = importlib.import_module(f"{PACK_PACKAGE}.nodes.doctor_node")
    schema = module.InstantIDDoctor.define_schema()
    assert schema.node_id == "InstantIDDoctor" and schema.display_name == "InstantID Doctor" and schema.is_output_node
    output = module.InstantIDDoctor.execute(deep=False)
    report = output.result[0]
    assert "ComfyUI version" in report and "onnxruntime" in report
    # "InstantID adapter" when the folder is empty, "adapter <file>" once other tests have put one there.
    assert re.search(r"^\[\w+\]\s+(InstantID adapter|adapter \S+)", report, flags=re.M), report
    assert list(output.ui.as_dict()["text"]) == [report]
    assert [module.InstantIDDoctor] == module.DOCTOR_NODES


# ---------------------------------------------------------------- the same advice outside the doctor


def test_face_model_errors_advise_the_download_script_for_antelopev2_only(tmp_path):
    with pytest.raises(face_models.FaceModelsError) as err:
        face_models.locate_pack("antelopev2", [tmp_path])
    assert "download_models.py --only antelopev2" in str(err.value) and "make models" not in str(err.value)
    with pytest.raises(face_models.FaceModelsError) as err:
        face_models.locate_pack("buffalo_l", [tmp_path])
    assert "download_models.py" not in str(err.value)  # the script fetches antelopev2 only


def test_loader_validation_names_the_real_adapter_folder():
    import folder_paths

    module = importlib.import_module(f"{PACK_PACKAGE}.nodes.core_nodes")
    message = module.InstantIDLoader.validate_inputs("no-such-adapter.bin")
    assert folder_paths.get_folder_paths("instantid")[0] in message and "ComfyUI/models/instantid" not in message
    assert "download_models.py --only adapter" in message
