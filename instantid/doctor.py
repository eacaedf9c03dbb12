"""Install doctor: checks the host, the Python packages and every model file, each finding with its fix.

Run ``python -m instantid.doctor`` (or ``make doctor``) from the pack's folder,
or add the 'InstantID Doctor' node in ComfyUI. Nothing large is loaded: model
files are judged by size and by their safetensors header (names and shapes
only); a ``.bin`` adapter is unpickled only when it is small enough to be a
wrong file (or with ``--deep``).
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from . import face_models
from .errors import InstantIDError
from .paths import ADAPTER_FOLDER

PACK_DIR = Path(__file__).resolve().parent.parent
MIN_HOST = (0, 3, 75)
ADAPTER_SIZE = 1_691_951_878  # ip-adapter.bin as published by InstantX/InstantID
KEY_CHECK_LIMIT = 400_000_000  # a .bin this small is unpickled to say what it is instead
# antelopev2 files: published sizes are about 16.9 MB and 261 MB; bounds allow for re-exports.
FACE_FILE_BOUNDS = {"scrfd_10g_bnkps.onnx": (15_000_000, 19_000_000), "glintr100.onnx": (240_000_000, 280_000_000)}
SDXL_CONTEXT = 2048
IDENTITYNET_NAMES = ("instantid", "identitynet")
MODELS_HINT = "Run `make models` in the pack folder (or `python scripts/download_models.py`)"


@dataclass(frozen=True)
class Finding:
    """One check's result. status: 'ok', 'warn' or 'error'; fix: what to do (empty when ok)."""

    check: str
    status: str
    detail: str
    fix: str = ""


# ---------------------------------------------------------------- file headers


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes); raises ValueError if broken or truncated."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size - 8, 200_000_000):
            raise ValueError(f"header length {length:,} does not fit the file ({size:,} bytes): not safetensors, or truncated")
        header = json.loads(fh.read(length))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise ValueError(f"truncated: the header promises {8 + length + end:,} bytes, the file has {size:,}")
    header.pop("__metadata__", None)
    return header


def cross_attention_width(header: dict) -> int | None:
    """Text-context width read from the first ``attn2.to_k.weight`` ([inner, context]); None if there is none."""
    for name in sorted(header):
        if name.endswith("attn2.to_k.weight"):
            return int(header[name]["shape"][1])
    return None


def _meta_tensors(header: dict) -> dict:
    import torch

    return {name: torch.empty(info["shape"], device="meta") for name, info in header.items()}


# ---------------------------------------------------------------- host and packages


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_host(version: str) -> Finding:
    if version == "unknown":
        return Finding("ComfyUI version", "warn", "could not read comfyui_version.py",
                       "Update ComfyUI to 0.3.75 or newer (git pull, or 'Update ComfyUI' in ComfyUI-Manager).")
    if _version_tuple(version) < MIN_HOST:
        return Finding("ComfyUI version", "error", f"ComfyUI {version} is older than 0.3.75, the oldest host the pack is tested on "
                       "(old hosts give noise or 'X' images with InstantID).",
                       "Update ComfyUI (git pull in the ComfyUI folder, or 'Update ComfyUI' in ComfyUI-Manager), then restart.")
    return Finding("ComfyUI version", "ok", f"ComfyUI {version}")


