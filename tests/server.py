"""A real ComfyUI server for tests: started in its own process, stopped by PID."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from comfy_server import start_server, stop_server


class Server:
    def __init__(self, base: Path, extra_packs: list[Path] = ()) -> None:
        self.base = base
        self.proc, self.url = start_server(base, extra_packs)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def run_prompt(self, prompt: dict, timeout: float = 120.0) -> dict:
        """Queue an API-format prompt and wait for its history entry; raise with the server's error."""
        status, body = self.post("/prompt", {"prompt": prompt})
        if status != 200:
            raise AssertionError(f"/prompt refused the workflow ({status}): {json.dumps(body)[:2000]}")
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("completed") or entry["status"].get("status_str") == "error":
                    return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f}s")

    def log_text(self) -> str:
        log = self.base / "server.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        stop_server(self.proc)


HOST_PACK = Path(__file__).resolve().parent / "host_pack"


def graph_server(base: Path) -> Server:
    """A server whose models folders hold every tiny model of a full InstantID graph, with the test host pack
    (tiny SDXL size registered, text-free conditioning node). ``server.models`` names the files."""
    from e2e_models import write_graph_models

    models = write_graph_models(str(base))
    server = Server(base, extra_packs=[HOST_PACK])
    server.models = models
    return server
