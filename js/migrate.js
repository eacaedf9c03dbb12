// "Convert cubiq InstantID nodes": a menu command (Edit menu, and the command
// palette) that converts the open graph from cubiq/ComfyUI_InstantID's nodes to
// this pack's. The page holds no conversion rules: it sends the graph to the
// server (POST /instantid/migrate, the same code as `python -m instantid.migrate`)
// and opens what comes back as a new workflow tab, the original left as it was.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION_NAME = "instantid.migrate";
const COMMAND_ID = "InstantID.ConvertCubiqWorkflow";
const ROUTE = "/instantid/migrate";

function toast(severity, summary, detail) {
  const toasts = app.extensionManager?.toast;
  if (toasts) {
    toasts.add({ severity, summary, detail, life: 20000 });
  } else {
    // Older frontends without the toast API: a plain dialog still shows the report.
    app.ui?.dialog?.show(`${summary}\n\n${detail}`);
  }
}

async function convertOpenGraph() {
  const response = await api.fetchApi(ROUTE, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ workflow: app.graph.serialize() }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    toast("error", "InstantID: cannot convert this workflow", body.error ?? `server answered ${response.status}`);
    return;
  }
  const { converted, kept } = body.report;
  if (converted.length === 0 && kept.length === 0) {
    toast("info", "InstantID: nothing to convert", body.text);
    return;
  }
  await app.loadGraphData(body.workflow, true, true, null, { showMissingNodesDialog: kept.length > 0 });
  toast(kept.length ? "warn" : "success", `InstantID: converted ${converted.length} node(s)`, body.text);
}

// Registered once even if this folder is served twice (see instantid.js).
if (!Array.from(app.extensions ?? [], (e) => e.name).includes(EXTENSION_NAME)) {
  app.registerExtension({
    name: EXTENSION_NAME,
    commands: [
      {
        id: COMMAND_ID,
        label: "Convert cubiq InstantID nodes",
        icon: "pi pi-sync",
        function: convertOpenGraph,
      },
    ],
    menuCommands: [{ path: ["Edit"], commands: [COMMAND_ID] }],
  });
}
