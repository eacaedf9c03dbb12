// Browser side of the InstantID pack: shows the text that the pack's nodes send back as UI text (the
// Doctor's report, the face-similarity scores, notes) in a read-only panel on the node. A Doctor report
// ("[error] check: detail" lines, indented "fix:" lines, a count line) is shown with its summary on top:
// the counts and every problem, coloured, always in view; the findings below scroll. The panel is display
// only: left out of both the saved workflow (widgets_values) and the API prompt. Its styles live in its
// own shadow root, so nothing leaks into the page.
import { app } from "../../scripts/app.js";

const EXTENSION_NAME = "instantid.faces";
const WIDGET_NAME = "instantid_report";
const FINDING = /^\[(ok|warn|error)\]\s*(.*)$/;
const COUNTS = /^\d+ error\(s\), \d+ warning\(s\)/;
const SYMBOL = { error: "\u2716", warn: "\u26A0", ok: "\u2714" };

const STYLE = `
  :host { display: block; }
  .report { box-sizing: border-box; height: 100%; display: flex; flex-direction: column; overflow: hidden;
            font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #ddd;
            background: rgba(0, 0, 0, 0.28); border-radius: 6px; }
  .summary { flex: none; padding: 6px 10px; border-bottom: 1px solid rgba(255, 255, 255, 0.15); }
  .counts { font-weight: 600; font-size: 14px; }
  .summary ul { margin: 2px 0 0; padding: 0; list-style: none; }
  .summary li { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .details { flex: 1 1 auto; overflow: auto; padding: 4px 10px 8px; user-select: text; }
  .finding { margin: 3px 0; padding-left: 1.4em; text-indent: -1.4em; overflow-wrap: anywhere; }
  .more { margin: 1px 0 0 1.4em; text-indent: 0; color: #bbb; overflow-wrap: anywhere; }
  .check { font-weight: 600; }
  .plain { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; font: inherit; }
  .error { color: #ff7b7b; } .warn { color: #f2c14e; } .ok { color: #6fcf87; }
  .more.error, .more.warn, .more.ok { color: #bbb; }
`;

// -> {findings: [{status, check, detail, more: [...]}], rest: [...]} or null when the text is no report.
function parseReport(text) {
  const findings = [];
  const rest = [];
  for (const line of text.split("\n")) {
    const found = FINDING.exec(line);
    if (found) {
      const [check, ...detail] = found[2].split(": ");
      findings.push({ status: found[1], check, detail: detail.join(": "), more: [] });
    } else if (/^\s+\S/.test(line) && findings.length) {
      findings.at(-1).more.push(line.trim());
    } else if (line.trim() && !COUNTS.test(line.trim())) {
      rest.push(line);
    }
  }
  return findings.length ? { findings, rest } : null;
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text != null) el.textContent = text;
  return el;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function render(panel, text) {
  panel.replaceChildren();
  const report = parseReport(text);
  if (!report) {
    panel.append(element("div", "details", null));
    panel.lastChild.append(element("pre", "plain", text));
    return;
  }
  const byStatus = (status) => report.findings.filter((f) => f.status === status);
  const problems = [...byStatus("error"), ...byStatus("warn")]; // worst first, each in the report's order
  const errors = byStatus("error").length;
  const warnings = problems.length - errors;
  const summary = element("div", "summary");
  const worst = errors ? "error" : warnings ? "warn" : "ok";
  const counts = problems.length
    ? `${plural(errors, "error")}, ${plural(warnings, "warning")}`
    : "No problems: InstantID is ready";
  summary.append(element("div", `counts ${worst}`, counts));
  const list = element("ul");
  for (const f of problems) list.append(element("li", f.status, `${SYMBOL[f.status]} ${f.check}`));
  summary.append(list);
  const details = element("div", "details");
  for (const f of [...problems, ...byStatus("ok")]) {
    const row = element("div", `finding ${f.status}`);
    row.append(`${SYMBOL[f.status]} `, element("span", "check", f.check), f.detail ? `: ${f.detail}` : "");
    for (const line of f.more) row.append(element("div", `more ${f.status}`, line));
    details.append(row);
  }
  for (const line of report.rest) details.append(element("pre", "plain", line));
  panel.append(summary, details);
}

function reportWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (widget) return widget;
  const host = document.createElement("div");
  const root = host.attachShadow({ mode: "open" });
  const style = document.createElement("style");
  style.textContent = STYLE;
  const panel = element("div", "report");
  root.append(style, panel);
  let value = "";
  widget = node.addDOMWidget(WIDGET_NAME, "instantid_report", host, {
    getValue: () => value,
    setValue: (text) => {
      value = String(text ?? "");
      render(panel, value);
    },
    getMinHeight: () => 160,
    serialize: false, // not in the API prompt
  });
  widget.serialize = false; // not in the workflow's widgets_values
  widget.inputEl = host;
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
        this.setSize([Math.max(width, wanted[0], 560), Math.max(height, wanted[1], 440)]);
        this.setDirtyCanvas(true, true);
      };
    },
  });
}
