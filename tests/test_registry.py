"""The package as the Comfy Registry checks it, and the version rule (CHANGELOG.md <-> pyproject.toml).

`comfy node validate` (comfy-cli, installed by scripts/bootstrap.sh into
.venv-registry) is what `comfy node publish` runs before uploading: it reads
pyproject.toml (name, version, licence, classifiers, requires-comfyui, the
frontend range) and scans the sources with ruff for exec (S102), eval (S307)
and several statements on one line (E702). It needs no network (telemetry is
off here). It only *warns* about what the scan finds, so the test fails on any
warning. The registry's GitHub action (.github/workflows/publish.yml) runs the
same scan for S102/S307 and files an issue.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

PACK_DIR = Path(__file__).resolve().parent.parent
COMFY = PACK_DIR / ".venv-registry" / "bin" / "comfy"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
ENTRY = re.compile(r"^## (\S+) - (\d{4}-\d{2}-\d{2})$", re.MULTILINE)
REGISTRY_RULES = "S102,S307,E702"  # what comfy-cli's validate scans for


def _version() -> str:
    return tomllib.loads((PACK_DIR / "pyproject.toml").read_text())["project"]["version"]


def _comfy_cli() -> Path:
    if COMFY.exists():
        return COMFY
    message = f"{COMFY} is missing: run scripts/bootstrap.sh (make env), which installs comfy-cli there"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _validate(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "DO_NOT_TRACK": "1", "COMFY_NO_TELEMETRY": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([str(_comfy_cli()), "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _published_copy(dest: Path) -> Path:
    """The files `comfy node publish` would upload: git-tracked, minus .comfyignore (see tests/test_packaging.py)."""
    from test_packaging import _ignored

    patterns = [line.strip() for line in (PACK_DIR / ".comfyignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=PACK_DIR, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if not _ignored(rel, patterns) and (PACK_DIR / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PACK_DIR / rel, dest / rel)
    return dest


def test_comfy_node_validate_passes_on_the_repository(tmp_path):
    result = _validate(PACK_DIR, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "All validation checks passed" in out, out
    assert "Security warnings" not in out and "Warning" not in out and "Error" not in out, out


def test_comfy_node_validate_flags_exec_in_the_published_files(tmp_path):
    """The check the test above relies on does catch what the registry rejects (in a copy, never in the pack)."""
    copy = _published_copy(tmp_path / "pack")
    (copy / "nodes" / "bad.py").write_text("def run(code):\n    exec(code)\n")
    result = _validate(copy, tmp_path)
    out = result.stdout + result.stderr
    assert "Security warnings" in out and "S102" in out and "nodes/bad.py" in out, out


def test_same_scan_with_the_test_environment_ruff():
    """The registry's scan with the suite's own ruff, so it runs even where comfy-cli is not installed."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", ".", "-q", "--select", REGISTRY_RULES, "--exit-zero"],
                            cwd=PACK_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_changelog_top_entry_is_the_pyproject_version():
    text = (PACK_DIR / "CHANGELOG.md").read_text()
    entries = ENTRY.findall(text)
    assert entries, "CHANGELOG.md has no '## X.Y.Z - YYYY-MM-DD' entries"
    version = _version()
    assert SEMVER.match(version), f"pyproject version {version!r} is not MAJOR.MINOR.PATCH"
    assert entries[0][0] == version, (
        f"CHANGELOG.md's top entry is {entries[0][0]} but pyproject.toml says {version}: a release raises the version "
        "and adds its entry in the same commit (see the version rule at the top of CHANGELOG.md)")


def test_changelog_versions_rise_with_dates_and_each_has_notes():
    text = (PACK_DIR / "CHANGELOG.md").read_text()
    entries = ENTRY.findall(text)
    versions = [tuple(int(p) for p in v.split(".")) for v, _ in entries]
    assert all(SEMVER.match(v) for v, _ in entries), entries
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), "newest first, no repeats"
    dates = [d for _, d in entries]
    assert dates == sorted(dates, reverse=True), dates
    bodies = ENTRY.split(text)[3::3]
    assert all(re.search(r"^- ", body, re.MULTILINE) for body in bodies), "every version lists its changes"


def test_publishing_workflow_uses_the_registry_action_and_only_the_owner_publishes():
    flow = (PACK_DIR / ".github" / "workflows" / "publish.yml").read_text()
    assert "uses: Comfy-Org/publish-node-action@" in flow
    assert "personal_access_token: ${{ secrets.REGISTRY_ACCESS_TOKEN }}" in flow
    assert "workflow_dispatch:" in flow and "branches: [main]" in flow and "paths: [pyproject.toml]" in flow
    owner = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())["tool"]["comfy"]["PublisherId"]
    assert f"github.repository_owner == '{owner}'" in flow and "github.actor == github.repository_owner" in flow
    assert "CHANGELOG.md" in flow  # refuses to publish a version without its notes
