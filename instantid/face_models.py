"""Where insightface model packs live, and loading one as a :class:`FaceAnalyzer`.

Folder layout. ComfyUI's folder system gets a model folder named
``insightface`` (default ``<ComfyUI>/models/insightface``; users may add more
through ``extra_model_paths.yaml`` under the key ``insightface``). Each such
folder is an *insightface root*; a model pack is a folder of ``.onnx`` files
found at the first of:

1. ``<root>/models/<pack>/``            (classic insightface layout)
2. ``<root>/models/<pack>/<pack>/``     (the public antelopev2 zip unpacked in place)
3. ``<root>/<pack>/`` and ``<root>/<pack>/<pack>/`` (root pointed at ``models``)

The nested layout is used as it is (and logged), because only the two
files InstantID needs are loaded, straight from the folder that holds them:
insightface's ``FaceAnalysis`` (which asserts on the layout, builds a session
for every file in the pack and may try a download) is never used.

Only the detector and the recognizer are loaded (the ``detection`` and
``recognition`` tasks); the pack's landmark and gender/age models cost
memory and a run per face and InstantID needs neither.

insightface and onnxruntime are imported on first use, so a missing or
broken install only fails the loader node, with the exact ``pip`` command.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InstantIDError
from .paths import register_folder as _register_model_folder

log = logging.getLogger(__name__)

FOLDER_NAME = "insightface"
DEFAULT_PACK = "antelopev2"
DEFAULT_DET_SIZE = 640

# (detector file, recognizer file) of the packs insightface publishes.
PACK_FILES: dict[str, tuple[str, str]] = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "buffalo_m": ("det_2.5g.onnx", "w600k_r50.onnx"),
    "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx"),
    "buffalo_sc": ("det_500m.onnx", "w600k_mbf.onnx"),
}
FILE_NOTES = {
    "scrfd_10g_bnkps.onnx": "face detector, ~16.9 MB",
    "glintr100.onnx": "ArcFace recognizer, ~261 MB",
}

# User-facing provider name -> onnxruntime execution provider.
PROVIDERS: dict[str, str] = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "DirectML": "DmlExecutionProvider",
}
ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-silicon",
    "onnxruntime-openvino",
    "onnxruntime-rocm",
)
# insightface 2.x is a pure-Python wheel (no compiler needed) and is what a fresh install picks; 0.7.3 (source
# only, needs a C++ compiler) keeps working where it is already installed. Both are tested.
INSIGHTFACE_REQUIREMENT = "insightface>=0.7.3,<3"
TESTED_INSIGHTFACE = ("0.7.3", "2.1")
INSTALL_HINT = (
    "Install them into the Python that runs ComfyUI: `python -m pip install insightface onnxruntime` (a fresh install "
    f"gets the insightface 2.x wheel, no compiler needed; the pack supports {INSIGHTFACE_REQUIREMENT}). For CUDA use "
    "`onnxruntime-gpu` instead of `onnxruntime`, never both."
)


class FaceModelsError(InstantIDError, FileNotFoundError):
    """A model pack is missing or incomplete; the message names files and folders."""


class InsightFaceUnavailableError(InstantIDError, ImportError):
    """insightface or onnxruntime cannot be imported; the message says what to install."""


# ---------------------------------------------------------------- folders


def register_folder() -> None:
    """Register the ``insightface`` model folder with ComfyUI, keeping user entries.

    If ``extra_model_paths.yaml`` already created the key, the default folder is
    appended to its list instead of replacing it.
    """
    _register_model_folder(FOLDER_NAME, FOLDER_NAME, {".onnx"})


def insightface_roots() -> list[Path]:
    """Every registered insightface root, in ComfyUI's search order."""
    try:
        import folder_paths
    except ImportError:
        return []
    if FOLDER_NAME not in folder_paths.folder_names_and_paths:
        register_folder()
    return [Path(p) for p in folder_paths.get_folder_paths(FOLDER_NAME)]


