"""Start and stop a real ComfyUI server with the pack installed, for `make run` and the server tests.

The pack is linked into ``<base>/custom_nodes`` of a base directory (unless
the host already surrounds it), so a user's ComfyUI is never modified.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_host import PACK_DIR, find_host, host_version  # noqa: E402

log = logging.getLogger("comfy_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base(base: Path, extra_packs: list[Path] = ()) -> Path:
    """Make ``base``/{custom_nodes,models,input,output,user} and link the pack (and test packs) in."""
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for pack in (PACK_DIR, *extra_packs):
        link = base / "custom_nodes" / (pack.name if pack != PACK_DIR else "comfyui-instantid")
        if not link.exists():
            link.symlink_to(pack, target_is_directory=True)
    return base


def server_command(host: Path, base: Path | None, port: int, cpu: bool) -> list[str]:
    cmd = [sys.executable, str(host / "main.py"), "--listen", "127.0.0.1", "--port", str(port),
           "--database-url", "sqlite:///:memory:"]
    if base is not None:
        cmd += ["--base-directory", str(base)]
    if cpu:
        cmd.append("--cpu")
    return cmd


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/system_stats", timeout=2) as r:
                json.load(r)
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"ComfyUI at {url} not ready after {timeout:.0f}s")


def start_server(base: Path, extra_packs: list[Path] = (), port: int | None = None,
                 log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    host, _ = find_host()
    prepare_base(base, list(extra_packs))
    port = port or free_port()
    out = open(log_path or base / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(server_command(host, base, port, cpu=True), cwd=str(host), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
    except Exception:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop by PID (the whole process group) and wait for it to go."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run ComfyUI with the InstantID pack (make run).")
    parser.add_argument("--port", type=int, default=8188)
    args = parser.parse_args()
    host, how = find_host()
    import torch

    cpu = not torch.cuda.is_available()
    base = None
    if how != "surrounding ComfyUI":
        base = prepare_base(PACK_DIR / ".host" / "base")
    print(f"Starting ComfyUI {host_version(host)} ({how}) with the InstantID pack at http://127.0.0.1:{args.port}"
          + (" on CPU" if cpu else ""), flush=True)
    if base is not None:
        print(f"Models go in {base / 'models'} (instantid/, controlnet/, insightface/models/antelopev2/, checkpoints/)", flush=True)
    os.chdir(host)
    os.execv(sys.executable, server_command(host, base, args.port, cpu))


if __name__ == "__main__":
    main()
