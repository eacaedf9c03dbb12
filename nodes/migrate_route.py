"""The server side of the web UI's "convert cubiq InstantID nodes" command: ``POST /instantid/migrate``.

Body ``{"workflow": <the open graph, UI format>}``; answer ``{"workflow": <converted>, "report": {...}, "text": "..."}``
or, for something that is not a UI workflow, status 400 with ``{"error": "..."}``. The page only sends the graph and
loads what comes back: the conversion is :func:`instantid.migrate.migrate_workflow`, the same as the command line.
"""

from __future__ import annotations

import json
import logging

from ..instantid import face_models
from ..instantid.migrate import WorkflowFormatError, migrate_workflow

log = logging.getLogger(__name__)
ROUTE = "/instantid/migrate"


async def migrate(request):
    from aiohttp import web

    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return web.json_response({"error": f"the request body is not JSON ({exc}); send {{\"workflow\": <graph>}}."}, status=400)
    workflow = body.get("workflow") if isinstance(body, dict) else None
    if workflow is None:
        return web.json_response({"error": "send {\"workflow\": <the graph in UI format>}."}, status=400)
    try:
        converted, report = migrate_workflow(workflow, face_models.available_providers())
    except WorkflowFormatError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    log.info("InstantID: converted a cubiq workflow: %d node(s), %d kept", len(report.converted), len(report.kept))
    return web.json_response({"workflow": converted, "report": report.as_dict(), "text": report.text()})

