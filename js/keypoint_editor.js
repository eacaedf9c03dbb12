// InstantID Keypoint Editor: the pose hint drawn on a canvas of the generation size, five draggable points
// per face. The widget value is the node's `keypoints` STRING (JSON, coordinates 0..1 of width and height):
// it is what the workflow saves and the API prompt sends, and the server checks it before anything runs.
// The drawing constants (colours, limb pairs, stick width, disc radius, dimming) come from the node schema
// (input option `instantid_hint_style`, made from instantid/keypoints.py); none are kept here.
import { app } from "../../scripts/app.js";

const EXTENSION_NAME = "instantid.keypoint_editor";
const NODE_CLASS = "InstantIDKeypointEditor";
const WIDGET_TYPE = "INSTANTID_KEYPOINTS";
const STYLE_KEY = "instantid_hint_style";
const INPUT_FACES_KEY = "instantid_input_faces";
const HIT_SLOP = 8; // display pixels a click may miss a disc by and still grab it
const TURN_STEP = 5; // degrees per rotate click
const SCALE_STEP = 1.1;
const UNDO_LIMIT = 100;
const round6 = (v) => Math.round(v * 1e6) / 1e6;
const clamp01 = (v) => Math.min(1, Math.max(0, v));

function css(el, styles) {
  Object.assign(el.style, styles);
  return el;
}

function rgb([r, g, b], factor = 1) {
  // The engine dims limbs by a factor with truncation to uint8.
  return `rgb(${Math.trunc(r * factor)}, ${Math.trunc(g * factor)}, ${Math.trunc(b * factor)})`;
}

// Checks the structure the server checks, so a value the page cannot show is kept as text (and reported by
// the server at queue time) instead of being rewritten.
function parseFaces(text) {
  const data = JSON.parse(text);
  const faces = data?.faces;
  if (!Array.isArray(faces) || faces.length === 0) throw new Error("no 'faces' list");
  for (const face of faces) {
    if (!Array.isArray(face) || face.length !== 5) throw new Error("a face needs 5 points");
    for (const p of face) {
      if (!Array.isArray(p) || p.length !== 2 || !p.every((v) => typeof v === "number" && Number.isFinite(v))) {
        throw new Error("a point needs two numbers");
      }
    }
  }
  return faces.map((face) => face.map(([x, y]) => [x, y]));
}

// Similarity transform of one face in generation pixels (so the aspect ratio is respected), about the mean of
// its points: mirror (labels swapped as the engine's MIRROR_ORDER says), then rotate counter-clockwise on
// screen by `degrees` and scale, then translate.
function transformFace(face, size, { degrees = 0, scale = 1, dx = 0, dy = 0, mirrorOrder = null }) {
  const [W, H] = size;
  let pts = face.map(([u, v]) => [u * W, v * H]);
  const cx = pts.reduce((s, p) => s + p[0], 0) / pts.length;
  const cy = pts.reduce((s, p) => s + p[1], 0) / pts.length;
  if (mirrorOrder) pts = mirrorOrder.map((i) => [2 * cx - pts[i][0], pts[i][1]]);
  const t = (degrees * Math.PI) / 180;
  const c = Math.cos(t) * scale;
  const s = Math.sin(t) * scale;
  return pts.map(([x, y]) => {
    const ox = x - cx;
    const oy = y - cy;
    return [clamp01((cx + c * ox + s * oy + dx) / W), clamp01((cy - s * ox + c * oy + dy) / H)];
  });
}

// One face as instantid/keypoints.py draw_keypoints draws it, at `scale` display pixels per generation pixel:
// limbs as filled ellipses (integer centre, semi-axes int(length/2) and the stick width, integer-degree
// rotation) in the dimmed colour of their non-nose point, then full-colour discs at the integer pixels.
function drawFace(ctx, face, size, scale, style) {
  const [W, H] = size;
  const pts = face.map(([u, v]) => [u * W, v * H]);
  const at = (v) => (Math.trunc(v) + 0.5) * scale; // pixel centre of the integer pixel the engine uses
  for (const [a, b] of style.limbs) {
    const [xa, ya] = pts[a];
    const [xb, yb] = pts[b];
    const semi = Math.trunc(Math.hypot(xa - xb, ya - yb) / 2);
    const angle = Math.trunc((Math.atan2(ya - yb, xa - xb) * 180) / Math.PI);
    ctx.beginPath();
    ctx.ellipse(at((xa + xb) / 2), at((ya + yb) / 2), Math.max(semi, 0.5) * scale, style.stick_width * scale,
      (angle * Math.PI) / 180, 0, 2 * Math.PI);
    ctx.fillStyle = rgb(style.colours[a], style.limb_dim);
    ctx.fill();
  }
  pts.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(at(x), at(y), style.point_radius * scale, 0, 2 * Math.PI);
    ctx.fillStyle = rgb(style.colours[i]);
    ctx.fill();
  });
}

