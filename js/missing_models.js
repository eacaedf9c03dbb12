// Keeps the frontend's missing-models dialog truthful for the insightface model packs.
//
// A template's loader nodes list the files they need in `properties.models` ({name, url, directory}); on
// opening a workflow the frontend lists every entry whose file it cannot find in the model folder listing
// (/experiment/models/<directory>). That listing only shows checkpoint-like files (.safetensors, .bin, ...),
// never the .onnx files of a face-analysis pack, so an installed antelopev2 would be reported missing every
// time. Before the frontend checks, this asks the pack (/instantid/model_packs) which packs are complete and
// hides their entries from the check; the node keeps its entries (restored once it is configured), so a
// saved workflow is unchanged.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION_NAME = "instantid.missingModels";
const UNLISTED_FOLDERS = new Set(["insightface"]); // folders whose files the frontend cannot see
// The shortened list a node is configured with -> its full list. Keyed by the array itself (the frontend copies
// properties shallowly), so that two graphs loading at once (a restored tab and a template) cannot mix up.
const held = new WeakMap();

async function installedPacks() {
  try {
    const response = await api.fetchApi("/instantid/model_packs");
    return response.ok ? await response.json() : null;
  } catch {
    return null; // the dialog then lists the pack, as it would without this module
  }
}

const registered = Array.from(app.extensions ?? [], (e) => e.name).includes(EXTENSION_NAME);

if (!registered) {
  app.registerExtension({
    name: EXTENSION_NAME,
    async beforeConfigureGraph(graphData) {
      const nodes = (graphData?.nodes ?? []).filter((node) =>
        node?.properties?.models?.some?.((model) => UNLISTED_FOLDERS.has(model?.directory)),
      );
      if (!nodes.length) return;
      const packs = await installedPacks();
      if (!packs) return;
      for (const node of nodes) {
        const models = node.properties.models;
        const present = (model) => UNLISTED_FOLDERS.has(model?.directory) && packs[model.directory]?.includes(model.name);
        if (!models.some(present)) continue;
        const shown = models.filter((model) => !present(model));
        held.set(shown, models);
        node.properties = { ...node.properties, models: shown };
      }
    },
    loadedGraphNode(node) {
      const shown = node.properties?.models;
      const models = shown && held.get(shown);
      if (models) node.properties.models = models;
    },
  });
}
