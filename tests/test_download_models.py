"""scripts/download_models.py against a local HTTP server serving small files (the real download needs internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import download_models as dm  # noqa: E402


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


DETECTOR = b"detector" * 5000
RECOGNIZER = bytes(range(251)) * 300
UNUSED = b"landmarks" * 700
FILES = {
    "/repo/resolve/main/adapter.bin": bytes(range(256)) * 400,
    "/repo/resolve/main/sub/net.safetensors": b"identitynet" * 3000,
    # as the public zip unpacks: nested antelopev2/antelopev2/, plus a model InstantID does not need
    "/release/nested.zip": _zip({"antelopev2/antelopev2/scrfd_10g_bnkps.onnx": DETECTOR, "antelopev2/antelopev2/glintr100.onnx": RECOGNIZER,
                                 "antelopev2/antelopev2/2d106det.onnx": UNUSED}),
    "/release/flat.zip": _zip({"glintr100.onnx": RECOGNIZER, "scrfd_10g_bnkps.onnx": DETECTOR}),
    "/release/no_recognizer.zip": _zip({"antelopev2/scrfd_10g_bnkps.onnx": DETECTOR, "antelopev2/genderage.onnx": UNUSED}),
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves FILES, honouring ``Range: bytes=N-`` with 206 like the Hugging Face CDN."""

    requests: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).requests.append((self.path, self.headers.get("Range")))
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def clear_requests():
    RangeHandler.requests.clear()


def _sites(base_url: str) -> dict[str, str]:
    return {"huggingface": base_url, "github": base_url}


def _files(wrong_sha: bool = False) -> list[dm.ModelFile]:
    """The script's file records with this test's own files and digests (the published digests are for the real files)."""
    out = []
    for name, (path, body) in zip(("adapter", "identitynet"), list(FILES.items())[:2], strict=True):
        folder, filename = ("instantid", "ip-adapter.bin") if name == "adapter" else ("controlnet", "instantid-controlnet.safetensors")
        out.append(dm.ModelFile(name, path.lstrip("/"), folder, filename, size=len(body), sha256=_sha(body + (b"x" if wrong_sha else b""))))
    return out


def _archive(zip_name: str = "nested.zip", recognizer: bytes = RECOGNIZER, zip_sha: str | None = None) -> dm.ModelArchive:
    body = FILES[f"/release/{zip_name}"]
    members = (dm.ArchiveMember("scrfd_10g_bnkps.onnx", len(DETECTOR), _sha(DETECTOR)),
               dm.ArchiveMember("glintr100.onnx", len(recognizer), _sha(recognizer)))
    return dm.ModelArchive("antelopev2", f"release/{zip_name}", "insightface/models/antelopev2", "antelopev2.zip",
                           len(body), zip_sha or _sha(body), members)


def _quiet(_msg: str) -> None:
    pass


def test_full_download_puts_each_file_in_its_folder(base_url, tmp_path):
    assert dm.download_all([*_files(), _archive()], tmp_path, _sites(base_url), log=_quiet) == []
    assert (tmp_path / "instantid" / "ip-adapter.bin").read_bytes() == FILES["/repo/resolve/main/adapter.bin"]
    assert (tmp_path / "controlnet" / "instantid-controlnet.safetensors").read_bytes() == FILES["/repo/resolve/main/sub/net.safetensors"]
    pack = tmp_path / "insightface" / "models" / "antelopev2"
    assert sorted(p.name for p in pack.iterdir()) == ["glintr100.onnx", "scrfd_10g_bnkps.onnx"]  # no zip, no .part, no unused model
    assert (pack / "scrfd_10g_bnkps.onnx").read_bytes() == DETECTOR and (pack / "glintr100.onnx").read_bytes() == RECOGNIZER
    assert not list(tmp_path.rglob("*.part"))


