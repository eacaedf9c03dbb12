"""Load through a real ComfyUI server: many prompts over HTTP with varying weights, seeds, faces and masks, interrupts,
queue deletions, cached reruns; results repeat bit for bit and resident memory stays flat.

N = 12 prompts by default (CI), 50 with ``--full``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from face_fixtures import blank_images, paint_face
from PIL import Image

pytestmark = pytest.mark.server
SIZE = 128


def _write_faces(folder: Path) -> list[str]:
    """Three different painted identities (colour changes the embedding), at different places and sizes."""
    names = []
    for i, (x, y, w, h, red, blue) in enumerate([(64, 51, 128, 153, 255, 255), (40, 30, 100, 120, 220, 240),
                                                 (76, 60, 100, 120, 235, 215)]):
        image = paint_face(blank_images(256, 256), x, y, w, h, red=red, blue=blue)
        name = f"soak_face_{i}.png"
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import graph_server

    base = tmp_path_factory.mktemp("soak-base")
    srv = graph_server(base)
    srv.faces = _write_faces(base / "input")
    yield srv
    srv.stop()


def workflow(models, face: str, seed: int = 3, ip_weight: float = 0.8, mask: tuple | None = None, steps: int = 2,
             prefix: str = "soak") -> dict:
    """The basic InstantID graph (as in test_server.py) with a chosen face, optional SolidMask and step count."""
    from test_server import api_workflow

    prompt = api_workflow(models, seed=seed, size=SIZE, ip_weight=ip_weight)
    prompt["photo"]["inputs"]["image"] = face
    prompt["sampler"]["inputs"]["steps"] = steps
    prompt["save"]["inputs"]["filename_prefix"] = prefix
    if mask is not None:
        value, width, height = mask
        prompt["mask"] = {"class_type": "SolidMask", "inputs": {"value": value, "width": width, "height": height}}
        prompt["apply"]["inputs"]["mask"] = ["mask", 0]
    return prompt


def _post_raw(server, path: str, payload: dict) -> int:
    req = urllib.request.Request(server.url + path, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def _queue(server, prompt: dict) -> str:
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 200, body
    return body["prompt_id"]


def _wait(server, prompt_id: str, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        status = (entry or {}).get("status", {})
        if status.get("completed") or status.get("status_str") == "error":
            return entry
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f}s:\n{server.log_text()[-3000:]}")


def _wait_running(server, prompt_id: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = server.get("/queue")["queue_running"]
        if any(item[1] == prompt_id for item in running):
            return
        time.sleep(0.05)
    raise TimeoutError(f"prompt {prompt_id} never started running")


def _pixels(server, entry: dict) -> np.ndarray:
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert len(images) == 1, entry
    path = server.base / "output" / images[0].get("subfolder", "") / images[0]["filename"]
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).copy()


def _messages(entry: dict) -> dict:
    return {name: data for name, data in entry["status"].get("messages", [])}


def _rss(server) -> int:
    return psutil.Process(server.proc.pid).memory_info().rss


BASE = dict(seed=100, ip_weight=0.8, mask=None)
# Each variant changes ONE input of the base setting: its image must differ from the base image, or that input
# was ignored somewhere between the server and the sampler.
VARIANTS = {"face": {"face": 1}, "ip_weight": {"ip_weight": 1.2}, "mask": {"mask": (0.6, 64, 96)}, "seed": {"seed": 101}}


def _configs(server, count: int) -> list[dict]:
    """A cycle of 6 distinct (face, seed, weight, mask) settings: the base, one variant per input, and one with
    everything changed (an all-ones mask of the right size). Every setting repeats once the cycle wraps."""
    base = dict(BASE, face=server.faces[0])
    cycle = [base] + [dict(base, **{k: server.faces[v] if k == "face" else v for k, v in change.items()})
                      for change in VARIANTS.values()]
    cycle.append(dict(face=server.faces[2], seed=102, ip_weight=0.5, mask=(1.0, SIZE, SIZE)))
    return [cycle[i % 6] for i in range(count)]


def _key(cfg: dict) -> tuple:
    return (cfg["face"], cfg["seed"], cfg["ip_weight"], cfg["mask"])


def _interrupt_mid_run(server, models, face: str) -> tuple[dict, dict | None]:
    """A long prompt interrupted while sampling, with a second one queued behind it and deleted from the queue."""
    long_id = _queue(server, workflow(models, face, seed=999, steps=400, prefix="soak_long"))
    pending_id = _queue(server, workflow(models, face, seed=998, steps=400, prefix="soak_pending"))
    _wait_running(server, long_id)
    time.sleep(1.0)  # let it get into the sampler (upstream nodes are cached by now)
    assert any(item[1] == pending_id for item in server.get("/queue")["queue_pending"])
    assert _post_raw(server, "/queue", {"delete": [pending_id]}) == 200
    assert _post_raw(server, "/interrupt", {}) == 200
    entry = _wait(server, long_id)
    time.sleep(0.3)
    return entry, server.get(f"/history/{pending_id}").get(pending_id)


def test_soak(server, request):
    count = 50 if request.config.getoption("--full") else 12
    models = server.models
    configs = _configs(server, count)
    interrupt_at = {3, count // 2 + 1} if count <= 12 else set(range(3, count, 8))
    first_pixels: dict[tuple, np.ndarray] = {}
    completed, interrupted, rss_after_5 = 0, 0, None
    t0 = time.monotonic()
    pending: list[tuple[str, dict]] = []

    def drain():
        nonlocal completed, rss_after_5
        for prompt_id, cfg in pending:
            entry = _wait(server, prompt_id)
            assert entry["status"]["status_str"] == "success", (cfg, entry["status"], server.log_text()[-3000:])
            key = _key(cfg)
            pixels = _pixels(server, entry)
            if key in first_pixels:
                assert np.array_equal(pixels, first_pixels[key]), f"repeated settings {key} gave a different image"
            else:
                first_pixels[key] = pixels
            completed += 1
            if completed == 5:
                rss_after_5 = _rss(server)
        pending.clear()

    for i, cfg in enumerate(configs):
        if i in interrupt_at:
            drain()
            entry, deleted = _interrupt_mid_run(server, models, cfg["face"])
            assert entry["status"]["status_str"] == "error", entry["status"]
            assert "execution_interrupted" in _messages(entry), entry["status"]
            assert deleted is None, "a prompt deleted from the queue still ran"
            interrupted += 1
        pending.append((_queue(server, workflow(models, **cfg, prefix=f"soak_{i}")), cfg))
        if len(pending) == 4:  # several prompts in the queue at once
            drain()
    drain()
    rss_end = _rss(server)
    elapsed = time.monotonic() - t0
    print(f"\nsoak: {completed} prompts completed, {interrupted} interrupted (+{interrupted} deleted from the queue), "
          f"{len(first_pixels)} distinct settings, RSS after 5 = {rss_after_5 / 2**20:.1f} MiB, "
          f"after all = {rss_end / 2**20:.1f} MiB ({(rss_end / rss_after_5 - 1) * 100:+.2f}%), {elapsed:.1f}s")
    assert completed == count and interrupted == len(interrupt_at)
    assert len(first_pixels) == min(count, 6)
    base = _key(configs[0])
    for name, cfg in zip(VARIANTS, configs[1:5], strict=True):
        assert not np.array_equal(first_pixels[_key(cfg)], first_pixels[base]), f"changing only {name} did not change the image"
    assert rss_end <= rss_after_5 * 1.05, (rss_after_5, rss_end)
    # The server still serves after all that.
    again = _wait(server, _queue(server, workflow(models, **configs[0], prefix="soak_after")))
    assert np.array_equal(_pixels(server, again), first_pixels[_key(configs[0])])


def test_cached_upstream_downstream_changes_rerun_bit_identical(server):
    """ComfyUI's cache keeps Apply InstantID's output; changing only the seed/prefix 10 times must not drift."""
    models, face = server.models, server.faces[0]
    first = _wait(server, _queue(server, workflow(models, face, seed=7, prefix="cache_first")))
    assert first["status"]["status_str"] == "success", first["status"]
    reference = {7: _pixels(server, first)}
    for run in range(10):
        seed = (7, 8)[run % 2]
        entry = _wait(server, _queue(server, workflow(models, face, seed=seed, prefix=f"cache_{run}")))
        assert entry["status"]["status_str"] == "success", entry["status"]
        cached = set(_messages(entry).get("execution_cached", {}).get("nodes", []))
        assert {"apply", "unet", "adapter", "faces"} <= cached, cached  # the upstream really came from the cache
        pixels = _pixels(server, entry)
        if seed not in reference:
            reference[seed] = pixels
        assert np.array_equal(pixels, reference[seed]), f"run {run} (seed {seed}) differs from the first"
    assert not np.array_equal(reference[7], reference[8])
