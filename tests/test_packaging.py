"""What the Comfy Registry and ComfyUI-Manager read: pyproject metadata, requirements, the published file set, no exec/eval or run-time installs."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import subprocess
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

PACK_DIR = Path(__file__).resolve().parent.parent
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
NODE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*$")  # registry rule: no leading/consecutive specials
PACK_CODE = ("__init__.py", "instantid", "nodes")


def _pyproject() -> dict:
    return tomllib.loads((PACK_DIR / "pyproject.toml").read_text())


def _requirement_names(lines: list[str]) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].lower())
    return names


def _code_files() -> list[Path]:
    files = [PACK_DIR / "__init__.py"]
    for folder in PACK_CODE[1:]:
        files += sorted((PACK_DIR / folder).rglob("*.py"))
    return files


def test_project_metadata_is_valid_for_the_registry():
    project = _pyproject()["project"]
    assert NODE_ID.match(project["name"]) and len(project["name"]) < 100
    assert "comfyui" not in project["name"].lower()
    assert SEMVER.match(project["version"]), project["version"]
    assert (PACK_DIR / project["license"]["file"]).is_file()
    assert project["description"]
    for key in ("Repository", "Documentation", "Bug Tracker"):
        assert project["urls"][key].startswith("https://"), key


def test_tool_comfy_section():
    comfy = _pyproject()["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"].strip()
    assert comfy["Icon"].startswith("https://") and comfy["Icon"].endswith((".png", ".jpg", ".jpeg", ".svg", ".webp"))
    icon_in_repo = comfy["Icon"].split("/main/", 1)[1]
    assert (PACK_DIR / icon_in_repo).is_file(), f"the Icon URL points at {icon_in_repo}, which is not in the repository"
    assert comfy["requires-comfyui"] == ">=0.3.75"  # the oldest host the tests run on (the pinned copy)
    # The browser files are registered once, through WEB_DIRECTORY in __init__.py; a [tool.comfy] web entry
    # would make ComfyUI serve js/ under a second address and the frontend load the extension twice.
    assert "web" not in comfy
    assert (PACK_DIR / "js").is_dir() and 'WEB_DIRECTORY = "./js"' in (PACK_DIR / "__init__.py").read_text()


def test_requirements_never_install_two_onnxruntime_builds():
    names = _requirement_names((PACK_DIR / "requirements.txt").read_text().splitlines())
    builds = [n for n in names if n.startswith("onnxruntime")]
    assert len(builds) == 1, f"requirements.txt lists {builds}; exactly one onnxruntime build may be installed"
    assert "torch" not in names  # ComfyUI brings its own
    deps = _requirement_names(_pyproject()["project"]["dependencies"])
    assert sorted(deps) == sorted(names), "pyproject dependencies and requirements.txt disagree"


OPENCV_BUILDS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


def _requirement(name: str) -> Requirement:
    lines = [line.split("#", 1)[0].strip() for line in (PACK_DIR / "requirements.txt").read_text().splitlines()]
    return next(Requirement(line) for line in lines if line and Requirement(line).name.lower() == name)


def test_insightface_is_a_range_that_keeps_either_tested_version():
    """A pin would make pip downgrade a working 2.x or upgrade a working 0.7.3 (spec section 2: both measured)."""
    spec = _requirement("insightface").specifier
    assert not any(s.operator in ("==", "===", "~=") for s in spec), f"insightface is pinned ({spec}); use a range"
    for version in ("0.7.3", "2.1"):
        assert spec.contains(version), f"{spec} would replace an installed insightface {version}"
    assert not spec.contains("0.7.2") and not spec.contains("3.0"), f"{spec} admits untested majors"
    assert _requirement_names([str(d) for d in _pyproject()["project"]["dependencies"] if d.startswith("insightface")]) == ["insightface"]
    assert "insightface>=0.7.3,<3" in _pyproject()["project"]["dependencies"]


def test_requirements_name_no_opencv_build():
    """insightface brings its own cv2 (2.x opencv-python, 0.7.3 opencv-python-headless); a second build overwrites it."""
    names = _requirement_names((PACK_DIR / "requirements.txt").read_text().splitlines())
    assert not [n for n in names if n in OPENCV_BUILDS], names


def test_installed_environment_has_one_cv2_and_one_onnxruntime():
    """What `pip install -r requirements.txt` produced here (CI builds it fresh): one cv2 build, one onnxruntime build."""
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert len([n for n in OPENCV_BUILDS if n in installed]) == 1, sorted(n for n in installed if n.startswith("opencv"))
    assert len([n for n in installed if n.startswith("onnxruntime")]) == 1, sorted(n for n in installed if n.startswith("onnx"))


def test_no_exec_or_eval_in_pack_code():
    pattern = re.compile(r"(?<![\w.])(exec|eval)\s*\(")
    offenders = [f"{p.relative_to(PACK_DIR)}:{i}" for p in _code_files()
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"`comfy node validate` rejects exec/eval: {offenders}"


def test_no_package_installs_at_run_time():
    pattern = re.compile(r"pip\W+install|pip\.main|ensurepip|subprocess|os\.system")
    offenders = []
    for path in _code_files():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if not pattern.search(code):
                continue
            if "pip install" in code and ("`" in code or "\"" in code or "'" in code) and "subprocess" not in code:
                continue  # an install command quoted in a message for the user
            offenders.append(f"{path.relative_to(PACK_DIR)}:{i}: {line.strip()}")
    assert not offenders, f"the registry forbids installing packages at run time: {offenders}"


def _ignored(rel: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/"):
            if rel.startswith(pattern) or f"/{pattern}" in f"/{rel}":
                return True
        elif fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(Path(rel).name, pattern):
            return True
    return False


def test_published_archive_keeps_tests_and_dev_tooling_out():
    patterns = [line.strip() for line in (PACK_DIR / ".comfyignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for required in ("tests/", ".host/", ".venv/", "bench/"):
        assert required in patterns
    tracked = subprocess.run(["git", "ls-files"], cwd=PACK_DIR, capture_output=True, text=True, check=True).stdout.split()
    published = [f for f in tracked if not _ignored(f, patterns)]
    assert not [f for f in published if f.startswith(("tests/", ".host/", ".venv/", "bench/"))]
    for needed in ("__init__.py", "nodes/core_nodes.py", "instantid/adapter.py", "LICENSE", "requirements.txt",
                   "workflows/basic.json", "scripts/download_models.py", "instantid/doctor.py"):
        assert needed in published, needed
    assert _pyproject()["tool"]["comfy"].get("includes", []) == []  # includes would override .comfyignore