// The whole hint: black canvas, each face drawn on its own layer and combined by the per-channel maximum
// ("lighten"), as the engine combines several faces.
export function renderHint(canvas, faces, size, scale, style) {
  const ctx = canvas.getContext("2d");
  ctx.save();
  ctx.globalCompositeOperation = "source-over";
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const layer = document.createElement("canvas");
  layer.width = canvas.width;
  layer.height = canvas.height;
  const lctx = layer.getContext("2d");
  for (const face of faces) {
    lctx.globalCompositeOperation = "source-over";
    lctx.clearRect(0, 0, layer.width, layer.height);
    drawFace(lctx, face, size, scale, style);
    ctx.globalCompositeOperation = "lighten";
    ctx.drawImage(layer, 0, 0);
  }
  ctx.restore();
}

class KeypointEditor {
  constructor(node, style, initialText) {
    this.node = node;
    this.style = style;
    this.undoStack = [];
    this.selected = 0;
    this.inputFaces = null;
    this.drag = null;
    this.error = null;
    this.widget = null;
    this.buildDom();
    this.setText(initialText);
  }

  // ------------------------------------------------------------ value

  get text() {
    return this._text;
  }

  setText(text) {
    this._text = String(text ?? "");
    try {
      this.faces = parseFaces(this._text);
      this.error = null;
      this.selected = Math.min(this.selected, this.faces.length - 1);
    } catch (err) {
      this.faces = [];
      this.error = `value not shown (${err.message}); the server will report it when queued`;
    }
    this.redraw();
  }

  commit(faces) {
    this.faces = faces;
    this._text = JSON.stringify({ faces: faces.map((f) => f.map(([x, y]) => [round6(x), round6(y)])) });
    this.error = null;
    this.widget?.callback?.(this._text);
    this.node.setDirtyCanvas?.(true, true);
    this.redraw();
  }

  snapshot() {
    this.undoStack.push(this._text);
    if (this.undoStack.length > UNDO_LIMIT) this.undoStack.shift();
  }

  edit(change) {
    if (!this.faces.length) return;
    this.snapshot();
    this.commit(change(this.faces.map((f) => f.map((p) => [...p]))));
  }

  undo() {
    if (!this.undoStack.length) return;
    this.setText(this.undoStack.pop());
    this.widget?.callback?.(this._text);
    this.node.setDirtyCanvas?.(true, true);
  }

  size() {
    const value = (name) => Number(this.node.widgets?.find((w) => w.name === name)?.value) || 1024;
    return [value("width"), value("height")];
  }

  // ------------------------------------------------------------ DOM

  buildDom() {
    this.root = css(document.createElement("div"), {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
      boxSizing: "border-box", font: "12px sans-serif", color: "#ddd",
    });
    this.root.className = "instantid-keypoint-editor";
    const bar = css(document.createElement("div"), { display: "flex", flexWrap: "wrap", gap: "3px" });
    const button = (label, title, action) => {
      const b = css(document.createElement("button"), {
        padding: "1px 6px", font: "inherit", color: "inherit", background: "#333", border: "1px solid #555",
        borderRadius: "3px", cursor: "pointer",
      });
      b.type = "button";
      b.textContent = label;
      b.title = title;
      b.dataset.action = title;
      b.addEventListener("click", (e) => {
        e.stopPropagation();
        action();
      });
      bar.appendChild(b);
      return b;
    };
    const selectedFace = (fn) => () => this.edit((faces) => {
      faces[this.selected] = fn(faces[this.selected]);
      return faces;
    });
    const turn = (options) => selectedFace((face) => transformFace(face, this.size(), options));
    this.buttons = {
      add: button("+ face", "add face", () => this.edit((faces) => {
        if (faces.length >= this.style.max_faces) return faces;
        const [W, H] = this.size();
        const shift = ((faces.length % 5) - 2) * 0.15; // side by side, not on top of each other
        // The server's default face is made for a square canvas: keep its shape on this one.
        faces.push(this.style.default_face.map(([x, y]) => [clamp01(0.5 + ((x - 0.5) * H) / W + shift), y]));
        this.selected = faces.length - 1;
        return faces;
      })),
      remove: button("− face", "remove face", () => this.edit((faces) => {
        if (faces.length <= 1) return faces;
        faces.splice(this.selected, 1);
        this.selected = Math.max(0, this.selected - 1);
        return faces;
      })),
      left: button("⟲", "rotate left", turn({ degrees: TURN_STEP })),
      right: button("⟳", "rotate right", turn({ degrees: -TURN_STEP })),
      smaller: button("−", "smaller", turn({ scale: 1 / SCALE_STEP })),
      larger: button("+", "larger", turn({ scale: SCALE_STEP })),
      mirror: button("⇋", "mirror", turn({ mirrorOrder: this.style.mirror_order })),
      input: button("from input", "use input faces", () => {
        if (this.inputFaces?.length) this.edit(() => this.inputFaces.map((f) => f.map((p) => [...p])));
      }),
      undo: button("undo", "undo", () => this.undo()),
    };
    this.stage = css(document.createElement("div"), {
      flex: "1 1 auto", minHeight: "60px", display: "flex", alignItems: "center", justifyContent: "center",
      overflow: "hidden",
    });
    this.canvas = css(document.createElement("canvas"), { touchAction: "none", cursor: "crosshair", outline: "1px solid #555" });
    this.stage.appendChild(this.canvas);
    this.status = css(document.createElement("div"), { minHeight: "14px", opacity: "0.8", whiteSpace: "nowrap", overflow: "hidden" });
    this.root.append(bar, this.stage, this.status);
    this.canvas.addEventListener("pointerdown", (e) => this.pointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.pointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.pointerUp(e));
    this.canvas.addEventListener("pointercancel", (e) => this.pointerUp(e));
    new ResizeObserver(() => this.redraw()).observe(this.stage);
  }

