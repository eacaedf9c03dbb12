"""instantid/published.py: its facts are the spec's table, and a digest is computed once per unchanged file."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from conftest import PACK_DIR

from instantid import published

# CI sees the shared reference folder at ../shared from the project root (read-only).
SPEC = Path(os.environ.get("INSTANTID_SPEC", PACK_DIR.parent / "shared" / "spec" / "INSTANTID.md"))


def _spec_table() -> dict[str, tuple[int, str]]:
    """{file name: (bytes, sha256 or '')} from the spec's "published files" table, parsed independently of the pack."""
    if not SPEC.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SPEC} is missing: CI must see ../shared (or set INSTANTID_SPEC)")
        pytest.skip(f"{SPEC} not here (set INSTANTID_SPEC to the spec's INSTANTID.md)")
    text = SPEC.read_text()
    section = text[text.index("## 11. The published files"):]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.match(r"^[\d,/ ]+$", cells[1]):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        sizes = [int(s.replace(",", "")) for s in cells[1].split("/")]
        digest = cells[2].strip("`")
        for name, size in zip([n.split("/")[-1] for n in names], sizes, strict=True):
            rows[name] = (size, digest)
    return rows


def test_every_recorded_size_and_digest_is_the_spec_table():
    table = _spec_table()
    assert {f.filename: (f.size, f.sha256) for f in published.ALL} == {
        name: table[name] for name in ("ip-adapter.bin", "diffusion_pytorch_model.safetensors", "antelopev2.zip",
                                       "scrfd_10g_bnkps.onnx", "glintr100.onnx")}
    assert {name: table[name][0] for name in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx")} == published.UNUSED_IN_ANTELOPEV2
    # The figure the pack once recorded for the adapter (issue 9) is not the published one.
    assert published.ADAPTER.size != 1_691_951_878


def test_sources_are_the_official_ones():
    assert published.ADAPTER.url == "https://huggingface.co/InstantX/InstantID/resolve/main/ip-adapter.bin"
    assert published.IDENTITYNET.url == "https://huggingface.co/InstantX/InstantID/resolve/main/ControlNetModel/diffusion_pytorch_model.safetensors"
    assert published.ANTELOPEV2_ZIP.url == "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip"
    assert published.DETECTOR.archive == published.RECOGNIZER.archive == "antelopev2.zip"


def test_digest_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 3000)
    reads = []
    real_open = open

    def counting_open(file, mode="r", *args, **kwargs):
        if Path(file) == path and "b" in mode:
            reads.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    first = published.sha256_file(path)
    assert first == hashlib.sha256(b"a" * 3000).hexdigest() and len(reads) == 1
    assert published.sha256_file(str(path)) == first and len(reads) == 1  # remembered
    path.write_bytes(b"b" * 3000)  # same size, new content (and a new mtime/ctime)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert published.sha256_file(path) == hashlib.sha256(b"b" * 3000).hexdigest() and len(reads) == 2


def test_is_published_hashes_only_a_file_of_the_published_size(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    file = published.PublishedFile("f.bin", 10, hashlib.sha256(b"x" * 10).hexdigest())
    assert published.is_published(path, file)
    assert not published.is_published(path, published.PublishedFile("f.bin", 10, "0" * 64))
    monkeypatch.setattr(published, "sha256_file", lambda p: pytest.fail("hashed a file of another size"))
    assert not published.is_published(path, published.PublishedFile("f.bin", 11, file.sha256))


def test_download_hint_names_this_python_and_the_script():
    import sys

    hint = published.download_hint("adapter", "/some models")
    assert sys.executable in hint and str(PACK_DIR / "scripts" / "download_models.py") in hint
    assert '--only adapter --models-dir "/some models"' in hint and "make models" not in hint
