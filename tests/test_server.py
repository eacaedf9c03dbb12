"""The pack inside a real ComfyUI server process: nodes listed by /object_info."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import Server

    srv = Server(tmp_path_factory.mktemp("server-base"))
    yield srv
    srv.stop()


def test_object_info_lists_the_nodes(server):
    info = server.get("/object_info")
    for node_id in ("InstantIDLoader", "InstantIDApply", "InstantIDApplyAttention", "InstantIDApplyIdentityNet"):
        assert node_id in info, f"{node_id} missing from /object_info; server log:\n{server.log_text()[-3000:]}"
    apply = info["InstantIDApply"]
    assert apply["output"] == ["MODEL", "CONDITIONING", "CONDITIONING"]
    required = apply["input"]["required"]
    assert required["ip_weight"][1]["default"] == 0.8 and required["cn_strength"][1]["default"] == 0.8
    assert required["instantid"][0] == "INSTANTID_ADAPTER"
