"""Download the models InstantID needs into the host's model folders (`make models`).

    python scripts/download_models.py [--models-dir DIR] [--base-url URL] [--only NAME ...] [--list]

Files (from the authors' Hugging Face repositories):

- models/instantid/ip-adapter.bin                      InstantX/InstantID
- models/controlnet/instantid-controlnet.safetensors   InstantX/InstantID ControlNetModel/
- models/insightface/models/antelopev2/*.onnx           the InstantX/InstantID Space's antelopev2 copy

Plain HTTP(S) with the standard library: each file is written to ``<name>.part``
and resumed with a Range request when run again; its size (and sha256 where
one is recorded) is checked before it is moved into place, so a wrong or
truncated file is never left where ComfyUI looks. Files already present with
the right size are skipped. ``--base-url`` (or ``INSTANTID_DOWNLOAD_URL``, or
``HF_ENDPOINT`` as huggingface_hub uses it) points at a mirror.

The models directory is, unless ``--models-dir`` says otherwise: the ComfyUI
around the pack (``<ComfyUI>/models``), else the base directory ``make run``
uses for the pinned host (``.host/base/models``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_host import PACK_DIR, find_host  # noqa: E402

DEFAULT_BASE_URL = "https://huggingface.co"
ENV_BASE_URL = "INSTANTID_DOWNLOAD_URL"
CHUNK = 1 << 20
TIMEOUT_S = 30


@dataclass(frozen=True)
class ModelFile:
    """One file to fetch: ``<base url>/<url_path>`` -> ``<models dir>/<folder>/<filename>``.

    size: expected bytes (None: not recorded). sha256: expected hex digest (None: not recorded).
    """

    name: str
    url_path: str
    folder: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    licence: str = ""

    def target(self, models_dir: Path) -> Path:
        return models_dir / self.folder / self.filename


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile("adapter", "InstantX/InstantID/resolve/main/ip-adapter.bin", "instantid", "ip-adapter.bin",
              size=1_691_951_878, licence="Apache-2.0"),
    ModelFile("identitynet", "InstantX/InstantID/resolve/main/ControlNetModel/diffusion_pytorch_model.safetensors",
              "controlnet", "instantid-controlnet.safetensors", licence="Apache-2.0"),
    ModelFile("detector", "spaces/InstantX/InstantID/resolve/main/models/antelopev2/scrfd_10g_bnkps.onnx",
              "insightface/models/antelopev2", "scrfd_10g_bnkps.onnx", licence="insightface: non-commercial research only"),
    ModelFile("recognizer", "spaces/InstantX/InstantID/resolve/main/models/antelopev2/glintr100.onnx",
              "insightface/models/antelopev2", "glintr100.onnx", licence="insightface: non-commercial research only"),
)


class DownloadError(Exception):
    """A file could not be fetched or verified; the message says what to do."""


def default_models_dir() -> Path:
    host, how = find_host()
    if how == "surrounding ComfyUI":
        return host / "models"
    return PACK_DIR / ".host" / "base" / "models"  # what scripts/comfy_server.py (make run) passes as --base-directory


def default_base_url() -> str:
    return os.environ.get(ENV_BASE_URL) or os.environ.get("HF_ENDPOINT") or DEFAULT_BASE_URL


def _url(base_url: str, file: ModelFile) -> str:
    return base_url.rstrip("/") + "/" + file.url_path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _by_hand(url: str, target: Path) -> str:
    return f"download by hand from {url} into {target.parent} (as {target.name})"


def _fetch(url: str, part: Path, target: Path, log) -> None:
    """Append the rest of ``url`` to ``part``, resuming from its current length."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "instantid-download/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    host = urllib.parse.urlsplit(url).netloc
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the .part already holds the whole file
            return
        raise DownloadError(f"{host} answered {err.code} {err.reason} for {url}; {_by_hand(url, target)}.") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {host}: {reason}; {_by_hand(url, target)}.") from err
    with response:
        resumed = offset and response.status == 206
        if offset and not resumed:
            log(f"  {host} ignored the resume request; starting {target.name} again")
        total = response.headers.get("Content-Length")
        total = int(total) + (offset if resumed else 0) if total else None
        done = offset if resumed else 0
        step = max(total // 20, CHUNK) if total else 50 * CHUNK
        mark = done + step
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    done += len(block)
                    if done >= mark:
                        mark += step
                        log(f"  {target.name}: {done / 1e6:,.0f} MB" + (f" of {total / 1e6:,.0f} MB" if total else ""))
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(f"download of {url} broke off after {done:,} bytes ({err}); run the command again "
                                f"to resume from {part.name}.") from err


def download(file: ModelFile, models_dir: Path, base_url: str, log=print) -> str:
    """Fetch one file into place; returns 'present' or 'downloaded'. Raises DownloadError."""
    target = file.target(models_dir)
    url = _url(base_url, file)
    if target.is_file():
        size = target.stat().st_size
        if file.size is None or size == file.size:
            log(f"{file.name}: {target} already present ({size:,} bytes), skipped")
            return "present"
        log(f"{file.name}: {target} has {size:,} bytes, expected {file.size:,}; downloading it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if part.exists():
        log(f"{file.name}: resuming {part} at {part.stat().st_size:,} bytes")
    else:
        log(f"{file.name}: {url} -> {target}")
    _fetch(url, part, target, log)
    size = part.stat().st_size
    if file.size is not None and size != file.size:
        if size > file.size:
            part.unlink()
        raise DownloadError(f"{part.name} has {size:,} bytes, expected {file.size:,}"
                            + ("; removed it, run again." if size > file.size else "; run again to resume."))
    if file.sha256 is not None:
        digest = _sha256(part)
        if digest != file.sha256.lower():
            part.unlink()
            raise DownloadError(f"{target.name}: sha256 {digest} does not match the expected {file.sha256}; the file was "
                                f"removed. The mirror may serve another file: {_by_hand(url, target)}.")
    os.replace(part, target)
    log(f"{file.name}: saved {target} ({size:,} bytes)")
    return "downloaded"


def download_all(files: tuple[ModelFile, ...] | list[ModelFile], models_dir: Path, base_url: str, log=print) -> list[str]:
    """Fetch every file; return the error messages (empty when all are in place)."""
    errors = []
    for file in files:
        try:
            download(file, models_dir, base_url, log)
        except DownloadError as err:
            errors.append(f"{file.name}: {err}")
            log(f"{file.name}: ERROR {err}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download the InstantID models into ComfyUI's model folders.")
    parser.add_argument("--models-dir", type=Path, help="ComfyUI's models folder (default: the host's, see --list)")
    parser.add_argument("--base-url", default=None, help=f"mirror to download from (default ${ENV_BASE_URL}, $HF_ENDPOINT or {DEFAULT_BASE_URL})")
    parser.add_argument("--only", nargs="+", choices=[f.name for f in MODEL_FILES], help="fetch only these files")
    parser.add_argument("--list", action="store_true", help="show what would go where, download nothing")
    args = parser.parse_args(argv)
    models_dir = args.models_dir or default_models_dir()
    base_url = args.base_url or default_base_url()
    files = [f for f in MODEL_FILES if not args.only or f.name in args.only]
    if args.list:
        for f in files:
            print(f"{f.name:12} {_url(base_url, f)}\n{'':12} -> {f.target(models_dir)}  ({f.licence})")
        return 0
    print(f"Downloading {len(files)} file(s) into {models_dir} from {base_url}")
    errors = download_all(files, models_dir, base_url)
    if errors:
        print("\nNot everything could be downloaded:\n" + "\n".join(f"- {e}" for e in errors), file=sys.stderr)
        return 1
    print("All InstantID models are in place. Check the setup with `python -m instantid.doctor`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
