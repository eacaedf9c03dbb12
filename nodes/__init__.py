"""Registers the pack's nodes with ComfyUI (V3 extension)."""

from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

from ..instantid.paths import register_adapter_folder
from .core_nodes import CORE_NODES
from .doctor_node import DOCTOR_NODES

log = logging.getLogger(__name__)

register_adapter_folder()


def _face_nodes() -> list[type[io.ComfyNode]]:
    try:
        from .face_nodes import FACE_NODES
    except ImportError as exc:  # a broken optional dependency must not take the core nodes down
        log.warning("InstantID face nodes unavailable: %s", exc)
        return []
    return FACE_NODES


def _group_nodes() -> list[type[io.ComfyNode]]:
    try:
        from .group_nodes import GROUP_NODES
    except ImportError as exc:  # same optional dependencies as the face nodes (OpenCV)
        log.warning("InstantID group nodes unavailable: %s", exc)
        return []
    return GROUP_NODES


class InstantIDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*CORE_NODES, *_face_nodes(), *_group_nodes(), *DOCTOR_NODES]


async def comfy_entrypoint() -> InstantIDExtension:
    return InstantIDExtension()
