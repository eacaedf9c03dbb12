"""The install doctor names each setup mistake, with its fix, from a temp models tree (no large file is read)."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from conftest import PACK_DIR, PACK_PACKAGE
from face_fixtures import build_model_pack
from safetensors.torch import save_file
from tiny_models import adapter_state_dict, flat, plain_ipadapter_state_dict, resampler_state_dict

from instantid import doctor, face_models

SMALL_RESAMPLER = dict(dim=64, depth=1, dim_head=64, heads=1, num_queries=4, embedding_dim=512, output_dim=2048, ff_mult=2)


def _adapter_sd() -> dict:
    return adapter_state_dict({n: 8 for n in range(1, 140, 2)}, resampler=resampler_state_dict(cfg=SMALL_RESAMPLER))


def _controlnet(path: Path, context: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"controlnet_down_blocks.0.weight": torch.zeros(4, 4, 1, 1),
               "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, context)}, str(path))
    return path


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
        raise face_models.InsightFaceUnavailableError("needs the `insightface` package")

    monkeypatch.setattr(face_models, "import_insightface", missing)
    finding = _only(doctor.check_insightface(), "insightface")
    assert finding.status == "error" and "python -m pip install insightface onnxruntime" in finding.fix


def test_insightface_importable():
    findings = doctor.check_insightface()
    installed = importlib.metadata.version("insightface")  # 0.7.3 or 2.1 (make test-full runs both)
    assert _only(findings, "insightface").detail == f"insightface {installed}"
    assert _only(findings, "numpy").status == "ok"


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
    assert finding.status == "error" and "missing glintr100.onnx" in finding.detail and "make models" in finding.fix


def test_no_face_pack(tmp_path):
    finding = _only(doctor.check_face_pack([tmp_path]), "insightface antelopev2")
    assert finding.status == "error" and str(tmp_path / "models" / "antelopev2") in finding.fix


def test_face_model_of_the_wrong_size(tmp_path):
    build_model_pack(tmp_path)  # tiny synthetic models: far smaller than the published files
    findings = doctor.check_face_pack([tmp_path])
    assert _only(findings, "insightface antelopev2").status == "ok"
    small = _only(findings, "insightface glintr100.onnx")
    assert small.status == "error" and "incomplete download" in small.detail and "Download it again" in small.fix


# ---------------------------------------------------------------- adapter


def test_missing_adapter(tmp_path):
    finding = _only(doctor.check_adapters([tmp_path / "instantid"]), "InstantID adapter")
    assert finding.status == "error" and "no adapter file" in finding.detail and "make models" in finding.fix


def test_adapter_of_the_published_size_is_not_read(tmp_path):
    path = _sparse(tmp_path / "instantid" / "ip-adapter.bin", doctor.ADAPTER_SIZE)
    assert doctor.check_adapter_file(path).status == "ok"


def test_wrong_size_adapter(tmp_path):
    big = _sparse(tmp_path / "instantid" / "ip-adapter.bin", 900_000_000)
    finding = doctor.check_adapter_file(big)
    assert finding.status == "warn" and f"{doctor.ADAPTER_SIZE:,}" in finding.detail and "--deep" in finding.fix
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
    assert finding.status == "error" and "could not be read" in finding.detail and "ip-adapter.bin from InstantX/InstantID" in finding.fix


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


def test_sd15_controlnet_as_identitynet(tmp_path):
    _controlnet(tmp_path / "controlnet" / "instantid-controlnet.safetensors", 768)
    finding = _only(doctor.check_identitynet([tmp_path / "controlnet"]), "IdentityNet")
    assert finding.status == "error" and "SD1.5 ControlNet" in finding.detail and "2048" in finding.detail
    assert "ControlNetModel/diffusion_pytorch_model.safetensors" in finding.fix


def test_sdxl_identitynet_passes_and_a_truncated_one_fails(tmp_path):
    path = _controlnet(tmp_path / "controlnet" / "instantid" / "diffusion_pytorch_model.safetensors", 2048)
    assert _only(doctor.check_identitynet([tmp_path / "controlnet"]), "IdentityNet").status == "ok"
    path.write_bytes(path.read_bytes()[:-10])
    finding = _only(doctor.check_identitynet([tmp_path / "controlnet"]), "IdentityNet")
    assert finding.status == "error" and "truncated" in finding.detail


def test_no_identitynet(tmp_path):
    _controlnet(tmp_path / "controlnet" / "depth-sdxl.safetensors", 2048)
    finding = _only(doctor.check_identitynet([tmp_path / "controlnet"]), "IdentityNet")
    assert finding.status == "error" and "instantid-controlnet.safetensors" in finding.fix


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
    assert "[warn]  adapter ip-adapter.bin" in out and "[ok]    IdentityNet instantid-controlnet.safetensors" in out
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