def check_torch() -> Finding:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        return Finding("torch", "error", f"torch cannot be imported ({exc})", "Reinstall torch for your GPU from pytorch.org.")
    if torch.cuda.is_available():
        return Finding("torch", "ok", f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Finding("torch", "ok", f"torch {torch.__version__}, Apple MPS")
    return Finding("torch", "warn", f"torch {torch.__version__} without CUDA: SDXL runs on the CPU (minutes per image)",
                   "On an NVIDIA GPU install a CUDA build of torch into ComfyUI's Python (pytorch.org shows the command).")


_NUMPY_ABI = ("numpy.dtype size changed", "compiled using NumPy 1", "_ARRAY_API", "numpy.core.multiarray failed")


def check_insightface() -> list[Finding]:
    """insightface importable (and which version), and numpy issues behind a failed import."""
    import numpy

    numpy_version = numpy.__version__
    try:
        face_models.import_insightface()
    except face_models.InsightFaceUnavailableError as exc:
        text = f"{exc} {exc.__cause__}"
        if any(marker in text for marker in _NUMPY_ABI):
            return [
                Finding("insightface", "error", "insightface is installed but does not import with this numpy", "See the numpy finding."),
                Finding("numpy", "error", f"numpy {numpy_version}: the insightface 0.7.3 wheel was built against numpy 1 and fails "
                        "to import under numpy 2", "Either `python -m pip install \"numpy<2\"` or move to the insightface 2.x wheel, "
                        f"which works with numpy 2 and needs no compiler: `python -m pip install --upgrade \"{face_models.INSIGHTFACE_REQUIREMENT}\"`."),
            ]
        return [Finding("insightface", "error", str(exc), face_models.INSTALL_HINT),
                Finding("numpy", "ok", f"numpy {numpy_version}")]
    import insightface

    version = getattr(insightface, "__version__", "unknown")
    found = [Finding("numpy", "ok", f"numpy {numpy_version}")]
    if version not in face_models.TESTED_INSIGHTFACE:
        tested = " and ".join(face_models.TESTED_INSIGHTFACE)
        found.insert(0, Finding("insightface", "warn", f"insightface {version}; the pack is tested with {tested}",
                                f"`python -m pip install --upgrade \"{face_models.INSIGHTFACE_REQUIREMENT}\"` if face analysis misbehaves."))
    else:
        found.insert(0, Finding("insightface", "ok", f"insightface {version}"))
    return found


def check_onnxruntime() -> Finding:
    names = face_models.installed_onnxruntimes()
    if not names:
        return Finding("onnxruntime", "error", "no onnxruntime build is installed (insightface needs one)",
                       "`python -m pip install onnxruntime` (CPU) or `python -m pip install onnxruntime-gpu` (CUDA), never both.")
    conflict = face_models.onnxruntime_conflict()
    if conflict:
        return Finding("onnxruntime", "error", f"several onnxruntime builds installed: {', '.join(names)}", conflict)
    providers = face_models.available_providers()
    detail = f"{names[0]}, providers: {', '.join(providers)}"
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        cuda = False
    if cuda and providers == ["CPU"]:
        return Finding("onnxruntime", "warn", detail + " (face analysis runs on the CPU although CUDA is there; fine, it is once per photo)",
                       "For GPU face analysis: `python -m pip uninstall -y onnxruntime` then `python -m pip install onnxruntime-gpu`.")
    return Finding("onnxruntime", "ok", detail)


# ---------------------------------------------------------------- model files


def _files(folders: list[Path], extensions: tuple[str, ...]) -> list[Path]:
    found = []
    for folder in folders:
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    return found


def check_adapter_file(path: Path, deep: bool = False) -> Finding:
    """Is ``path`` the InstantID adapter? Size first; keys from the header (safetensors) or, for a small or --deep .bin, the pickle."""
    from .adapter import derive_config, read_adapter_file, split_state_dict

    check = f"adapter {path.name}"
    size = path.stat().st_size
    fix_download = f"Download ip-adapter.bin from InstantX/InstantID into {path.parent} ({MODELS_HINT})."
    try:
        if path.suffix.lower() == ".safetensors":
            sd = _meta_tensors(read_safetensors_header(path))
        elif size == ADAPTER_SIZE and not deep:
            return Finding(check, "ok", f"{path} ({size:,} bytes, the published size)")
        elif size <= KEY_CHECK_LIMIT or deep:
            sd = read_adapter_file(str(path))
        else:
            return Finding(check, "warn", f"{path} has {size:,} bytes; the published ip-adapter.bin has {ADAPTER_SIZE:,} "
                           "(an incomplete download or another file)", fix_download + " Or run the doctor with --deep to check its keys.")
        proj, kv = split_state_dict(sd, str(path))
        config, _ = derive_config(proj, kv, str(path))
    except (InstantIDError, ValueError, OSError) as exc:
        return Finding(check, "error", str(exc), fix_download + " Move other files out of the instantid folder.")
    if path.suffix.lower() == ".bin" and size != ADAPTER_SIZE:
        return Finding(check, "warn", f"{path} has InstantID's keys (Resampler {config.dim}x{config.depth}) but {size:,} bytes, "
                       f"not the published {ADAPTER_SIZE:,}: a re-saved or converted copy", "If results look wrong, " + fix_download)
    return Finding(check, "ok", f"{path} ({size:,} bytes, InstantID keys, 70 face K/V layers)")


def check_adapters(folders: list[Path], deep: bool = False) -> list[Finding]:
    files = _files(folders, (".bin", ".safetensors", ".pt", ".pth", ".ckpt"))
    if not files:
        where = ", ".join(str(f) for f in folders) or "models/instantid"
        return [Finding("InstantID adapter", "error", f"no adapter file in {where}",
                        f"{MODELS_HINT}, or download ip-adapter.bin from huggingface.co/InstantX/InstantID into {folders[0] if folders else where}.")]
    return [check_adapter_file(p, deep) for p in files]


def check_controlnet_file(path: Path) -> Finding:
    check = f"IdentityNet {path.name}"
    fix = f"{MODELS_HINT}: it saves InstantX/InstantID's ControlNetModel/diffusion_pytorch_model.safetensors as {path.parent / 'instantid-controlnet.safetensors'}."
    if path.suffix.lower() != ".safetensors":
        return Finding(check, "warn", f"{path} is not a safetensors file, so it was not checked", fix)
    try:
        header = read_safetensors_header(path)
    except (ValueError, OSError) as exc:
        return Finding(check, "error", f"{path}: {exc}", fix)
    width = cross_attention_width(header)
    if not any(k.startswith(("controlnet_", "zero_convs.", "input_hint_block.", "control_model.")) for k in header):
        return Finding(check, "error", f"{path} is not a ControlNet (no controlnet_* / zero_convs keys)", fix)
    if width is None:
        return Finding(check, "error", f"{path} has no cross-attention (attn2) layers, so it cannot see the face tokens", fix)
    if width != SDXL_CONTEXT:
        family = {768: "SD1.5", 1024: "SD2"}.get(width, f"{width}-wide")
        return Finding(check, "error", f"{path} is an {family} ControlNet (cross-attention {width}); IdentityNet is an SDXL ControlNet "
                       f"with {SDXL_CONTEXT}-wide cross-attention", fix)
    return Finding(check, "ok", f"{path}: SDXL ControlNet, cross-attention {width}")


def check_identitynet(folders: list[Path]) -> list[Finding]:
    files = _files(folders, (".safetensors", ".bin", ".pth", ".pt", ".ckpt"))
    named = [p for p in files if any(n in str(p.relative_to(_root_of(p, folders))).lower() for n in IDENTITYNET_NAMES)]
    if not named:
        where = folders[0] if folders else Path("models/controlnet")
        return [Finding("IdentityNet", "error", f"no ControlNet named like instantid/identitynet in {', '.join(map(str, folders)) or where}",
                        f"{MODELS_HINT}, or save InstantX/InstantID's ControlNetModel/diffusion_pytorch_model.safetensors as "
                        f"{where / 'instantid-controlnet.safetensors'} (the name must say instantid so you can find it).")]
    return [check_controlnet_file(p) for p in named]


def _root_of(path: Path, folders: list[Path]) -> Path:
    return next((f for f in folders if f in path.parents), path.parent)


def check_face_pack(roots: list[Path], pack: str = face_models.DEFAULT_PACK) -> list[Finding]:
    try:
        location = face_models.locate_pack(pack, roots)
    except face_models.FaceModelsError as exc:
        first = roots[0] / "models" / pack if roots else Path("models/insightface/models") / pack
        return [Finding(f"insightface {pack}", "error", str(exc), f"{MODELS_HINT}, or put scrfd_10g_bnkps.onnx and glintr100.onnx in {first}.")]
    found = []
    if location.nested:
        found.append(Finding(f"insightface {pack}", "warn", f"the files are in the nested folder {location.folder} (as the zip unpacks)",
                             f"This pack reads it, but other packs fail with `assert 'detection'`: move the .onnx files up to "
                             f"{location.folder.parent} and delete the empty {location.folder}."))
    else:
        found.append(Finding(f"insightface {pack}", "ok", f"{location.folder}"))
    for path in (location.detector, location.recognizer):
        if path is None or path.name not in FACE_FILE_BOUNDS:
            continue
        low, high = FACE_FILE_BOUNDS[path.name]
        size = path.stat().st_size
        if not low <= size <= high:
            found.append(Finding(f"insightface {path.name}", "error", f"{path} has {size:,} bytes; the published file has "
                                 f"{low / 1e6:.0f}-{high / 1e6:.0f} MB (an incomplete download or another file)",
                                 f"Download it again ({MODELS_HINT})."))
    return found


def is_sdxl_checkpoint(header: dict) -> bool:
    if any(k.startswith("conditioner.embedders.1.") for k in header):
        return True
    unet = {k: v for k, v in header.items() if k.startswith("model.diffusion_model.")}
    return cross_attention_width(unet) == SDXL_CONTEXT


def check_checkpoints(folders: list[Path]) -> Finding:
    files = _files(folders, (".safetensors", ".ckpt", ".pt", ".pth"))
    sdxl, unchecked = [], []
    for path in files:
        if path.suffix.lower() != ".safetensors":
            unchecked.append(path.name)
            continue
        try:
            if is_sdxl_checkpoint(read_safetensors_header(path)):
                sdxl.append(path.name)
        except (ValueError, OSError):
            continue
    fix = ("InstantID works with SDXL only: put an SDXL checkpoint (e.g. sd_xl_base_1.0.safetensors from "
           f"stabilityai/stable-diffusion-xl-base-1.0, or any SDXL fine-tune) in {folders[0] if folders else 'models/checkpoints'}.")
    if sdxl:
        return Finding("SDXL checkpoint", "ok", f"{len(sdxl)} SDXL checkpoint(s): {', '.join(sdxl[:5])}")
    if unchecked:
        return Finding("SDXL checkpoint", "warn", f"no SDXL safetensors checkpoint; not checked: {', '.join(unchecked[:5])}", fix)
    return Finding("SDXL checkpoint", "error" if not files else "warn",
                   f"no SDXL checkpoint in {', '.join(map(str, folders))}" + (f" (found {len(files)} other model(s))" if files else ""), fix)


# ---------------------------------------------------------------- running all checks


def host_version() -> str:
    import folder_paths

    version_file = Path(folder_paths.__file__).resolve().parent / "comfyui_version.py"
    if version_file.is_file():
        match = re.search(r"__version__\s*=\s*[\"']([^\"']+)", version_file.read_text())
        if match:
            return match.group(1)
    return "unknown"


def _folders(name: str) -> list[Path]:
    import folder_paths

    return [Path(p) for p in folder_paths.get_folder_paths(name)] if name in folder_paths.folder_names_and_paths else []


def run_checks(deep: bool = False) -> list[Finding]:
    """Every check against the running ComfyUI's folders (its extra_model_paths.yaml entries included)."""
    from .paths import register_adapter_folder

    register_adapter_folder()
    face_models.register_folder()
    findings = [check_host(host_version()), check_torch(), *check_insightface(), check_onnxruntime()]
    findings += check_adapters(_folders(ADAPTER_FOLDER), deep)
    findings += check_identitynet(_folders("controlnet"))
    findings += check_face_pack(face_models.insightface_roots())
    findings.append(check_checkpoints(_folders("checkpoints")))
    return findings


MARKS = {"ok": "[ok]   ", "warn": "[warn] ", "error": "[error]"}


def format_report(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{MARKS[f.status]} {f.check}: {f.detail}")
        if f.fix:
            lines.append(f"        fix: {f.fix}")
    errors = sum(f.status == "error" for f in findings)
    warnings = sum(f.status == "warn" for f in findings)
    lines.append(f"\n{errors} error(s), {warnings} warning(s)" + ("" if errors or warnings else ": InstantID is ready."))
    return "\n".join(lines)


def _boot_host(models_dir: Path | None) -> None:
    """Import the host's folder_paths the way its main.py would, outside a running ComfyUI."""
    sys.path.insert(0, str(PACK_DIR / "scripts"))
    from comfy_host import find_host

    host, how = find_host()
    sys.path.insert(0, str(host))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    if models_dir is None and how != "surrounding ComfyUI":
        comfy.cli_args.args.base_directory = str(PACK_DIR / ".host" / "base")  # where `make run` keeps its models
    import folder_paths

    if models_dir is not None:
        old, new = folder_paths.models_dir, str(models_dir.resolve())
        folder_paths.models_dir = new
        for name, (paths, exts) in list(folder_paths.folder_names_and_paths.items()):
            folder_paths.folder_names_and_paths[name] = ([p.replace(old, new, 1) if p.startswith(old) else p for p in paths], exts)
    extra = host / "extra_model_paths.yaml"
    if extra.is_file():
        import utils.extra_config

        utils.extra_config.load_extra_path_config(str(extra))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the InstantID setup: host, packages, model files.")
    parser.add_argument("--models-dir", type=Path, help="a ComfyUI models folder to check instead of the host's")
    parser.add_argument("--deep", action="store_true", help="also unpickle a full-size .bin adapter to check its keys (1.7 GB)")
    args = parser.parse_args(argv)
    if "folder_paths" not in sys.modules:
        _boot_host(args.models_dir)
    findings = run_checks(deep=args.deep)
    print(format_report(findings))
    return 1 if any(f.status == "error" for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
