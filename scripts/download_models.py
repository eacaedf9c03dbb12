"""Download the models InstantID needs into ComfyUI's model folders, each checked against its published sha256.

    python scripts/download_models.py [--models-dir DIR] [--only NAME ...] [--list]
                                      [--base-url URL] [--github-url URL]

Run it with the Python that runs ComfyUI (portable Windows build, from the
pack's folder: ``..\\..\\..\\python_embeded\\python.exe scripts\\download_models.py``).

Files (sizes and digests: ``instantid/published.py``):

- models/instantid/ip-adapter.bin                     InstantX/InstantID on Hugging Face
- models/controlnet/instantid-controlnet.safetensors  InstantX/InstantID ControlNetModel/diffusion_pytorch_model.safetensors
- models/insightface/models/antelopev2/               scrfd_10g_bnkps.onnx + glintr100.onnx, taken out of
                                                      antelopev2.zip of insightface's GitHub release v0.7

Plain HTTP(S) with the standard library: each download is written to
``<name>.part`` and resumed with a Range request when run again; its size and
sha256 are checked before it is moved into place, so a wrong or truncated file
never sits where ComfyUI looks. From the zip only the detector and the
recogniser are extracted (wherever the zip keeps them, e.g. a nested
``antelopev2/antelopev2/``), each checked against its own digest, and the zip
is deleted. Files already present are kept when their sha256 is the published
one. ``--base-url`` (or ``INSTANTID_DOWNLOAD_URL``, or ``HF_ENDPOINT`` as
huggingface_hub uses it) points at a Hugging Face mirror, ``--github-url`` (or
``INSTANTID_GITHUB_URL``) at a GitHub mirror.

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
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_host import PACK_DIR, find_host  # noqa: E402

sys.path.insert(0, str(PACK_DIR))
from instantid import published  # noqa: E402  (a plain module: no torch, no ComfyUI)

SITES = {"huggingface": "https://huggingface.co", "github": "https://github.com"}
ENV_BASE_URL = "INSTANTID_DOWNLOAD_URL"
ENV_GITHUB_URL = "INSTANTID_GITHUB_URL"
DEFAULT_BASE_URL = SITES["huggingface"]
CHUNK = 1 << 20
TIMEOUT_S = 30
INSIGHTFACE_LICENCE = "insightface: non-commercial research only"
Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelFile:
    """One file to fetch: ``<site url>/<url_path>`` -> ``<models dir>/<folder>/<filename>``, checked by size and sha256."""

    name: str
    url_path: str
    folder: str
    filename: str
    size: int
    sha256: str
    site: str = "huggingface"
    licence: str = ""

    def target(self, models_dir: Path) -> Path:
        return models_dir / self.folder / self.filename


@dataclass(frozen=True)
class ArchiveMember:
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelArchive:
    """A zip to fetch (checked by size and sha256) of which only ``members`` are kept, in ``<models dir>/<folder>/``."""

    name: str
    url_path: str
    folder: str
    archive: str
    size: int
    sha256: str
    members: tuple[ArchiveMember, ...]
    site: str = "github"
    licence: str = ""

    def targets(self, models_dir: Path) -> list[Path]:
        return [models_dir / self.folder / m.filename for m in self.members]

    def download_path(self, models_dir: Path) -> Path:
        return models_dir / self.folder / self.archive


def _path_of(url: str, site: str) -> str:
    prefix = SITES[site] + "/"
    assert url.startswith(prefix), url
    return url[len(prefix):]


def _member(file: published.PublishedFile) -> ArchiveMember:
    return ArchiveMember(file.filename, file.size, file.sha256)


MODEL_FILES: tuple[ModelFile | ModelArchive, ...] = (
    ModelFile("adapter", _path_of(published.ADAPTER.url, "huggingface"), "instantid", "ip-adapter.bin",
              published.ADAPTER.size, published.ADAPTER.sha256, licence="Apache-2.0"),
    ModelFile("identitynet", _path_of(published.IDENTITYNET.url, "huggingface"), "controlnet", "instantid-controlnet.safetensors",
              published.IDENTITYNET.size, published.IDENTITYNET.sha256, licence="Apache-2.0"),
    ModelArchive("antelopev2", _path_of(published.ANTELOPEV2_ZIP.url, "github"), "insightface/models/antelopev2",
                 published.ANTELOPEV2_ZIP.filename, published.ANTELOPEV2_ZIP.size, published.ANTELOPEV2_ZIP.sha256,
                 (_member(published.DETECTOR), _member(published.RECOGNIZER)), licence=INSIGHTFACE_LICENCE),
)


class DownloadError(Exception):
    """A file could not be fetched or verified; the message says what to do."""


def default_models_dir() -> Path:
    host, how = find_host()
    if how == "surrounding ComfyUI":
        return host / "models"
    return PACK_DIR / ".host" / "base" / "models"  # what scripts/comfy_server.py (make run) passes as --base-directory


def default_sites() -> dict[str, str]:
    return {"huggingface": os.environ.get(ENV_BASE_URL) or os.environ.get("HF_ENDPOINT") or SITES["huggingface"],
            "github": os.environ.get(ENV_GITHUB_URL) or SITES["github"]}


def default_base_url() -> str:
    return default_sites()["huggingface"]


def _url(sites: Mapping[str, str], file: ModelFile | ModelArchive) -> str:
    return sites[file.site].rstrip("/") + "/" + file.url_path


def _by_hand(url: str, target: Path) -> str:
    return f"download by hand from {url} into {target.parent} (as {target.name})"


def _fetch(url: str, part: Path, target: Path, log: Log) -> None:
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


def _is_published(path: Path, size: int, sha256: str, log: Log) -> bool:
    if path.stat().st_size != size:
        return False
    if size > 100 * CHUNK:
        log(f"  checking the sha256 of {path} ({size / 1e6:,.0f} MB)")
    return published.sha256_file(path) == sha256


def _fetch_verified(url: str, target: Path, size: int, sha256: str, log: Log) -> None:
    """Download ``url`` via ``<target>.part`` (resumed) and move it to ``target`` once size and sha256 match."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if part.exists():
        log(f"  resuming {part} at {part.stat().st_size:,} bytes")
    else:
        log(f"  {url} -> {target}")
    _fetch(url, part, target, log)
    got = part.stat().st_size
    if got != size:
        if got > size:
            part.unlink()
        raise DownloadError(f"{part.name} has {got:,} bytes, the published file {size:,}"
                            + ("; removed it, run again." if got > size else "; run again to resume."))
    digest = published.sha256_file(part)
    if digest != sha256:
        part.unlink()
        raise DownloadError(f"{target.name}: sha256 {digest} does not match the published {sha256}; the file was "
                            f"removed. The server may serve another file: {_by_hand(url, target)}.")
    os.replace(part, target)


