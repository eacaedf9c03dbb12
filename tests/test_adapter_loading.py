"""Adapter files (good, hostile, broken, wrong) and wrong models / ControlNets: clear errors, nothing half-done."""

from __future__ import annotations

import builtins
import hashlib
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch
from model_fixtures import *  # noqa: F401,F403

SMALL_RESAMPLER = dict(dim=64, depth=1, dim_head=64, heads=1, num_queries=16, embedding_dim=512, output_dim=2048, ff_mult=4)


def small_adapter_sd(drop: tuple[int, ...] = ()) -> dict:
    """A small but well-formed adapter (tiny Resampler, K/V 8 wide) for the error cases: fast to write and read."""
    kv = {n: 8 for n in range(1, 140, 2) if n not in drop}
    return tiny_models.adapter_state_dict(kv, resampler=tiny_models.resampler_state_dict(cfg=SMALL_RESAMPLER))


def load(path):
    from instantid.adapter import load_adapter

    return load_adapter(str(path))


def expect_adapter_error(path, *fragments):
    from instantid.errors import AdapterFileError

    with pytest.raises(AdapterFileError) as info:
        load(path)
    message = str(info.value)
    assert Path(path).name in message, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in: {message}"
    return message


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------

def test_bin_and_flat_safetensors_load_the_same(tiny_files, tiny_adapter):
    cfg = tiny_adapter.config
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.num_queries, cfg.embedding_dim, cfg.output_dim) == (1280, 4, 20, 16, 512, 2048)
    assert sum(p.numel() for p in tiny_adapter.module.image_proj.parameters()) == tiny_models.RESAMPLER_PARAMS
    assert len(tiny_adapter.kv_shapes) == 70
    assert {c for c, _ in tiny_adapter.kv_shapes.values()} == {64, 128}
    flat = load(tiny_files.adapter_safetensors)
    a, b = tiny_adapter.module.state_dict(), flat.module.state_dict()
    assert a.keys() == b.keys() and len(a) == 51 + 140
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_small_valid_adapter_loads(tmp_path):
    path = tmp_path / "small.bin"
    torch.save(small_adapter_sd(), path)
    adapter = load(path)
    assert adapter.config.dim == 64 and len(adapter.kv_shapes) == 70


