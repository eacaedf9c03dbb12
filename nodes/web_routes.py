"""Read-only HTTP routes for the pack's web side.

``GET /instantid/model_packs`` -> ``{"insightface": ["antelopev2", ...]}``: the insightface model packs
that are complete on this server. The frontend's missing-models check cannot see ``.onnx`` files (its
model listing shows checkpoint-like files only), so ``js/missing_models.js`` asks here instead.
"""

from __future__ import annotations

import logging

from ..instantid import face_models

log = logging.getLogger(__name__)


def complete_packs() -> list[str]:
    """Names of the insightface packs whose needed files are all present."""
    packs = []
    for name in sorted(face_models.find_packs()):
        try:
            face_models.locate_pack(name)
        except face_models.FaceModelsError:
            continue
        packs.append(name)
    return packs


def register() -> None:
    """Add the routes to the running server; a no-op when the pack is loaded without one (in-process tests)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return

    @instance.routes.get("/instantid/model_packs")
    async def model_packs(request: web.Request) -> web.Response:
        return web.json_response({face_models.FOLDER_NAME: complete_packs()})

    log.debug("InstantID: route /instantid/model_packs registered")