def download(file: ModelFile, models_dir: Path, sites: Mapping[str, str], log: Log = print) -> str:
    """Fetch one file into place; returns 'present' or 'downloaded'. Raises DownloadError."""
    target = file.target(models_dir)
    if target.is_file():
        if _is_published(target, file.size, file.sha256, log):
            log(f"{file.name}: {target} already present (published size and sha256), skipped")
            return "present"
        log(f"{file.name}: {target} is not the published file ({target.stat().st_size:,} bytes, or another sha256); "
            "downloading it again")
    log(f"{file.name}:")
    _fetch_verified(_url(sites, file), target, file.size, file.sha256, log)
    log(f"{file.name}: saved {target} ({file.size:,} bytes, sha256 verified)")
    return "downloaded"


def _zip_entry(zf: zipfile.ZipFile, filename: str) -> zipfile.ZipInfo | None:
    """The entry named ``filename`` at any depth (the zip may nest antelopev2/antelopev2/); macOS resource forks skipped."""
    for info in zf.infolist():
        parts = info.filename.replace("\\", "/").split("/")
        if parts[-1] == filename and "__MACOSX" not in parts and not info.is_dir():
            return info
    return None


def _extract(zf: zipfile.ZipFile, member: ArchiveMember, target: Path, zip_path: Path) -> None:
    """Stream one entry to ``<target>.part``, check its sha256, move it into place. The entry's path is never used."""
    info = _zip_entry(zf, member.filename)
    if info is None:
        listing = ", ".join(i.filename for i in zf.infolist()[:8])
        raise DownloadError(f"{zip_path.name} has no {member.filename} (it holds {listing}); the archive is not the "
                            "published antelopev2.zip.")
    if info.file_size != member.size:
        raise DownloadError(f"{info.filename} in {zip_path.name} has {info.file_size:,} bytes, the published "
                            f"{member.filename} {member.size:,}.")
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with zf.open(info) as src, open(part, "wb") as out:
        while block := src.read(CHUNK):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != member.sha256:
        part.unlink()
        raise DownloadError(f"{member.filename} from {zip_path.name}: sha256 {digest.hexdigest()} does not match the "
                            f"published {member.sha256}.")
    os.replace(part, target)


