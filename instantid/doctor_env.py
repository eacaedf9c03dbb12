"""The doctor's checks of the Python side: ComfyUI version, torch, insightface, numpy, onnxruntime, OpenCV.

Doubled installs are the classic breakage here: onnxruntime and
onnxruntime-gpu (or opencv-python and opencv-python-headless) are different
distributions that write the same import package, so the one installed last
overwrites the other's files and uninstalling either deletes the module for
both. insightface 2.x (a pure-Python wheel) brings exactly such doubles: it
depends on ``onnxruntime`` (CPU) and ``opencv-python`` by name.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass

from . import face_models

MIN_HOST = (0, 3, 75)
OPENCV_DISTRIBUTIONS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
INSIGHTFACE_2X = '"insightface>=2.1,<3"'


@dataclass(frozen=True)
class Finding:
    """One check's result. status: 'ok', 'warn' or 'error'; fix: what to do (empty when ok)."""

    check: str
    status: str
    detail: str
    fix: str = ""


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


# ---------------------------------------------------------------- installed distributions


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """{distribution: version} for those of ``names`` that are installed, in the order given."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def required_by(names: set[str]) -> dict[str, list[str]]:
    """{name: installed distributions that require it by that exact name} (requirements behind extras left out)."""
    wanted = {_canonical(n): n for n in names}
    found: dict[str, list[str]] = {n: [] for n in names}
    for dist in importlib.metadata.distributions():
        for req in dist.requires or ():
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if match and "extra ==" not in req and _canonical(match.group(1)) in wanted:
                owner = dist.metadata["Name"] or "?"
                target = found[wanted[_canonical(match.group(1))]]
                if owner not in target:
                    target.append(owner)
    return found


def _requirers_note(removed: list[str], requirers: dict[str, list[str]]) -> str:
    notes = [f"{', '.join(requirers[name])} require{'s' if len(requirers[name]) == 1 else ''} `{name}` by name"
             for name in removed if requirers.get(name)]
    if not notes:
        return ""
    return (" " + "; ".join(notes) + ", so pip installs it again whenever it installs or upgrades "
            f"{'that package' if len(notes) == 1 else 'those packages'}: add `--no-deps` to such installs, or run these commands again.")


# ---------------------------------------------------------------- insightface and numpy


_NUMPY_ABI = ("numpy.dtype size changed", "compiled using NumPy 1", "_ARRAY_API", "numpy.core.multiarray failed")


def insightface_version() -> str:
    try:
        return importlib.metadata.version("insightface")
    except importlib.metadata.PackageNotFoundError:
        import insightface

        return getattr(insightface, "__version__", "unknown")


def insightface_supported(version: str) -> bool:
    """0.7.3 (source archive) and the 2.x pure-Python wheels are the versions the face path is tested with."""
    parts = _version_tuple(version)
    return parts[:3] == (0, 7, 3) or (len(parts) > 0 and parts[0] == 2)


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
                Finding("numpy", "error", f"numpy {numpy_version}: the installed insightface 0.7.3 build was compiled against "
                        "numpy 1 and fails to import under numpy 2",
                        f"Either move to insightface 2.x, a pure-Python wheel: `python -m pip install --upgrade {INSIGHTFACE_2X}`; "
                        "or `python -m pip install \"numpy<2\"`; or rebuild 0.7.3 for numpy 2: "
                        "`python -m pip install --force-reinstall --no-binary insightface insightface==0.7.3` (needs a C++ compiler)."),
            ]
        return [Finding("insightface", "error", str(exc), face_models.INSTALL_HINT),
                Finding("numpy", "ok", f"numpy {numpy_version}")]
    version = insightface_version()
    found = [Finding("numpy", "ok", f"numpy {numpy_version}")]
    if not insightface_supported(version):
        found.insert(0, Finding("insightface", "warn", f"insightface {version}; the pack is tested with 0.7.3 and 2.x",
                                f"`python -m pip install --upgrade {INSIGHTFACE_2X}` (a pure-Python wheel, no compiler needed) "
                                "if face analysis misbehaves."))
    elif _version_tuple(version)[0] == 2:
        found.insert(0, Finding("insightface", "ok", f"insightface {version} (pure-Python wheel)"))
    else:
        found.insert(0, Finding("insightface", "ok", f"insightface {version}"))
    return found


# ---------------------------------------------------------------- onnxruntime and OpenCV


def check_onnxruntime() -> Finding:
    names = face_models.installed_onnxruntimes()
    if not names:
        return Finding("onnxruntime", "error", "no onnxruntime build is installed (insightface needs one)",
                       "`python -m pip install onnxruntime` (CPU) or `python -m pip install onnxruntime-gpu` (CUDA), never both.")
    conflict = face_models.onnxruntime_conflict()
    if conflict:
        keep = "onnxruntime-gpu" if "onnxruntime-gpu" in names else names[-1]
        removed = [n for n in names if n != keep]
        return Finding("onnxruntime", "error", f"several onnxruntime builds installed: {', '.join(names)}",
                       conflict + _requirers_note(removed, required_by(set(removed))))
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


def _opencv_to_keep(installed: list[str]) -> str:
    # ComfyUI never opens an OpenCV window, and the headless builds import without system GUI libraries (libGL);
    # a contrib build is a superset of the plain one, so a pack that installed contrib keeps its extra modules.
    contrib = any("contrib" in name for name in installed)
    return "opencv-contrib-python-headless" if contrib else "opencv-python-headless"


def _cv2_version() -> tuple[str | None, str]:
    try:
        import cv2
    except Exception as exc:  # noqa: BLE001 - ImportError, or a missing system library raised as OSError
        return None, f"{type(exc).__name__}: {exc}"
    return getattr(cv2, "__version__", "unknown"), ""


def check_opencv() -> Finding:
    """Exactly one OpenCV distribution should own the ``cv2`` package (insightface imports it)."""
    installed = installed_versions(OPENCV_DISTRIBUTIONS)
    cv2_version, error = _cv2_version()
    if not installed:
        if cv2_version:
            return Finding("OpenCV", "ok", f"cv2 {cv2_version} (not from a pip distribution)")
        return Finding("OpenCV", "error", f"no OpenCV is installed ({error}); insightface needs cv2",
                       "`python -m pip install opencv-python-headless`")
    names = list(installed)
    listed = ", ".join(f"{name} {version}" for name, version in installed.items())
    if len(names) == 1:
        if cv2_version is None:
            return Finding("OpenCV", "error", f"{listed} is installed but cv2 does not import ({error})",
                           f"`python -m pip install --force-reinstall {names[0]}`" + (
                               "; on a Linux server without a desktop use opencv-python-headless instead (no libGL needed)"
                               if "headless" not in names[0] else ""))
        return Finding("OpenCV", "ok", f"{listed} (cv2 {cv2_version})")
    keep = _opencv_to_keep(names)
    removed = [n for n in names if n != keep]
    requirers = required_by(set(names))
    owners = "; ".join(f"{n} required by {', '.join(r)}" for n, r in requirers.items() if r)
    broken = cv2_version is None or len(set(installed.values())) > 1
    state = f"cv2 does not import ({error})" if cv2_version is None else f"cv2 {cv2_version} imports"
    return Finding(
        "OpenCV", "error" if broken else "warn",
        f"several OpenCV builds own the same cv2 folder: {listed}{f' ({owners})' if owners else ''}; {state}. "
        "The one installed last overwrote the others' files, and uninstalling any of them later deletes cv2 for all.",
        f"`python -m pip uninstall -y {' '.join(names)}` then `python -m pip install {keep}`." + _requirers_note(removed, requirers),
    )