def _has_onnx(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() == ".onnx" for p in folder.iterdir())


def _pack_candidates(root: Path, pack: str) -> list[Path]:
    return [
        root / "models" / pack,
        root / "models" / pack / pack,
        root / pack,
        root / pack / pack,
    ]


def find_packs(roots: list[Path] | None = None) -> dict[str, Path]:
    """Pack name -> folder holding its ``.onnx`` files; the first root wins."""
    found: dict[str, Path] = {}
    for root in insightface_roots() if roots is None else roots:
        for base in (root / "models", root):
            if not base.is_dir():
                continue
            for sub in sorted(base.iterdir()):
                if not sub.is_dir() or sub.name == "models" or sub.name in found:
                    continue
                for folder in (sub, sub / sub.name):
                    if _has_onnx(folder):
                        found[sub.name] = folder
                        break
    return found


@dataclass(frozen=True)
class PackLocation:
    """Where a pack's two needed files are.

    folder: the folder holding the files. nested: found in ``<pack>/<pack>/``.
    detector / recognizer: the files to load, or ``None`` for an unknown pack
    whose files are recognised by routing each one.
    """

    name: str
    folder: Path
    nested: bool
    detector: Path | None
    recognizer: Path | None


def locate_pack(pack: str, roots: list[Path] | None = None) -> PackLocation:
    """Find ``pack`` in the insightface roots; raise :class:`FaceModelsError` naming what is missing."""
    roots = insightface_roots() if roots is None else roots
    searched: list[Path] = []
    incomplete: list[tuple[Path, list[str]]] = []
    needed = PACK_FILES.get(pack)
    for root in roots:
        for folder in _pack_candidates(root, pack):
            searched.append(folder)
            if not _has_onnx(folder):
                continue
            nested = folder.name == pack and folder.parent.name == pack
            if needed is None:
                return PackLocation(pack, folder, nested, None, None)
            missing = [name for name in needed if not (folder / name).is_file()]
            if not missing:
                if nested:
                    log.info(
                        "InstantID: using the nested insightface layout %s; it works as it is "
                        "(moving the files up one level to %s is the classic layout).",
                        folder,
                        folder.parent,
                    )
                return PackLocation(pack, folder, nested, folder / needed[0], folder / needed[1])
            incomplete.append((folder, missing))
    if incomplete:
        folder, missing = incomplete[0]
        described = ", ".join(f"{m} ({FILE_NOTES[m]})" if m in FILE_NOTES else m for m in missing)
        raise FaceModelsError(
            f"insightface model pack '{pack}' is incomplete in {folder}: missing {described}. "
            f"{_download_advice(pack)}Put the missing file(s) in that folder (InstantID needs {' and '.join(needed or ())})."
        )
    expected = ", ".join(needed) if needed else "the pack's .onnx files"
    where = "; ".join(str(p) for p in searched) or "(no insightface folder is registered)"
    first = roots[0] / "models" / pack if roots else Path("models/insightface/models") / pack
    raise FaceModelsError(
        f"insightface model pack '{pack}' not found. Looked in: {where}. "
        f"{_download_advice(pack)}Put {expected} in {first} (or add an `insightface:` entry to extra_model_paths.yaml "
        "pointing at a folder with models/<pack>/ inside). Nothing is downloaded automatically."
    )


def _download_advice(pack: str) -> str:
    """The pack's download script fetches antelopev2 (from insightface's release zip); other packs are put in by hand."""
    if pack != DEFAULT_PACK:
        return ""
    from .paths import download_models_dir
    from .published import download_hint

    return f"{download_hint('antelopev2', download_models_dir())}. Or: "


# ---------------------------------------------------------------- runtime


def installed_onnxruntimes() -> list[str]:
    """Names of the onnxruntime distributions installed (more than one is a conflict)."""
    names = []
    for dist in ONNXRUNTIME_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        names.append(dist)
    return names