class _Boom:
    """Unpickling this calls open(marker, 'w'): a file appears if the loader ever runs pickled code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_pickle_with_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned.txt"
    sd = small_adapter_sd()
    sd["image_proj"]["latents_meta"] = _Boom(str(marker))
    path = tmp_path / "ip-adapter-evil.bin"
    torch.save(sd, path)
    assert not marker.exists()
    expect_adapter_error(path, "refused")
    assert not marker.exists(), "the pickle's code ran: the loader did not use weights_only"


def test_truncated_bin(tmp_path):
    whole = tmp_path / "whole.bin"
    torch.save(small_adapter_sd(), whole)
    data = whole.read_bytes()
    path = tmp_path / "ip-adapter-truncated.bin"
    path.write_bytes(data[: len(data) // 2])
    expect_adapter_error(path, "could not be read")


def test_truncated_safetensors(tmp_path):
    from safetensors.torch import save_file

    whole = tmp_path / "whole.safetensors"
    save_file(tiny_models.flat(small_adapter_sd()), str(whole))
    data = whole.read_bytes()
    path = tmp_path / "ip-adapter-truncated.safetensors"
    path.write_bytes(data[: len(data) - 1000])
    expect_adapter_error(path, "could not be read")


def test_corrupt_safetensors_header(tmp_path):
    path = tmp_path / "ip-adapter-corrupt.safetensors"
    header = b'{"image_proj.latents": {"dtype": "F32", "shape": [1, 16,'  # cut JSON
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    expect_adapter_error(path, "could not be read")


def test_empty_file(tmp_path):
    path = tmp_path / "ip-adapter-empty.bin"
    path.write_bytes(b"")
    expect_adapter_error(path)


def test_missing_file_names_the_real_folders_and_the_download_script(tmp_path):
    import folder_paths

    message = expect_adapter_error(tmp_path / "nope.bin", "not found")
    assert folder_paths.get_folder_paths("instantid")[0] in message and "ComfyUI/models/instantid" not in message
    assert "download_models.py --only adapter" in message and "make models" not in message


# ----------------------------------------------------------------------------
# A pickle with the published size is hashed before it is unpickled
# ----------------------------------------------------------------------------

def _published_like(path: Path, sha256: str | None = None):
    """A PublishedFile record for a test-built file: its own size, and its own digest unless one is given."""
    from instantid.published import PublishedFile

    return PublishedFile("ip-adapter.bin", path.stat().st_size, sha256 or hashlib.sha256(path.read_bytes()).hexdigest())


def _count_hashing(monkeypatch) -> list:
    """Counts the digests instantid.published computes (its own reference to hashlib is swapped, nothing else is)."""
    import types

    from instantid import published

    started = []

    def sha256():
        started.append(1)
        return hashlib.sha256()

    monkeypatch.setattr(published, "hashlib", types.SimpleNamespace(sha256=sha256))
    return started


def test_published_size_with_another_digest_is_never_unpickled(tmp_path, monkeypatch):
    import comfy.utils

    from instantid.adapter import read_adapter_file
    from instantid.errors import AdapterFileError

    path = tmp_path / "ip-adapter.bin"
    torch.save(small_adapter_sd(), path)
    claimed = _published_like(path, sha256="0" * 64)
    unpickled = []
    monkeypatch.setattr(comfy.utils, "load_torch_file", lambda *a, **k: unpickled.append(a))
    with pytest.raises(AdapterFileError) as info:
        read_adapter_file(str(path), claimed)
    message = str(info.value)
    assert f"size of the published ip-adapter.bin ({path.stat().st_size:,} bytes) but not its sha256" in message
    assert "was not unpickled" in message and "download_models.py --only adapter" in message
    assert unpickled == []


def test_published_file_is_hashed_once_then_again_only_when_it_changes(tmp_path, monkeypatch):
    from instantid.adapter import read_adapter_file
    from instantid.errors import AdapterFileError

    path = tmp_path / "ip-adapter.bin"
    torch.save(small_adapter_sd(), path)
    genuine = _published_like(path)
    hashed = _count_hashing(monkeypatch)
    sd = read_adapter_file(str(path), genuine)
    assert set(sd) == {"image_proj", "ip_adapter"} and len(hashed) == 1
    read_adapter_file(str(path), genuine)
    read_adapter_file(str(path), genuine)
    assert len(hashed) == 1, "the verified digest of an unchanged file was not remembered"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    with pytest.raises(AdapterFileError, match="not its sha256"):
        read_adapter_file(str(path), genuine)
    assert len(hashed) == 2


def test_other_sizes_are_not_hashed(tmp_path, monkeypatch):
    from instantid import adapter

    path = tmp_path / "ip-adapter-resaved.bin"
    torch.save(small_adapter_sd(), path)
    monkeypatch.setattr(adapter, "sha256_file", lambda p: pytest.fail("hashed a file that cannot be the published one"))
    assert set(adapter.read_adapter_file(str(path))) == {"image_proj", "ip_adapter"}


def test_plain_ip_adapter_file(tiny_files):
    expect_adapter_error(tiny_files.ipadapter_plain, "IP-Adapter")


def test_missing_kv_layers(tmp_path):
    path = tmp_path / "ip-adapter-partial.bin"
    torch.save(small_adapter_sd(drop=tuple(range(121, 140, 2))), path)  # the 10 middle-block layers
    message = expect_adapter_error(path, "missing", "121.to_k_ip.weight")
    assert "70" in message


def test_unet_checkpoint_given_as_adapter(tiny_files):
    expect_adapter_error(tiny_files.sdxl_unet, "UNet or ControlNet")


def test_controlnet_given_as_adapter(tiny_files):
    expect_adapter_error(tiny_files.sdxl_controlnet, "UNet or ControlNet")


# ----------------------------------------------------------------------------
# Wrong model / ControlNet, and no mutation of what came in
# ----------------------------------------------------------------------------

def make_faces():
    from instantid.faces import FaceRecord, Faces

    g = np.random.default_rng(5)
    kps = np.array([[22, 26], [42, 26], [32, 38], [24, 48], [40, 48]], dtype=np.float32)
    rec = FaceRecord(bbox=np.array([12, 12, 52, 56], dtype=np.float32), keypoints=kps,
                     embedding=g.standard_normal(512).astype(np.float32), score=0.99, source_size=(64, 64))
    return Faces(frames=(rec,))


def conditioning(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g), "width": 128, "height": 128}]]


HINT = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(9))


def snapshot(obj):
    """A structure-preserving copy for deep comparison (tensors cloned, other leaves kept by identity)."""
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    return obj


def same(a, b, path="") -> None:
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path}: tensor changed"
    else:
        assert a is b or a == b, f"{path}: {a!r} != {b!r}"


def test_sd15_model_is_refused_and_left_untouched(tiny_sd15, tiny_identitynet, tiny_adapter):
    from instantid import pipeline
    from instantid.errors import ModelMismatchError

    before = snapshot(tiny_sd15.model_options)
    for call in (
        lambda: pipeline.apply_instantid(tiny_sd15, conditioning(1), conditioning(2), tiny_adapter, tiny_identitynet,
                                         make_faces(), HINT, 0.8, 0.8, 0.0, 1.0),
        lambda: pipeline.face_attention_model(tiny_sd15, tiny_adapter, pipeline.identity_tokens(tiny_adapter, make_faces(), "average"),
                                              0.8, 0.0, 1.0, None),
    ):
        with pytest.raises(ModelMismatchError) as info:
            call()
        assert "SDXL" in str(info.value)
    same(tiny_sd15.model_options, before)
    assert "patches_replace" not in tiny_sd15.model_options.get("transformer_options", {})


def test_sd15_controlnet_is_refused(tiny_sdxl, tiny_sd15_controlnet, tiny_adapter):
    from instantid import pipeline
    from instantid.errors import ControlNetMismatchError
    from instantid.identitynet import apply_identitynet

    before = snapshot(tiny_sdxl.model_options)
    with pytest.raises(ControlNetMismatchError) as info:
        pipeline.apply_instantid(tiny_sdxl, conditioning(1), conditioning(2), tiny_adapter, tiny_sd15_controlnet,
                                 make_faces(), HINT, 0.8, 0.8, 0.0, 1.0)
    assert "768" in str(info.value)
    same(tiny_sdxl.model_options, before)
    tokens = pipeline.identity_tokens(tiny_adapter, make_faces(), "average")
    with pytest.raises(ControlNetMismatchError):
        apply_identitynet(conditioning(1), conditioning(2), tiny_sd15_controlnet, tokens, HINT, 0.8, 0.0, 1.0)


def test_patching_never_mutates_the_incoming_model(tiny_sdxl, tiny_identitynet, tiny_adapter):
    from instantid import pipeline

    def other_pack_patch(q, k, v, extra_options):  # what another pack may already have put there
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra_options["n_heads"])

    model = tiny_sdxl.clone()
    model.set_model_attn2_replace(other_pack_patch, "input", 4, 0)
    model.model_options["transformer_options"]["some_pack_setting"] = {"x": [1, 2]}
    before = snapshot(model.model_options)
    pos, neg = conditioning(1), conditioning(2)
    pos_before, neg_before = snapshot(pos), snapshot(neg)
    patched, new_pos, new_neg = pipeline.apply_instantid(model, pos, neg, tiny_adapter, tiny_identitynet, make_faces(),
                                                         HINT, 0.8, 0.8, 0.0, 1.0)
    same(model.model_options, before)
    same(pos, pos_before)
    same(neg, neg_before)
    assert patched is not model
    assert len(patched.model_options["transformer_options"]["patches_replace"]["attn2"]) == 70
    assert "control" in new_pos[0][1] and "control" not in pos[0][1]
    # Patching the patched model again still leaves the first one alone.
    once = snapshot(patched.model_options)
    pipeline.apply_instantid(patched, new_pos, new_neg, tiny_adapter, tiny_identitynet, make_faces(), HINT, 0.5, 0.5, 0.0, 1.0)
    same(patched.model_options, once)


def _kv_ptrs(model) -> dict:
    ptrs = {}
    for key, patch in model.model_options["transformer_options"]["patches_replace"]["attn2"].items():
        ptrs[key] = tuple(t.data_ptr() for t in patch.face.kv.per_layer[key])
    return ptrs


def test_clones_share_face_kv(tiny_sdxl, tiny_adapter):
    from instantid import pipeline

    tokens = pipeline.identity_tokens(tiny_adapter, make_faces(), "average")
    patched = pipeline.face_attention_model(tiny_sdxl, tiny_adapter, tokens, 0.8, 0.0, 1.0, None)
    want = _kv_ptrs(patched)
    assert len(want) == 70
    current = patched
    for i in range(20):
        clone = (current if i % 2 else patched).clone()
        assert _kv_ptrs(clone) == want, f"clone {i} copied the face K/V tensors"
        current = clone
