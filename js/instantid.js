// Browser side of the InstantID pack: shows the text that the pack's nodes send
// back as UI text (the Doctor's report, the face-similarity scores, notes) in a
// read-only text box on the node. The box is display only: it is left out of
// both the saved workflow (widgets_values) and the API prompt.
import { app } from "../../scripts/app.js";

const EXTENSION_NAME = "instantid.faces";
const WIDGET_NAME = "instantid_report";

function reportWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (widget) return widget;
  const box = document.createElement("textarea");
  box.className = "comfy-multiline-input";
  box.readOnly = true;
  box.spellcheck = false;
  box.style.opacity = "0.85";
  widget = node.addDOMWidget(WIDGET_NAME, "instantid_text", box, {
    getValue: () => box.value,
    setValue: (value) => {
      box.value = value;
    },
    serialize: false, // not in the API prompt
  });
  widget.serialize = false; // not in the workflow's widgets_values
  widget.inputEl = box;
  return widget;
}

// If this folder is ever served twice (a [tool.comfy] web entry beside
// WEB_DIRECTORY, or the pack installed under two folder names), the frontend
// runs this script twice: register only once.
const registered = Array.from(app.extensions ?? [], (e) => e.name).includes(EXTENSION_NAME);

if (!registered) {
  app.registerExtension({
    name: EXTENSION_NAME,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (!nodeData.name.startsWith("InstantID")) return;
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const text = message?.text;
        if (text == null || text.length === 0) return;
        const widget = reportWidget(this);
        widget.value = Array.isArray(text) ? text.join("\n") : String(text);
        const [width, height] = this.size;
        const wanted = this.computeSize();
        this.setSize([Math.max(width, wanted[0], 480), Math.max(height, wanted[1], 260)]);
        this.setDirtyCanvas(true, true);
      };
    },
  });
}