def download_archive(archive: ModelArchive, models_dir: Path, sites: Mapping[str, str], log: Log = print) -> str:
    """Fetch the zip, keep only its members (each verified), delete the zip; returns 'present' or 'downloaded'."""
    folder = models_dir / archive.folder
    missing = [m for m in archive.members
               if not ((folder / m.filename).is_file() and _is_published(folder / m.filename, m.size, m.sha256, log))]
    if not missing:
        log(f"{archive.name}: {', '.join(m.filename for m in archive.members)} already present in {folder} "
            "(published sizes and sha256), skipped")
        return "present"
    zip_path = archive.download_path(models_dir)
    log(f"{archive.name}: needs {', '.join(m.filename for m in missing)} from {archive.archive}")
    if not (zip_path.is_file() and _is_published(zip_path, archive.size, archive.sha256, log)):
        _fetch_verified(_url(sites, archive), zip_path, archive.size, archive.sha256, log)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member in missing:
                _extract(zf, member, folder / member.filename, zip_path)
                log(f"{archive.name}: saved {folder / member.filename} ({member.size:,} bytes, sha256 verified)")
    except (DownloadError, zipfile.BadZipFile) as err:
        zip_path.unlink(missing_ok=True)  # its content is wrong: fetching it again is the only way on
        raise DownloadError(str(err)) from err
    zip_path.unlink()  # only its two files are needed; the rest of the zip is never loaded
    return "downloaded"


def download_all(files, models_dir: Path, sites: Mapping[str, str], log: Log = print) -> list[str]:
    """Fetch every file or archive; return the error messages (empty when all are in place)."""
    errors = []
    for file in files:
        try:
            if isinstance(file, ModelArchive):
                download_archive(file, models_dir, sites, log)
            else:
                download(file, models_dir, sites, log)
        except DownloadError as err:
            errors.append(f"{file.name}: {err}")
            log(f"{file.name}: ERROR {err}")
    return errors


def _describe(file: ModelFile | ModelArchive, sites: Mapping[str, str], models_dir: Path) -> str:
    if isinstance(file, ModelArchive):
        into = ", ".join(str(t) for t in file.targets(models_dir))
        return f"{file.name:12} {_url(sites, file)} ({file.size:,} bytes; only its detector and recogniser are kept)\n{'':12} -> {into}  ({file.licence})"
    return f"{file.name:12} {_url(sites, file)} ({file.size:,} bytes)\n{'':12} -> {file.target(models_dir)}  ({file.licence})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download the InstantID models into ComfyUI's model folders.")
    parser.add_argument("--models-dir", type=Path, help="ComfyUI's models folder (default: the host's, see --list)")
    parser.add_argument("--base-url", default=None,
                        help=f"Hugging Face mirror (default ${ENV_BASE_URL}, $HF_ENDPOINT or {SITES['huggingface']})")
    parser.add_argument("--github-url", default=None, help=f"GitHub mirror for antelopev2.zip (default ${ENV_GITHUB_URL} or {SITES['github']})")
    parser.add_argument("--only", nargs="+", choices=[f.name for f in MODEL_FILES], help="fetch only these files")
    parser.add_argument("--list", action="store_true", help="show what would go where, download nothing")
    args = parser.parse_args(argv)
    models_dir = args.models_dir or default_models_dir()
    sites = default_sites()
    sites.update({k: v for k, v in (("huggingface", args.base_url), ("github", args.github_url)) if v})
    files = [f for f in MODEL_FILES if not args.only or f.name in args.only]
    if args.list:
        print("\n".join(_describe(f, sites, models_dir) for f in files))
        return 0
    print(f"Downloading {len(files)} item(s) into {models_dir}")
    errors = download_all(files, models_dir, sites)
    if errors:
        print("\nNot everything could be downloaded:\n" + "\n".join(f"- {e}" for e in errors), file=sys.stderr)
        return 1
    print("All InstantID models are in place. Check the setup with `python -m instantid.doctor` (or the InstantID Doctor node).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