def onnxruntime_conflict() -> str | None:
    """A warning when several onnxruntime builds are installed side by side, else ``None``."""
    names = installed_onnxruntimes()
    if len(names) <= 1:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in names else names[-1]
    others = " ".join(n for n in names if n != keep)
    return (
        f"Several onnxruntime builds are installed ({', '.join(names)}); they share one import name and "
        f"overwrite each other's files, so GPU providers go missing or crash. Keep one: "
        f"`python -m pip uninstall -y {' '.join(names)}` then `python -m pip install {keep}` "
        f"(you may instead just uninstall {others})."
    )


def available_providers() -> list[str]:
    """Provider names to offer: always ``CPU``, plus those onnxruntime reports."""
    try:
        import onnxruntime

        reported = set(onnxruntime.get_available_providers())
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop the pack from loading
        log.debug("onnxruntime unavailable while listing providers: %s", exc)
        return ["CPU"]
    return [name for name, ep in PROVIDERS.items() if name == "CPU" or ep in reported]


def import_insightface() -> Any:
    """Import insightface (and onnxruntime); raise :class:`InsightFaceUnavailableError` with the fix."""
    for module, dist in (
        ("onnxruntime", "onnxruntime"),
        ("insightface", INSIGHTFACE_REQUIREMENT),
    ):
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a DLL/ABI error raised as OSError
            raise InsightFaceUnavailableError(
                f"InstantID face analysis needs the `{dist}` package (module `{module}`), which could not be imported "
                f"({type(exc).__name__}: {exc}). {INSTALL_HINT}"
            ) from exc
    import insightface

    return insightface


def _router_options() -> dict[str, Any]:
    """Options of insightface's model router that only some versions take."""
    from insightface.model_zoo import scrfd

    if "static_shape_sessions" in inspect.signature(scrfd.SCRFD.__init__).parameters:
        # insightface 2.x builds one more fixed-shape detector session per detection size by default: the retry
        # ladder (640, 576, ... 192) would compile up to 8 copies of the detector. One dynamic session, as in 0.7.3.
        return {"static_shape_sessions": False}
    return {}


def _make_model(path: Path, providers: list[str]) -> Any:
    """One insightface model (routed by its ONNX signature); insightface's prints go to the debug log."""
    from insightface.model_zoo import model_zoo

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        model = model_zoo.get_model(str(path), providers=providers, **_router_options())
    if captured.getvalue().strip():
        log.debug("insightface: %s", captured.getvalue().strip())
    return model


# ---------------------------------------------------------------- analyzer


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One detector hit in source pixels: bbox ``[4]`` x1,y1,x2,y2, keypoints ``[5,2]``, score."""

    bbox: np.ndarray
    keypoints: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return max(0.0, float(self.bbox[2] - self.bbox[0])) * max(0.0, float(self.bbox[3] - self.bbox[1]))


class FaceAnalyzer:
    """insightface's detector and recognizer for one pack (INSTANTID_FACE_ANALYZER).

    Holds no per-call state: the detection size is an argument of
    :meth:`detect`, never set on the shared detector, so one analyzer can
    serve several nodes and threads at once.
    """

    def __init__(
        self,
        pack: str,
        folder: Path,
        detector: Any,
        recognizer: Any,
        det_size: int,
        provider: str,
    ):
        self.pack = pack
        self.folder = folder
        self.detector = detector
        self.recognizer = recognizer
        self.det_size = int(det_size)
        self.provider = provider

    def __repr__(self) -> str:
        return f"FaceAnalyzer(pack={self.pack!r}, det_size={self.det_size}, provider={self.provider!r})"

    def detect(self, bgr: np.ndarray, det_size: int | None = None) -> list[DetectedFace]:
        """Faces in a BGR uint8 ``[H,W,3]`` image, detected at ``det_size`` (square), best score first."""
        size = int(det_size or self.det_size)
        boxes, kps = self.detector.detect(bgr, input_size=(size, size))
        faces = []
        for i in range(boxes.shape[0]):
            faces.append(
                DetectedFace(
                    bbox=boxes[i, :4].astype(np.float32),
                    keypoints=np.asarray(kps[i], dtype=np.float32).reshape(5, 2),
                    score=float(boxes[i, 4]),
                )
            )
        return faces

    def embed(self, bgr: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) ArcFace embedding ``[512]`` float32 of the face at ``keypoints`` (source pixels)."""
        from insightface.utils import face_align

        with warnings.catch_warnings():
            # scikit-image >= 0.26 deprecates the estimate() call insightface 0.7.3 makes.
            warnings.simplefilter("ignore", FutureWarning)
            crop = face_align.norm_crop(
                bgr,
                landmark=np.asarray(keypoints, dtype=np.float32),
                image_size=self.recognizer.input_size[0],
            )
        return np.asarray(self.recognizer.get_feat(crop), dtype=np.float32).reshape(-1)