  // ------------------------------------------------------------ drawing

  redraw() {
    if (!this.canvas) return;
    const [W, H] = this.size();
    const box = this.stage.getBoundingClientRect();
    const zoom = box.width / Math.max(this.stage.offsetWidth, 1) || 1; // the frontend scales widgets with the graph
    const availW = Math.max(this.stage.offsetWidth, 20);
    const availH = Math.max(this.stage.offsetHeight, 20);
    const cssScale = Math.min(availW / W, availH / H);
    const cssW = Math.max(1, Math.floor(W * cssScale));
    const cssH = Math.max(1, Math.floor(H * cssScale));
    const dpr = (window.devicePixelRatio || 1) * zoom;
    css(this.canvas, { width: `${cssW}px`, height: `${cssH}px` });
    this.canvas.width = Math.max(1, Math.round(cssW * dpr));
    this.canvas.height = Math.max(1, Math.round(cssH * dpr));
    const scale = this.canvas.width / W;
    renderHint(this.canvas, this.faces, [W, H], scale, this.style);
    this.drawSelection(scale, [W, H]);
    this.drawnFor = `${this._text}|${W}x${H}`;
    this.updateStatus([W, H]);
  }

  drawSelection(scale, [W, H]) {
    const face = this.faces[this.selected];
    if (!face || this.faces.length < 2) return;
    const ctx = this.canvas.getContext("2d");
    const xs = face.map(([u]) => u * W * scale);
    const ys = face.map(([, v]) => v * H * scale);
    const pad = (this.style.point_radius + 4) * scale;
    ctx.save();
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = "rgba(255,255,255,0.7)";
    ctx.lineWidth = 1;
    ctx.strokeRect(Math.min(...xs) - pad, Math.min(...ys) - pad, Math.max(...xs) - Math.min(...xs) + 2 * pad,
      Math.max(...ys) - Math.min(...ys) + 2 * pad);
    ctx.restore();
  }

  updateStatus([W, H]) {
    const b = this.buttons;
    b.remove.disabled = this.faces.length <= 1;
    b.add.disabled = this.faces.length >= this.style.max_faces;
    b.input.disabled = !this.inputFaces?.length;
    b.undo.disabled = !this.undoStack.length;
    const input = this.inputFaces?.length ? ` · input: ${this.inputFaces.length} face(s)` : "";
    this.status.textContent = this.error
      ?? `${W}×${H} · face ${this.selected + 1}/${this.faces.length}${input} · drag a point; drag a face to move, Shift+drag to turn/scale`;
    this.status.style.color = this.error ? "#f88" : "";
  }

  // ------------------------------------------------------------ mouse

  toNormalised(e) {
    const r = this.canvas.getBoundingClientRect();
    return [clamp01((e.clientX - r.left) / r.width), clamp01((e.clientY - r.top) / r.height)];
  }

  hit(e) {
    const r = this.canvas.getBoundingClientRect();
    const [W, H] = this.size();
    const perPixel = r.width / W;
    const reach = this.style.point_radius * perPixel + HIT_SLOP;
    const order = [this.selected, ...this.faces.keys()].filter((v, i, a) => a.indexOf(v) === i);
    for (const f of order) {
      const face = this.faces[f];
      if (!face) continue;
      for (let p = face.length - 1; p >= 0; p--) { // later discs are drawn on top
        const dx = e.clientX - (r.left + face[p][0] * r.width);
        const dy = e.clientY - (r.top + face[p][1] * r.height);
        if (Math.hypot(dx, dy) <= reach) return { face: f, point: p };
      }
    }
    for (const f of order) {
      const face = this.faces[f];
      if (!face) continue;
      const xs = face.map(([u]) => r.left + u * r.width);
      const ys = face.map(([, v]) => r.top + v * r.height);
      if (e.clientX >= Math.min(...xs) - reach && e.clientX <= Math.max(...xs) + reach
        && e.clientY >= Math.min(...ys) - reach && e.clientY <= Math.max(...ys) + reach) return { face: f, point: null };
    }
    return null;
  }

