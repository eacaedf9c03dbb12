"""README stays true: its node reference is generated from the schemas, its commands are the ones CI runs."""

import os
import re
from pathlib import Path

from node_reference import README, current_section, render, write

import nodes as comfy_nodes

PACK = Path(__file__).resolve().parent.parent


def _our_nodes():
    return [cls for node_id, cls in sorted(comfy_nodes.NODE_CLASS_MAPPINGS.items()) if node_id.startswith("InstantID")]


def test_node_reference_is_current():
    if os.environ.get("INSTANTID_WRITE_README"):
        write(_our_nodes())
    assert current_section(README.read_text()) == render(_our_nodes()), (
        "README node reference is stale: run INSTANTID_WRITE_README=1 .venv/bin/python -m pytest tests/test_readme.py"
    )


def test_ci_runs_the_readme_test_command():
    readme = README.read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make test" in commands and "make run" in commands
    ci = (PACK / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call exactly the README's test command"
