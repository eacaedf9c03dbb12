// Browser side of the InstantID pack: shows the face-similarity scores and
// analysis notes that the nodes send back as UI text.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "instantid.faces",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("InstantID")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (!text) return;
      const lines = Array.isArray(text) ? text.join("\n") : String(text);
      let widget = this.widgets?.find((w) => w.name === "instantid_report");
      if (!widget) {
        widget = ComfyWidgets_STRING(this, lines);
      }
      widget.value = lines;
      this.setDirtyCanvas(true, true);
    };
  },
});

function ComfyWidgets_STRING(node, value) {
  const w = node.addWidget("text", "instantid_report", value, () => {}, { serialize: false });
  return w;
}
