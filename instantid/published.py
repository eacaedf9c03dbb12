"""The published model files InstantID uses: exact sizes, sha256 digests and sources.

The single record of these facts (from the public manifests, see the spec's
"published files" table). ``scripts/download_models.py`` fetches and verifies
against it, the doctor compares installed files with it, and the adapter
loader refuses a pickle that has the published adapter's size but not its
digest before unpickling it.

Hashing a 1.7 GB file takes seconds, so a verified digest is remembered per
(file, size, mtime, ctime, inode) for the life of the process: the doctor
node and a later adapter load in the same ComfyUI share one hash.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
DOWNLOAD_SCRIPT = PACK_DIR / "scripts" / "download_models.py"

_HF_REPO = "https://huggingface.co/InstantX/InstantID/resolve/main/"
# insightface 0.7.3 downloads its model packs from this release (insightface/utils/storage.py, BASE_REPO_URL).
_INSIGHTFACE_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7/"


@dataclass(frozen=True)
class PublishedFile:
    """One published file. url is empty for files that come only inside an archive (``archive`` names it)."""

    filename: str
    size: int
    sha256: str
    url: str = ""
    archive: str = ""


ADAPTER = PublishedFile("ip-adapter.bin", 1_691_134_141,
                        "02b3618e36d803784166660520098089a81388e61a93ef8002aa79a5b1c546e1",
                        _HF_REPO + "ip-adapter.bin")
IDENTITYNET = PublishedFile("diffusion_pytorch_model.safetensors", 2_502_139_136,
                            "c8127be9f174101ebdafee9964d856b49b634435cf6daa396d3f593cf0bbbb05",
                            _HF_REPO + "ControlNetModel/diffusion_pytorch_model.safetensors")
ANTELOPEV2_ZIP = PublishedFile("antelopev2.zip", 360_662_982,
                               "8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5",
                               _INSIGHTFACE_RELEASE + "antelopev2.zip")
DETECTOR = PublishedFile("scrfd_10g_bnkps.onnx", 16_923_827,
                         "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", archive="antelopev2.zip")
RECOGNIZER = PublishedFile("glintr100.onnx", 260_665_334,
                           "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf", archive="antelopev2.zip")
# The zip's other models: InstantID never loads them (sizes only; no digest is recorded).
UNUSED_IN_ANTELOPEV2 = {"1k3d68.onnx": 143_607_619, "2d106det.onnx": 5_030_888, "genderage.onnx": 1_322_532}

FACE_FILES = {f.filename: f for f in (DETECTOR, RECOGNIZER)}
ALL = (ADAPTER, IDENTITYNET, ANTELOPEV2_ZIP, DETECTOR, RECOGNIZER)

CHUNK = 1 << 20
_digests: dict[tuple, str] = {}
_lock = threading.Lock()


def _identity(path: Path) -> tuple:
    st = path.stat()
    # ctime and inode cannot be set back by hand the way mtime can (touch -r): a swapped file gets a new key.
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: os.PathLike | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks; remembered while the file is unchanged."""
    path = Path(path)
    key = _identity(path)
    with _lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    hexdigest = digest.hexdigest()
    with _lock:
        _digests[key] = hexdigest
    return hexdigest


def is_published(path: os.PathLike | str, published: PublishedFile) -> bool:
    """True when the file has the published size and sha256 (hashed only when the size matches)."""
    path = Path(path)
    return path.stat().st_size == published.size and sha256_file(path) == published.sha256


def _quoted(text: str) -> str:
    return f'"{text}"' if any(c.isspace() for c in text) else text


def download_command(only: str | None = None, models_dir: os.PathLike | str | None = None) -> str:
    """The download script's command line for this install, with the Python that is running now.

    Inside ComfyUI that is ComfyUI's own Python (portable builds included), so
    the command is right for Manager/registry installs, where `make` is not.
    """
    parts = [_quoted(sys.executable), _quoted(str(DOWNLOAD_SCRIPT))]
    if only:
        parts += ["--only", only]
    if models_dir is not None:
        parts += ["--models-dir", _quoted(str(models_dir))]
    return " ".join(parts)


def download_hint(only: str | None = None, models_dir: os.PathLike | str | None = None) -> str:
    """The first fix for a missing or damaged model file: run the pack's download script with ComfyUI's Python."""
    return f"Run `{download_command(only, models_dir)}` (the pack's download script, with ComfyUI's Python; it checks sha256)"


def face_pack_source(pack: str) -> str:
    """Where an insightface pack comes from, for a message naming it missing (antelopev2 only; others are put in by hand)."""
    if pack != "antelopev2":
        return ""
    return f"The pack is published as {ANTELOPEV2_ZIP.url} (unzip it into <insightface folder>/models/)."