def load_analyzer(
    pack: str = DEFAULT_PACK,
    provider: str = "CPU",
    det_size: int = DEFAULT_DET_SIZE,
    roots: list[Path] | None = None,
) -> FaceAnalyzer:
    """Load the detector and recognizer of ``pack`` for ``provider`` (CPU fallback always listed)."""
    if det_size < 64 or det_size % 32:
        raise ValueError(f"detection size must be a multiple of 32, at least 64 (got {det_size}).")
    location = locate_pack(pack, roots)  # before any import: a missing pack never triggers a download
    import_insightface()
    conflict = onnxruntime_conflict()
    if conflict:
        log.warning("InstantID: %s", conflict)
    if provider not in PROVIDERS:
        raise ValueError(f"Unknown execution provider {provider!r}; expected one of {list(PROVIDERS)}.")
    if provider not in available_providers():
        log.warning(
            "InstantID: onnxruntime does not offer %s here (it reports %s); using CPU.",
            provider,
            ", ".join(available_providers()),
        )
        provider = "CPU"
    providers = [PROVIDERS[provider]] + ([] if provider == "CPU" else ["CPUExecutionProvider"])
    detector, recognizer = _load_pair(location, providers)
    active = detector.session.get_providers()
    if PROVIDERS[provider] not in active:
        log.warning(
            "InstantID: %s failed to start; face analysis runs on %s.",
            provider,
            ", ".join(active),
        )
        provider = "CPU"
    return FaceAnalyzer(pack, location.folder, detector, recognizer, det_size, provider)


def _load_pair(location: PackLocation, providers: list[str]) -> tuple[Any, Any]:
    if location.detector is not None and location.recognizer is not None:
        detector = _make_model(location.detector, providers)
        recognizer = _make_model(location.recognizer, providers)
        for model, path, task in (
            (detector, location.detector, "detection"),
            (recognizer, location.recognizer, "recognition"),
        ):
            if model is None or model.taskname != task:
                raise FaceModelsError(
                    f"{path} is not an insightface {task} model (insightface routed it as "
                    f"{getattr(model, 'taskname', 'nothing')}). Re-download the '{location.name}' pack."
                )
        return detector, recognizer
    # Unknown pack: route each file like insightface does, keep the first of each task.
    found: dict[str, Any] = {}
    for path in sorted(location.folder.glob("*.onnx")):
        model = _make_model(path, providers)
        task = getattr(model, "taskname", None)
        if task in ("detection", "recognition") and task not in found:
            found[task] = model
        if len(found) == 2:
            break
    missing = [t for t in ("detection", "recognition") if t not in found]
    if missing:
        raise FaceModelsError(
            f"insightface model pack '{location.name}' in {location.folder} has no {' and no '.join(missing)} "
            "model (.onnx file that insightface recognises). Use a complete pack such as antelopev2."
        )
    return found["detection"], found["recognition"]
