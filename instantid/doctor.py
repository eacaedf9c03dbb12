"""Install doctor: checks the host, the Python packages and every model file, each finding with its fix.

Run ``python -m instantid.doctor`` from the pack's folder with ComfyUI's
Python (``make doctor`` in a development checkout), or add the 'InstantID
Doctor' node in ComfyUI. Nothing large is loaded: model files are judged by
their published sizes and sha256 (``published.py``) and by their safetensors
headers (names and shapes only), so IdentityNet is found by its tensors
whatever its file name. An ``ip-adapter.bin`` of the published size is hashed
(as the loader does before unpickling it); another ``.bin`` is unpickled
(weights only) when it is small enough to be a wrong file, or with ``--deep``,
which also checks the sha256 of IdentityNet and the antelopev2 files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import face_models, published
from .doctor_env import Finding, check_host, check_insightface, check_onnxruntime, check_opencv, check_torch
from .errors import InstantIDError
from .model_files import SDXL_CONTEXT, controlnet_shape, is_sdxl_checkpoint, read_safetensors_header
from .paths import ADAPTER_FOLDER, download_models_dir

__all__ = ["Finding", "check_host", "check_insightface", "check_onnxruntime", "check_opencv", "check_torch", "main", "run_checks",
           "format_report"]

PACK_DIR = Path(__file__).resolve().parent.parent
KEY_CHECK_LIMIT = 400_000_000  # a .bin this small is unpickled to say what it is instead
IDENTITYNET_NAMES = ("instantid", "identitynet")  # only to explain a wrongly chosen file; IdentityNet is found by its tensors


def _download_hint(only: str) -> str:
    return published.download_hint(only, download_models_dir())


def _meta_tensors(header: dict) -> dict:
    import torch

    return {name: torch.empty(info["shape"], device="meta") for name, info in header.items()}


# ---------------------------------------------------------------- model files


def _files(folders: list[Path], extensions: tuple[str, ...]) -> list[Path]:
    found = []
    for folder in folders:
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    return found


def _verified(path: Path, file: published.PublishedFile, check: str, what: str) -> Finding:
    """A file of the published size: ok when its sha256 is the published one, else an error (damaged or another file)."""
    digest = published.sha256_file(path)  # remembered per unchanged file, shared with the adapter loader
    if digest == file.sha256:
        return Finding(check, "ok", f"{path}: {what}, the published {file.filename} ({file.size:,} bytes, sha256 verified)")
    return Finding(check, "error", f"{path} has the published size of {file.filename} ({file.size:,} bytes) but sha256 {digest}, "
                   f"not {file.sha256}: a damaged download or another file", f"Delete it and download it again. {_download_hint_for(file)}.")


def _download_hint_for(file: published.PublishedFile) -> str:
    only = {published.ADAPTER.filename: "adapter", published.IDENTITYNET.filename: "identitynet"}.get(file.filename, "antelopev2")
    return _download_hint(only)


def check_adapter_file(path: Path, deep: bool = False, file: published.PublishedFile = published.ADAPTER) -> Finding:
    """Is ``path`` the InstantID adapter? A pickle of the published size is hashed (as the loader does before unpickling);
    other sizes: keys from the safetensors header or, for a small or --deep .bin, from the pickle (weights only)."""
    from .adapter import derive_config, read_adapter_file, split_state_dict

    check = f"adapter {path.name}"
    size = path.stat().st_size
    fix_download = f"{_download_hint('adapter')}, or download {file.url} by hand into {path.parent}."
    try:
        if path.suffix.lower() == ".safetensors":
            sd = _meta_tensors(read_safetensors_header(path))
        elif size == file.size:
            return _verified(path, file, check, "InstantID adapter")
        elif size <= KEY_CHECK_LIMIT or deep:
            sd = read_adapter_file(str(path), file)
        else:
            return Finding(check, "warn", f"{path} has {size:,} bytes; the published {file.filename} has {file.size:,} "
                           "(an incomplete download or another file)", fix_download + " Or run the doctor with --deep to check its keys.")
        proj, kv = split_state_dict(sd, str(path))
        config, _ = derive_config(proj, kv, str(path))
    except (InstantIDError, ValueError, OSError) as exc:
        return Finding(check, "error", str(exc), fix_download + " Move other files out of the instantid folder.")
    if path.suffix.lower() == ".bin":
        return Finding(check, "warn", f"{path} has InstantID's keys (Resampler {config.dim}x{config.depth}) but {size:,} bytes, "
                       f"not the published {file.size:,}: a re-saved or converted copy", "If results look wrong: " + fix_download)
    return Finding(check, "ok", f"{path} ({size:,} bytes, InstantID keys, 70 face K/V layers; a safetensors re-pack)")


def check_adapters(folders: list[Path], deep: bool = False) -> list[Finding]:
    files = _files(folders, (".bin", ".safetensors", ".pt", ".pth", ".ckpt"))
    if not files:
        where = ", ".join(str(f) for f in folders) or "models/instantid (not registered)"
        into = folders[0] if folders else where
        return [Finding("InstantID adapter", "error", f"no adapter file in {where}",
                        f"{_download_hint('adapter')}, or download {published.ADAPTER.url} by hand into {into}.")]
    return [check_adapter_file(p, deep) for p in files]


def _identitynet_fix(folders: list[Path]) -> str:
    where = " or ".join(str(f) for f in folders) or "models/controlnet"
    return (f"{_download_hint('identitynet')}: it saves {published.IDENTITYNET.url} as instantid-controlnet.safetensors. "
            f"Or download that file by hand into {where}; any file name works.")


def _claims_identitynet(path: Path, file: published.PublishedFile) -> bool:
    """A file that was evidently meant as IdentityNet: named so, or of the published size."""
    return any(n in path.name.lower() for n in IDENTITYNET_NAMES) or path.stat().st_size == file.size


def check_identitynet(folders: list[Path], deep: bool = False, file: published.PublishedFile = published.IDENTITYNET) -> list[Finding]:
    """Find IdentityNet by its tensors (an SDXL ControlNet: 2048-wide cross-attention, RGB hint block), whatever its name.

    Any SDXL ControlNet has those tensors (depth, canny, ...), so the published size singles out the real file;
    --deep also checks its sha256. Unreadable files, and files named or sized like IdentityNet that are something
    else, are reported on their own.
    """
    fix = _identitynet_fix(folders)
    candidates: list[Path] = []
    problems: list[Finding] = []
    for path in _files(folders, (".safetensors", ".sft")):
        try:
            shape = controlnet_shape(read_safetensors_header(path))
        except (ValueError, OSError) as exc:
            problems.append(Finding(f"ControlNet {path.name}", "error", f"{path}: {exc}; ComfyUI cannot load it",
                                    f"Delete it or download it again. {fix}"))
            continue
        if shape.can_be_identitynet:
            candidates.append(path)
        elif _claims_identitynet(path, file):
            problems.append(Finding(f"IdentityNet {path.name}", "error", f"{path} is {shape.describe()}; IdentityNet is an SDXL "
                                    f"ControlNet with {SDXL_CONTEXT}-wide cross-attention and an RGB hint block", fix))
    exact = [p for p in candidates if p.stat().st_size == file.size]
    if exact:
        what = "IdentityNet (SDXL ControlNet tensors)"
        return [(_verified(p, file, f"IdentityNet {p.name}", what) if deep else
                 Finding(f"IdentityNet {p.name}", "ok", f"{p}: {what}, the published size ({file.size:,} bytes; --deep checks its sha256)"))
                for p in exact] + problems
    if candidates:
        listed = ", ".join(f"{p} ({p.stat().st_size:,} bytes)" for p in candidates)
        return [Finding("IdentityNet", "warn", f"SDXL ControlNets that can serve as IdentityNet by their tensors: {listed}; none has "
                        f"the published IdentityNet size ({file.size:,} bytes)",
                        "If one of them is IdentityNet (a converted or re-saved copy), pick it in 'Load ControlNet Model'; depth, "
                        f"canny and pose SDXL ControlNets have the same tensors but not the identity training. Otherwise: {fix}")] + problems
    if problems:
        return problems
    where = ", ".join(map(str, folders)) or "models/controlnet (not registered)"
    return [Finding("IdentityNet", "error", f"no SDXL ControlNet in {where}", fix)]


def check_face_pack(roots: list[Path], pack: str = face_models.DEFAULT_PACK, deep: bool = False) -> list[Finding]:
    fix = _download_hint("antelopev2")
    try:
        location = face_models.locate_pack(pack, roots)
    except face_models.FaceModelsError as exc:
        first = roots[0] / "models" / pack if roots else Path("models/insightface/models") / pack
        return [Finding(f"insightface {pack}", "error", str(exc), f"{fix}, or put scrfd_10g_bnkps.onnx and glintr100.onnx in {first}.")]
    found = []
    if location.nested:
        found.append(Finding(f"insightface {pack}", "warn", f"the files are in the nested folder {location.folder} (as the zip unpacks)",
                             f"This pack reads it, but other packs fail with `assert 'detection'`: move the .onnx files up to "
                             f"{location.folder.parent} and delete the empty {location.folder}."))
    else:
        found.append(Finding(f"insightface {pack}", "ok", f"{location.folder}"))
    for path in (location.detector, location.recognizer):
        file = published.FACE_FILES.get(path.name) if path is not None else None
        if file is None:
            continue
        size = path.stat().st_size
        if size == file.size:
            if deep:
                found.append(_verified(path, file, f"insightface {path.name}", "antelopev2 model"))
        elif size < file.size // 2:
            found.append(Finding(f"insightface {path.name}", "error", f"{path} has {size:,} bytes; the published file has {file.size:,} "
                                 "(an incomplete download or another file)", f"Delete it and download it again. {fix}."))
        else:
            found.append(Finding(f"insightface {path.name}", "warn", f"{path} has {size:,} bytes, not the published {file.size:,}: "
                                 "a re-exported or damaged copy", f"If faces are missed or identities look wrong: {fix}."))
    return found


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
    findings = [check_host(host_version()), check_torch(), *check_insightface(), check_onnxruntime(), check_opencv()]
    findings += check_adapters(_folders(ADAPTER_FOLDER), deep)
    findings += check_identitynet(_folders("controlnet"), deep)
    findings += check_face_pack(face_models.insightface_roots(), deep=deep)
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
    parser.add_argument("--deep", action="store_true", help="also check the sha256 of IdentityNet and the antelopev2 files (reads 2.8 GB) "
                        "and unpickle a large .bin adapter of another size to check its keys")
    args = parser.parse_args(argv)
    if "folder_paths" not in sys.modules:
        _boot_host(args.models_dir)
    findings = run_checks(deep=args.deep)
    print(format_report(findings))
    return 1 if any(f.status == "error" for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