def test_resume_after_a_truncated_part_file(base_url, tmp_path):
    file = _files()[0]
    body = FILES["/" + file.url_path]
    part = file.target(tmp_path).with_name("ip-adapter.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:12345])
    assert dm.download(file, tmp_path, _sites(base_url), log=_quiet) == "downloaded"
    assert file.target(tmp_path).read_bytes() == body
    assert RangeHandler.requests == [("/" + file.url_path, "bytes=12345-")]
    assert not part.exists()


def test_a_complete_part_file_is_verified_and_moved(base_url, tmp_path):
    file = _files()[0]
    body = FILES["/" + file.url_path]
    part = file.target(tmp_path).with_name("ip-adapter.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body)
    assert dm.download(file, tmp_path, _sites(base_url), log=_quiet) == "downloaded"  # the server answers 416
    assert file.target(tmp_path).read_bytes() == body


def test_checksum_mismatch_is_refused_and_nothing_is_left_in_place(base_url, tmp_path):
    file = _files(wrong_sha=True)[0]
    with pytest.raises(dm.DownloadError, match="sha256 .* does not match the published"):
        dm.download(file, tmp_path, _sites(base_url), log=_quiet)
    assert not file.target(tmp_path).exists()
    assert not file.target(tmp_path).with_name("ip-adapter.bin.part").exists()


def test_wrong_size_is_refused(base_url, tmp_path):
    file = dm.ModelFile("adapter", "repo/resolve/main/adapter.bin", "instantid", "ip-adapter.bin", size=100, sha256="0" * 64)
    with pytest.raises(dm.DownloadError, match="the published file 100"):
        dm.download(file, tmp_path, _sites(base_url), log=_quiet)
    assert not file.target(tmp_path).exists()


def test_present_file_is_kept_only_when_its_digest_is_the_published_one(base_url, tmp_path):
    adapter, net = _files()
    adapter.target(tmp_path).parent.mkdir(parents=True)
    adapter.target(tmp_path).write_bytes(FILES["/" + adapter.url_path])
    net_body = FILES["/" + net.url_path]
    net.target(tmp_path).parent.mkdir(parents=True)
    net.target(tmp_path).write_bytes(b"X" + net_body[1:])  # the published size, another file
    assert dm.download(adapter, tmp_path, _sites(base_url), log=_quiet) == "present"
    assert dm.download(net, tmp_path, _sites(base_url), log=_quiet) == "downloaded"
    assert [path for path, _ in RangeHandler.requests] == ["/" + net.url_path]
    assert net.target(tmp_path).read_bytes() == net_body


def test_missing_file_on_the_server_names_the_url(base_url, tmp_path):
    file = dm.ModelFile("adapter", "repo/resolve/main/nothing.bin", "instantid", "ip-adapter.bin", size=1, sha256="0" * 64)
    with pytest.raises(dm.DownloadError, match="answered 404.*download by hand from .*nothing.bin"):
        dm.download(file, tmp_path, _sites(base_url), log=_quiet)


# ---------------------------------------------------------------- antelopev2 from the release zip


@pytest.mark.parametrize("zip_name", ["nested.zip", "flat.zip"])
def test_archive_members_are_found_at_any_depth(base_url, tmp_path, zip_name):
    archive = _archive(zip_name)
    assert dm.download_archive(archive, tmp_path, _sites(base_url), log=_quiet) == "downloaded"
    detector, recognizer = archive.targets(tmp_path)
    assert detector.read_bytes() == DETECTOR and recognizer.read_bytes() == RECOGNIZER
    assert not archive.download_path(tmp_path).exists()


def test_present_members_are_verified_and_only_a_wrong_one_is_extracted_again(base_url, tmp_path):
    archive = _archive()
    detector, recognizer = archive.targets(tmp_path)
    detector.parent.mkdir(parents=True)
    detector.write_bytes(DETECTOR)
    recognizer.write_bytes(RECOGNIZER)
    assert dm.download_archive(archive, tmp_path, _sites(base_url), log=_quiet) == "present"
    assert RangeHandler.requests == []
    recognizer.write_bytes(bytes(len(RECOGNIZER)))  # right size, wrong content
    detector_mtime = detector.stat().st_mtime_ns
    assert dm.download_archive(archive, tmp_path, _sites(base_url), log=_quiet) == "downloaded"
    assert recognizer.read_bytes() == RECOGNIZER and detector.stat().st_mtime_ns == detector_mtime
    assert [path for path, _ in RangeHandler.requests] == ["/release/nested.zip"]


def test_member_with_another_digest_is_refused(base_url, tmp_path):
    archive = _archive(recognizer=RECOGNIZER[::-1])  # same size, other bytes than the zip holds
    with pytest.raises(dm.DownloadError, match="glintr100.onnx from antelopev2.zip: sha256 .* does not match the published"):
        dm.download_archive(archive, tmp_path, _sites(base_url), log=_quiet)
    assert not archive.targets(tmp_path)[1].exists()
    assert not list(tmp_path.rglob("*.part")) and not archive.download_path(tmp_path).exists()


def test_zip_without_a_member_names_it(base_url, tmp_path):
    archive = _archive("no_recognizer.zip")
    with pytest.raises(dm.DownloadError, match="has no glintr100.onnx .*antelopev2/genderage.onnx"):
        dm.download_archive(archive, tmp_path, _sites(base_url), log=_quiet)
    assert not archive.targets(tmp_path)[1].exists()


def test_zip_with_another_digest_is_refused_before_extraction(base_url, tmp_path):
    archive = _archive(zip_sha="ab" * 32)
    with pytest.raises(dm.DownloadError, match="antelopev2.zip: sha256 .* does not match the published abab"):
        dm.download_archive(archive, tmp_path, _sites(base_url), log=_quiet)
    assert not any(t.exists() for t in archive.targets(tmp_path))
    assert not list(tmp_path.rglob("*.zip*"))


def test_zip_download_resumes(base_url, tmp_path):
    archive = _archive()
    body = FILES["/release/nested.zip"]
    part = archive.download_path(tmp_path).with_name("antelopev2.zip.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:777])
    assert dm.download_archive(archive, tmp_path, _sites(base_url), log=_quiet) == "downloaded"
    assert RangeHandler.requests == [("/release/nested.zip", "bytes=777-")]
    assert archive.targets(tmp_path)[1].read_bytes() == RECOGNIZER


# ---------------------------------------------------------------- the command and its defaults


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_gives_a_clear_message_and_a_nonzero_exit(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    result = subprocess.run([sys.executable, str(SCRIPTS / "download_models.py"), "--models-dir", str(tmp_path),
                             "--base-url", url, "--github-url", url, "--only", "adapter", "antelopev2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot reach 127.0.0.1:{url.rsplit(':', 1)[1]}" in result.stderr
    assert f"download by hand from {url}/InstantX/InstantID/resolve/main/ip-adapter.bin into {tmp_path / 'instantid'}" in result.stderr
    assert f"download by hand from {url}/deepinsight/insightface/releases/download/v0.7/antelopev2.zip" in result.stderr
    assert not (tmp_path / "instantid" / "ip-adapter.bin").exists()


def test_default_targets_and_sources(tmp_path):
    files = {f.name: f for f in dm.MODEL_FILES}
    assert files["adapter"].target(tmp_path) == tmp_path / "instantid" / "ip-adapter.bin"
    assert files["identitynet"].target(tmp_path) == tmp_path / "controlnet" / "instantid-controlnet.safetensors"
    assert files["antelopev2"].targets(tmp_path) == [tmp_path / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
                                                     tmp_path / "insightface/models/antelopev2/glintr100.onnx"]
    urls = {name: dm._url(dm.SITES, f) for name, f in files.items()}
    assert urls == {
        "adapter": "https://huggingface.co/InstantX/InstantID/resolve/main/ip-adapter.bin",
        "identitynet": "https://huggingface.co/InstantX/InstantID/resolve/main/ControlNetModel/diffusion_pytorch_model.safetensors",
        # insightface 0.7.3's own download source (insightface/utils/storage.py), not a mirror
        "antelopev2": "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip",
    }


def test_list_shows_published_sizes(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPTS / "download_models.py"), "--models-dir", str(tmp_path), "--list"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "(1,691,134,141 bytes)" in result.stdout and "(2,502,139,136 bytes)" in result.stdout
    assert "(360,662,982 bytes; only its detector and recogniser are kept)" in result.stdout


def test_mirrors_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(dm.ENV_BASE_URL, "http://mirror.example")
    monkeypatch.setenv(dm.ENV_GITHUB_URL, "http://gh-mirror.example")
    assert dm.default_sites() == {"huggingface": "http://mirror.example", "github": "http://gh-mirror.example"}
    monkeypatch.delenv(dm.ENV_BASE_URL)
    monkeypatch.delenv(dm.ENV_GITHUB_URL)
    monkeypatch.setenv("HF_ENDPOINT", "http://hf-mirror.example")
    assert dm.default_sites() == {"huggingface": "http://hf-mirror.example", "github": "https://github.com"}
