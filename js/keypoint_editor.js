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

// ------------------------------------------------------------ the hint, pixel for pixel as the engine draws it
// instantid/keypoints.py draws with OpenCV: limbs are ellipse2Poly polygons (integer vertices from a sine table of
// whole degrees with 7 decimals in single precision, rounded half to even) filled by fillConvexPoly (8-connected
// outline plus scanline spans stepped in 16.16 fixed point); discs are every pixel within the radius; no
// anti-aliasing. The same rules are written out here so the page shows the very pixels the server will make
// (tests/test_keypoint_editor_browser.py compares them). Lines are not clipped the way OpenCV clips them, so a
// limb crossing the canvas edge can differ there by a pixel.
const SIN_TABLE = Array.from({ length: 451 }, (_, k) => Math.fround(Number(Math.sin((k * Math.PI) / 180).toFixed(7))));
const MAX_EXACT_PIXELS = 2048 * 2048; // above this the preview is drawn at a reduced size (approximate)

function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d !== 0.5) return d > 0.5 ? f + 1 : f;
  return f % 2 === 0 ? f : f + 1;
}

function ellipsePolygon(cx, cy, a, b, degrees) {
  let angle = degrees;
  while (angle < 0) angle += 360;
  while (angle > 360) angle -= 360;
  const cos = SIN_TABLE[450 - angle];
  const sin = SIN_TABLE[angle];
  const pts = [];
  for (let i = 0; i <= 360; i++) {
    const x = a * SIN_TABLE[450 - i];
    const y = b * SIN_TABLE[i];
    const p = [roundHalfEven(cx + x * cos - y * sin), roundHalfEven(cy + x * sin + y * cos)];
    const last = pts[pts.length - 1];
    if (!last || last[0] !== p[0] || last[1] !== p[1]) pts.push(p);
  }
  return pts;
}

class Raster {
  constructor(width, height) {
    this.width = width;
    this.height = height;
    this.data = new Uint8ClampedArray(width * height * 4);
  }

  set(x, y, colour) {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 4;
    this.data[i] = colour[0];
    this.data[i + 1] = colour[1];
    this.data[i + 2] = colour[2];
    this.data[i + 3] = 255;
  }

  span(y, x1, x2, colour) {
    if (y < 0 || y >= this.height) return;
    for (let x = Math.max(x1, 0); x <= Math.min(x2, this.width - 1); x++) this.set(x, y, colour);
  }

  // 8-connected line from the endpoint with the smaller x; the minor axis steps only past the half-pixel mark.
  line([x0, y0], [x1, y1], colour) {
    if (x1 < x0) [x0, y0, x1, y1] = [x1, y1, x0, y0];
    const sy = y1 < y0 ? -1 : 1;
    const dx = x1 - x0;
    const dy = Math.abs(y1 - y0);
    const steep = dy > dx;
    const major = steep ? dy : dx;
    const minor = steep ? dx : dy;
    let err = major - 2 * minor;
    let x = x0;
    let y = y0;
    for (let k = 0; k <= major; k++) {
      this.set(x, y, colour);
      if (err < 0) {
        if (steep) x += 1;
        else y += sy;
        err += 2 * major;
      }
      err -= 2 * minor;
      if (steep) y += sy;
      else x += 1;
    }
  }

  // Convex polygon: its outline, then for each row the span between the two vertex chains that run down from
  // the (first) top vertex, each chain's x stepped per row in 16.16 fixed point and rounded half up.
  convexPolygon(pts, colour) {
    const n = pts.length;
    pts.forEach((p, i) => this.line(pts[(i + n - 1) % n], p, colour));
    const ys = pts.map((p) => p[1]);
    const top = ys.indexOf(Math.min(...ys));
    const chains = [1, n - 1].map((di) => {
      const rows = new Map();
      let i0 = top;
      for (let count = n; count > 0; count--) {
        const i1 = (i0 + di) % n;
        const [xs, ys0] = pts[i0];
        const [xe, ye] = pts[i1];
        if (ye < ys0) break;
        if (ye > ys0) {
          const step = Math.trunc(((xe - xs) * 65536 * 2 + (ye - ys0)) / (2 * (ye - ys0)));
          for (let y = ys0; y <= ye; y++) rows.set(y, xs * 65536 + (y - ys0) * step);
        }
        i0 = i1;
      }
      return rows;
    });
    for (const [y, xa] of chains[0]) {
      const xb = chains[1].get(y);
      if (xb === undefined) continue;
      this.span(y, Math.floor((Math.min(xa, xb) + 32768) / 65536), Math.floor((Math.max(xa, xb) + 32768) / 65536), colour);
    }
  }

