"""The pack's HTTP routes for its web side (``POST /instantid/migrate`` is in migrate_route.py).

``GET /instantid/model_packs`` -> ``{"insightface": ["antelopev2", ...]}``: the insightface model packs
that are complete on this server. The frontend's missing-models check cannot see ``.onnx`` files (its
model listing shows checkpoint-like files only), so ``js/missing_models.js`` asks here instead.
"""

from __future__ import annotations

import logging

from ..instantid import face_models

log = logging.getLogger(__name__)
PACKS_ROUTE = "/instantid/model_packs"


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


async def _model_packs(request):
    from aiohttp import web

    return web.json_response({face_models.FOLDER_NAME: complete_packs()})


def register() -> None:
    """Add the pack's routes to the running server; a no-op when the pack is loaded without one (in-process
    tests), and for a route already there (the pack loaded twice, under two folder names)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return
    from .migrate_route import ROUTE as MIGRATE_ROUTE
    from .migrate_route import migrate

    for method, path, handler in (("get", PACKS_ROUTE, _model_packs), ("post", MIGRATE_ROUTE, migrate)):
        if any(getattr(r, "path", None) == path for r in instance.routes):
            continue
        getattr(instance.routes, method)(path)(handler)
        log.debug("InstantID: route %s registered", path)