  pointerDown(e) {
    if (e.button !== 0 || !this.faces.length) return;
    e.preventDefault();
    e.stopPropagation();
    const target = this.hit(e);
    if (!target) return;
    this.selected = target.face;
    this.snapshot();
    this.drag = { ...target, start: this.toNormalised(e), face0: this.faces[target.face].map((p) => [...p]),
      turn: e.shiftKey && target.point === null, moved: false };
    this.canvas.setPointerCapture(e.pointerId);
    this.redraw();
  }

  pointerMove(e) {
    const d = this.drag;
    if (!d) return;
    e.preventDefault();
    e.stopPropagation();
    const [u, v] = this.toNormalised(e);
    const faces = this.faces.map((f) => f.map((p) => [...p]));
    if (d.point !== null) {
      faces[d.face][d.point] = [u, v]; // the point goes exactly where the pointer is
    } else if (d.turn) {
      const [W, H] = this.size();
      const cx = d.face0.reduce((s, p) => s + p[0], 0) / 5 * W;
      const cy = d.face0.reduce((s, p) => s + p[1], 0) / 5 * H;
      const a0 = [d.start[0] * W - cx, d.start[1] * H - cy];
      const a1 = [u * W - cx, v * H - cy];
      const len0 = Math.hypot(...a0);
      if (len0 < 1) return;
      // screen y points down: counter-clockwise on screen is a negative angle in these coordinates
      const degrees = ((Math.atan2(a0[1], a0[0]) - Math.atan2(a1[1], a1[0])) * 180) / Math.PI;
      faces[d.face] = transformFace(d.face0, [W, H], { degrees, scale: Math.hypot(...a1) / len0 });
    } else {
      const [W, H] = this.size();
      faces[d.face] = transformFace(d.face0, [W, H], { dx: (u - d.start[0]) * W, dy: (v - d.start[1]) * H });
    }
    d.moved = true;
    this.commit(faces);
  }

  pointerUp(e) {
    const d = this.drag;
    if (!d) return;
    e.stopPropagation();
    this.drag = null;
    if (this.canvas.hasPointerCapture?.(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    if (!d.moved) this.undoStack.pop(); // a click only selects
    this.redraw();
  }
}

function editorWidget(node, inputName, inputData) {
  const options = inputData?.[1] ?? {};
  const style = options[STYLE_KEY];
  if (!style) throw new Error(`${NODE_CLASS}: the node schema has no ${STYLE_KEY}; update the InstantID pack`);
  const editor = new KeypointEditor(node, style, options.default ?? "");
  const widget = node.addDOMWidget(inputName, WIDGET_TYPE, editor.root, {
    getValue: () => editor.text,
    setValue: (value) => editor.setText(value),
    getMinHeight: () => 260,
    hideOnZoom: false,
  });
  editor.widget = widget;
  widget.instantidEditor = editor;
  node.instantidEditor = editor;
  return { widget, minWidth: 300, minHeight: 260 };
}

// Served twice (the pack under two folder names), the frontend would run this module twice: register once.
const registered = Array.from(app.extensions ?? [], (e) => e.name).includes(EXTENSION_NAME);

if (!registered) {
  app.registerExtension({
    name: EXTENSION_NAME,
    getCustomWidgets() {
      return { [WIDGET_TYPE]: editorWidget };
    },
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (nodeData.name !== NODE_CLASS) return;
      // The server declares a plain STRING (the API takes JSON text); only the page shows it as the editor.
      const spec = nodeData.input?.required?.keypoints;
      if (spec) spec[1] = { ...(spec[1] ?? {}), widgetType: WIDGET_TYPE };
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        const [w, h] = this.size;
        this.setSize([Math.max(w, 400), Math.max(h, 520)]);
        return result;
      };
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const faces = message?.[INPUT_FACES_KEY];
        if (this.instantidEditor && Array.isArray(faces)) {
          this.instantidEditor.inputFaces = faces;
          this.instantidEditor.redraw();
        }
      };
      const onDrawForeground = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function () {
        onDrawForeground?.apply(this, arguments);
        // width/height widgets changed (typed, loaded, or set through the API of the page): redraw at the new aspect
        const editor = this.instantidEditor;
        if (editor) {
          const [W, H] = editor.size();
          if (editor.drawnFor !== `${editor.text}|${W}x${H}`) editor.redraw();
        }
      };
    },
  });
}
