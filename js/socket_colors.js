// Colours for the pack's own socket and link types (INSTANTID_ADAPTER, INSTANTID_FACES, ...), which the
// frontend would otherwise draw grey. The frontend keeps slot colours in its colour palettes (node_slot,
// whose schema knows only core types) and copies them into the canvas's per-type tables
// (default_connection_color_byType, LGraphCanvas.link_type_colors); ours go into the same tables.
import { app } from "../../scripts/app.js";

const EXTENSION_NAME = "instantid.socketColors";
const PREFIX = "INSTANTID_";
// Picked away from the core palettes' hues (MODEL lavender, IMAGE blue, VAE red, LATENT pink, MASK green...).
const KNOWN = {
  INSTANTID_ADAPTER: "#5C6BC0",
  INSTANTID_FACES: "#E91E63",
  INSTANTID_FACE_ANALYZER: "#C0CA33",
};
const types = new Set(Object.keys(KNOWN));

// Types added later get a stable colour of their own from their name.
function colorFor(type) {
  if (KNOWN[type]) return KNOWN[type];
  let hash = 0;
  for (const ch of type) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 65%, 58%)`;
}

// The palette loader empties the entry of every type it does not name (Object.assign(table, {TYPE: ""}, ...)),
// at start-up and on every palette change, in an order this module does not control. An accessor entry turns
// that reset back into our colour, while a palette that does name the type keeps its own.
function pin(table, type) {
  let current = colorFor(type);
  Object.defineProperty(table, type, {
    configurable: true,
    enumerable: true,
    get: () => current,
    set: (value) => {
      current = value || colorFor(type);
    },
  });
}

function apply() {
  const canvas = app.canvas;
  if (!canvas) return;
  const linkColors = canvas.constructor.link_type_colors;
  for (const type of types) {
    if (!Object.getOwnPropertyDescriptor(canvas.default_connection_color_byType, type)?.get) {
      pin(canvas.default_connection_color_byType, type);
    }
    if (linkColors && !Object.getOwnPropertyDescriptor(linkColors, type)?.get) pin(linkColors, type);
    // Nodes 2.0 (Vue nodes) reads slot colours from these custom properties on <body>.
    document.body?.style.setProperty(`--color-datatype-${type}`, colorFor(type));
  }
  canvas.setDirty?.(true, true);
}

function collectTypes(nodeData) {
  const specs = [...Object.values(nodeData.input?.required ?? {}), ...Object.values(nodeData.input?.optional ?? {})];
  const names = [...specs.map((spec) => spec?.[0]), ...(nodeData.output ?? [])];
  for (const name of names) if (typeof name === "string" && name.startsWith(PREFIX)) types.add(name);
}

const registered = Array.from(app.extensions ?? [], (e) => e.name).includes(EXTENSION_NAME);

if (!registered) {
  app.registerExtension({
    name: EXTENSION_NAME,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      collectTypes(nodeData);
    },
    async setup() {
      apply();
      // The palette store removes the custom properties of types it does not name after this event.
      app.ui?.settings?.addEventListener?.("Comfy.ColorPalette.change", () => setTimeout(apply, 0));
    },
  });
}