  disc(cx, cy, r, colour) {
    for (let dy = -r; dy <= r; dy++) {
      let reach = Math.floor(Math.sqrt(r * r - dy * dy));
      while ((reach + 1) ** 2 + dy * dy <= r * r) reach += 1;
      while (reach > 0 && reach ** 2 + dy * dy > r * r) reach -= 1;
      this.span(cy + dy, cx - reach, cx + reach, colour);
    }
  }
}

// One face drawn as draw_keypoints draws it: limbs in the dimmed colour of their non-nose point, then discs.
function drawFace(raster, face, [W, H], k, style) {
  const pts = face.map(([u, v]) => [u * W * k, v * H * k]);
  const stick = Math.max(1, Math.round(style.stick_width * k));
  const radius = Math.max(1, Math.round(style.point_radius * k));
  for (const [a, b] of style.limbs) {
    const [xa, ya] = pts[a];
    const [xb, yb] = pts[b];
    const semi = Math.trunc(Math.hypot(xa - xb, ya - yb) / 2);
    const angle = Math.trunc(Math.atan2(ya - yb, xa - xb) * (180 / Math.PI)); // as Python's math.degrees
    const colour = style.colours[a].map((c) => Math.trunc(c * style.limb_dim));
    raster.convexPolygon(ellipsePolygon(Math.trunc((xa + xb) / 2), Math.trunc((ya + yb) / 2), semi, stick, angle), colour);
  }
  pts.forEach(([x, y], i) => raster.disc(Math.trunc(x), Math.trunc(y), radius, style.colours[i]));
}

// The hint of all faces as RGBA ImageData of the generation size (or a reduced size above MAX_EXACT_PIXELS):
// black, each face drawn on its own layer, layers combined by the per-channel maximum as the engine combines them.
export function hintImage(faces, [W, H], style) {
  const k = Math.min(1, Math.sqrt(MAX_EXACT_PIXELS / (W * H)));
  const w = Math.max(1, Math.round(W * k));
  const h = Math.max(1, Math.round(H * k));
  const out = new ImageData(w, h);
  for (let i = 3; i < out.data.length; i += 4) out.data[i] = 255;
  const layer = new Raster(w, h);
  const reach = Math.max(style.point_radius, style.stick_width) + 2;
  for (const face of faces) {
    drawFace(layer, face, [W, H], k, style);
    // Only the face's own box holds its pixels: combine and clear there, not over the whole canvas.
    const xs = face.map(([u]) => u * W * k);
    const ys = face.map(([, v]) => v * H * k);
    const x0 = Math.max(0, Math.floor(Math.min(...xs)) - reach);
    const x1 = Math.min(w - 1, Math.ceil(Math.max(...xs)) + reach);
    const y0 = Math.max(0, Math.floor(Math.min(...ys)) - reach);
    const y1 = Math.min(h - 1, Math.ceil(Math.max(...ys)) + reach);
    for (let y = y0; y <= y1; y++) {
      for (let i = (y * w + x0) * 4, end = (y * w + x1) * 4; i <= end; i += 4) {
        if (!layer.data[i + 3]) continue;
        out.data[i] = Math.max(out.data[i], layer.data[i]);
        out.data[i + 1] = Math.max(out.data[i + 1], layer.data[i + 1]);
        out.data[i + 2] = Math.max(out.data[i + 2], layer.data[i + 2]);
        layer.data.fill(0, i, i + 4);
      }
    }
  }
  return out;
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
      if (faces[this.selected]) faces[this.selected] = fn(faces[this.selected]);
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
    const image = hintImage(this.faces, [W, H], this.style);
    const full = (this.fullCanvas ??= document.createElement("canvas"));
    full.width = image.width;
    full.height = image.height;
    full.getContext("2d").putImageData(image, 0, 0);
    const ctx = this.canvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(full, 0, 0, this.canvas.width, this.canvas.height);
    this.drawSelection(this.canvas.width / W, [W, H]);
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
