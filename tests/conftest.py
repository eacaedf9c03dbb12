"""Boots a real ComfyUI in this process and loads the pack through ComfyUI's own loader.

Order matters: ``--cpu`` must be in effect before ``comfy.model_management``
is imported, and the pack must be loaded by ComfyUI (as it is in production)
before any test imports the engine, so that tests and nodes share one copy of
the ``instantid`` modules.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pkgutil
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "scripts"))
sys.path.insert(0, str(PACK_DIR / "tests"))

from comfy_host import find_host, host_version  # noqa: E402

HOST_DIR, HOST_HOW = find_host()
HOST_VERSION = host_version(HOST_DIR)

# ComfyUI writes models/, input/, output/ under its base directory: keep the
# tests away from a user's real ComfyUI by giving them a scratch base dir.
BASE_DIR = Path(tempfile.mkdtemp(prefix="instantid-tests-"))
for sub in ("models", "input", "output", "temp", "custom_nodes", "user"):
    (BASE_DIR / sub).mkdir()

sys.path.insert(0, str(HOST_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing(False)
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True
comfy.cli_args.args.base_directory = str(BASE_DIR)
import folder_paths  # noqa: E402

folder_paths.set_output_directory(str(BASE_DIR / "output"))
folder_paths.set_input_directory(str(BASE_DIR / "input"))
folder_paths.set_temp_directory(str(BASE_DIR / "temp"))

import comfy.model_management  # noqa: E402,F401

import nodes as comfy_nodes  # noqa: E402


def _load_pack() -> str:
    before = set(comfy_nodes.NODE_CLASS_MAPPINGS)
    ok = asyncio.run(comfy_nodes.load_custom_node(str(PACK_DIR)))
    if not ok:
        raise RuntimeError(f"ComfyUI refused to load the pack at {PACK_DIR}; see the log above.")
    package = str(PACK_DIR).replace(".", "_x_")
    # Share the engine ComfyUI just loaded with the tests' `import instantid`.
    engine = importlib.import_module(f"{package}.instantid")
    sys.modules["instantid"] = engine
    for info in pkgutil.iter_modules(engine.__path__):
        sys.modules[f"instantid.{info.name}"] = importlib.import_module(f"{package}.instantid.{info.name}")
    nodes_pkg = importlib.import_module(f"{package}.nodes")
    sys.modules["pack_nodes"] = nodes_pkg
    loaded = sorted(set(comfy_nodes.NODE_CLASS_MAPPINGS) - before)
    logging.info("InstantID pack loaded as %s with nodes %s", package, loaded)
    return package


PACK_PACKAGE = _load_pack()


def pytest_report_header(config):
    return f"ComfyUI host: {HOST_VERSION} at {HOST_DIR} ({HOST_HOW}); base dir {BASE_DIR}"


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False, help="run slow full-size checks too")


def pytest_unconfigure(config):
    # The scratch base dir holds ~1 GB of tiny models per run: never leave it behind.
    shutil.rmtree(BASE_DIR, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "full: slow full-size check, only with --full")
    config.addinivalue_line("markers", "server: starts a real ComfyUI server")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="full-size check: run with --full")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def base_dir() -> Path:
    return BASE_DIR
