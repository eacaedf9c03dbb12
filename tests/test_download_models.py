"""scripts/download_models.py against a local HTTP server serving small files (the real download needs internet)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import download_models as dm  # noqa: E402

FILES = {
    "/repo/resolve/main/adapter.bin": bytes(range(256)) * 400,
    "/repo/resolve/main/sub/net.safetensors": b"identitynet" * 3000,
}


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


def _files(sha: bool = True, wrong_sha: bool = False) -> list[dm.ModelFile]:
    out = []
    for name, (path, body) in zip(("adapter", "identitynet"), FILES.items(), strict=True):
        digest = hashlib.sha256(body + (b"x" if wrong_sha else b"")).hexdigest() if sha else None
        folder, filename = ("instantid", "ip-adapter.bin") if name == "adapter" else ("controlnet", "instantid-controlnet.safetensors")
        out.append(dm.ModelFile(name, path.lstrip("/"), folder, filename, size=len(body), sha256=digest))
    return out


def _quiet(_msg: str) -> None:
    pass


def test_full_download_puts_each_file_in_its_folder(base_url, tmp_path):
    assert dm.download_all(_files(), tmp_path, base_url, log=_quiet) == []
    assert (tmp_path / "instantid" / "ip-adapter.bin").read_bytes() == FILES["/repo/resolve/main/adapter.bin"]
    assert (tmp_path / "controlnet" / "instantid-controlnet.safetensors").read_bytes() == FILES["/repo/resolve/main/sub/net.safetensors"]
    assert not list(tmp_path.rglob("*.part"))


def test_resume_after_a_truncated_part_file(base_url, tmp_path):
    file = _files()[0]
    body = FILES["/" + file.url_path]
    part = file.target(tmp_path).with_name("ip-adapter.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:12345])
    assert dm.download(file, tmp_path, base_url, log=_quiet) == "downloaded"
    assert file.target(tmp_path).read_bytes() == body
    assert RangeHandler.requests == [("/" + file.url_path, "bytes=12345-")]
    assert not part.exists()


def test_a_complete_part_file_is_verified_and_moved(base_url, tmp_path):
    file = _files()[0]
    body = FILES["/" + file.url_path]
    part = file.target(tmp_path).with_name("ip-adapter.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body)
    assert dm.download(file, tmp_path, base_url, log=_quiet) == "downloaded"  # the server answers 416
    assert file.target(tmp_path).read_bytes() == body


def test_checksum_mismatch_is_refused_and_nothing_is_left_in_place(base_url, tmp_path):
    file = _files(wrong_sha=True)[0]
    with pytest.raises(dm.DownloadError, match="sha256 .* does not match"):
        dm.download(file, tmp_path, base_url, log=_quiet)
    assert not file.target(tmp_path).exists()
    assert not file.target(tmp_path).with_name("ip-adapter.bin.part").exists()


def test_wrong_size_is_refused(base_url, tmp_path):
    file = dm.ModelFile("adapter", "repo/resolve/main/adapter.bin", "instantid", "ip-adapter.bin", size=100)
    with pytest.raises(dm.DownloadError, match="expected 100"):
        dm.download(file, tmp_path, base_url, log=_quiet)
    assert not file.target(tmp_path).exists()


def test_present_file_is_skipped_and_a_wrong_size_one_replaced(base_url, tmp_path):
    adapter, net = _files()
    adapter.target(tmp_path).parent.mkdir(parents=True)
    adapter.target(tmp_path).write_bytes(FILES["/" + adapter.url_path])
    net.target(tmp_path).parent.mkdir(parents=True)
    net.target(tmp_path).write_bytes(b"truncated")
    assert dm.download(adapter, tmp_path, base_url, log=_quiet) == "present"
    assert dm.download(net, tmp_path, base_url, log=_quiet) == "downloaded"
    assert [path for path, _ in RangeHandler.requests] == ["/" + net.url_path]
    assert net.target(tmp_path).read_bytes() == FILES["/" + net.url_path]


def test_missing_file_on_the_server_names_the_url(base_url, tmp_path):
    file = dm.ModelFile("adapter", "repo/resolve/main/nothing.bin", "instantid", "ip-adapter.bin")
    with pytest.raises(dm.DownloadError, match="answered 404.*download by hand from .*nothing.bin"):
        dm.download(file, tmp_path, base_url, log=_quiet)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_gives_a_clear_message_and_a_nonzero_exit(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    result = subprocess.run([sys.executable, str(SCRIPTS / "download_models.py"), "--models-dir", str(tmp_path),
                             "--base-url", url, "--only", "adapter"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot reach 127.0.0.1:{url.rsplit(':', 1)[1]}" in result.stderr
    assert f"download by hand from {url}/InstantX/InstantID/resolve/main/ip-adapter.bin into {tmp_path / 'instantid'}" in result.stderr
    assert not (tmp_path / "instantid" / "ip-adapter.bin").exists()


def test_default_targets_are_the_folders_the_pack_reads(tmp_path):
    targets = {f.name: f.target(tmp_path).relative_to(tmp_path).as_posix() for f in dm.MODEL_FILES}
    assert targets == {
        "adapter": "instantid/ip-adapter.bin",
        "identitynet": "controlnet/instantid-controlnet.safetensors",
        "detector": "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
        "recognizer": "insightface/models/antelopev2/glintr100.onnx",
    }
    assert all(_url.startswith("https://huggingface.co/") for _url in (dm._url(dm.DEFAULT_BASE_URL, f) for f in dm.MODEL_FILES))


def test_base_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(dm.ENV_BASE_URL, "http://mirror.example")
    assert dm.default_base_url() == "http://mirror.example"
    monkeypatch.delenv(dm.ENV_BASE_URL)
    monkeypatch.setenv("HF_ENDPOINT", "http://hf-mirror.example")
    assert dm.default_base_url() == "http://hf-mirror.example"
