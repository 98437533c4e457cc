// fastnn demo page: draw, send the drawing to /api/predict, show what comes back; train from
// the panel and follow the run's server-sent events. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const draw = $("draw");
const pen = draw.getContext("2d", { willReadFrequently: true });
const STROKE_WIDTH = 20; // on the 280-pixel canvas: about an MNIST pen stroke once scaled to 20x20

const state = {
  pointer: null,        // id of the pointer drawing now
  last: null,           // its last position, in canvas pixels
  ink: false,           // anything drawn since the last clear
  inFlight: false,      // a prediction request is on its way
  dirty: false,         // the drawing changed while it was
  latencies: [],        // round-trip times of /api/predict, ms (fetch to parsed JSON)
  idleWaiters: [],
  run: null,            // training curve of the current run
};

// ---- drawing -------------------------------------------------------------------------------

function canvasPoint(event) {
  const rect = draw.getBoundingClientRect();
  return [(event.clientX - rect.left) * draw.width / rect.width,
          (event.clientY - rect.top) * draw.height / rect.height];
}

function strokeTo(point) {
  pen.beginPath();
  pen.moveTo(state.last[0], state.last[1]);
  pen.lineTo(point[0], point[1]);
  pen.stroke();
  state.last = point;
}

pen.lineWidth = STROKE_WIDTH;
pen.lineCap = "round";
pen.lineJoin = "round";
pen.strokeStyle = "#fff";

draw.addEventListener("pointerdown", (event) => {
  if (state.pointer !== null) return; // one finger draws; a second one is ignored
  event.preventDefault();
  draw.setPointerCapture(event.pointerId);
  state.pointer = event.pointerId;
  state.last = canvasPoint(event);
  strokeTo(state.last); // a dot for a tap
  state.ink = true;
  requestPrediction();
});

draw.addEventListener("pointermove", (event) => {
  if (event.pointerId !== state.pointer) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (events.length ? events : [event])) strokeTo(canvasPoint(e));
  requestPrediction();
});

function endStroke(event) {
  if (event.pointerId !== state.pointer) return;
  state.pointer = null;
  requestPrediction();
}
draw.addEventListener("pointerup", endStroke);
draw.addEventListener("pointercancel", endStroke);

$("clear").addEventListener("click", clearDrawing);

function clearDrawing() {
  pen.clearRect(0, 0, draw.width, draw.height);
  state.ink = false;
  state.dirty = false;
  $("prediction").textContent = "";
  showProbabilities(null);
  showInput(null);
  $("activations").innerHTML = '<p class="hint">draw something</p>';
}

function drawingPayload() {
  const rgba = pen.getImageData(0, 0, draw.width, draw.height).data;
  const ink = new Uint8Array(draw.width * draw.height);
  for (let i = 0; i < ink.length; i++) ink[i] = rgba[4 * i + 3]; // alpha: white on transparent
  let binary = "";
  for (let i = 0; i < ink.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, ink.subarray(i, i + 0x8000));
  }
  return { drawing: { width: draw.width, height: draw.height, data: btoa(binary) } };
}

// ---- predictions ---------------------------------------------------------------------------

// At most one request in flight: while one is out, changes only mark the drawing dirty, and
// the answer triggers one more request. So the page never queues stale work.
function requestPrediction() {
  if (!state.ink) return;
  if (state.inFlight) { state.dirty = true; return; }
  state.inFlight = true;
  state.dirty = false;
  predict(drawingPayload()).then(({ result }) => {
    if (state.ink) show(result); // answers to a drawing since changed still move the bars
  }).catch((error) => {
    $("latency").textContent = `prediction failed: ${error.message}`;
  }).finally(() => {
    state.inFlight = false;
    if (state.dirty && state.ink) requestPrediction();
    else settle();
  });
}

async function predict(payload) {
  const started = performance.now();
  const response = await fetch("/api/predict", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  const result = await response.json();
  const ms = performance.now() - started;
  if (!response.ok) throw new Error(result.error || response.statusText);
  state.latencies.push(ms);
  $("latency").textContent = `round trip ${ms.toFixed(1)} ms`;
  return { result, ms };
}

function settle() {
  const waiters = state.idleWaiters;
  state.idleWaiters = [];
  waiters.forEach((resolve) => resolve());
}

function whenIdle() {
  if (!state.inFlight && !state.dirty) return Promise.resolve();
  return new Promise((resolve) => state.idleWaiters.push(resolve));
}

function show(result) {
  $("prediction").textContent = String(result.label);
  showProbabilities(result.probabilities);
  showInput(result.input);
  showActivations(result.activations);
}

function buildBars() {
  const bars = $("bars");
  for (let digit = 0; digit < 10; digit++) {
    const row = document.createElement("div");
    row.className = "bar";
    row.id = `bar-${digit}`;
    row.innerHTML = `<span>${digit}</span><div class="track"><div class="fill"></div></div>` +
                    `<span class="pct"></span>`;
    bars.appendChild(row);
  }
}

function showProbabilities(probabilities) {
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  for (let digit = 0; digit < 10; digit++) {
    const row = $(`bar-${digit}`);
    const p = probabilities ? probabilities[digit] : 0;
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".pct").textContent = probabilities ? `${(100 * p).toFixed(1)}%` : "";
    row.classList.toggle("top", digit === top);
  }
}

function showInput(image) {
  const view = $("input").getContext("2d");
  const pixels = view.createImageData(28, 28);
  if (image) {
    for (let r = 0; r < 28; r++) {
      for (let c = 0; c < 28; c++) {
        const i = 4 * (28 * r + c), v = Math.round(255 * image[r][c]);
        pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = v;
        pixels.data[i + 3] = 255;
      }
    }
  }
  view.putImageData(pixels, 0, 0);
}

// One canvas per hidden layer: an MLP layer's units as a grid of cells, a conv layer's
// feature maps side by side. Orange is positive, blue negative, scaled by the layer's largest
// magnitude.
function showActivations(activations) {
  const box = $("activations");
  box.innerHTML = "";
  if (!activations || !activations.layers.length) {
    box.innerHTML = '<p class="hint">this model has no hidden layers to draw</p>';
    return;
  }
  for (const layer of activations.layers) {
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = `${layer.name}: ${layer.shape.join("×")}`;
    const canvas = layer.kind === "conv" ? featureMaps(layer) : unitGrid(layer);
    canvas.className = `activation ${layer.kind}`;
    figure.append(caption, canvas);
    box.appendChild(figure);
  }
}

function colour(pixels, i, v, scale) {
  const t = Math.min(1, Math.abs(v) / scale);
  const [r, g, b] = v >= 0 ? [232, 89, 12] : [28, 126, 214];
  pixels[i] = r * t; pixels[i + 1] = g * t; pixels[i + 2] = b * t; pixels[i + 3] = 255;
}

function largest(values) {
  let m = 0;
  for (const v of values) m = Math.max(m, Math.abs(v));
  return m || 1;
}

function unitGrid(layer) {
  const n = layer.values.length, cols = Math.ceil(Math.sqrt(n)), rows = Math.ceil(n / cols);
  const canvas = document.createElement("canvas");
  canvas.width = cols; canvas.height = rows;
  canvas.style.width = `${Math.min(260, cols * 14)}px`;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(cols, rows);
  const scale = largest(layer.values);
  layer.values.forEach((v, k) => colour(image.data, 4 * k, v, scale));
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function featureMaps(layer) {
  const [channels, h, w] = layer.shape, cols = Math.ceil(Math.sqrt(channels));
  const rows = Math.ceil(channels / cols), gap = 1;
  const canvas = document.createElement("canvas");
  canvas.width = cols * (w + gap) - gap; canvas.height = rows * (h + gap) - gap;
  canvas.style.width = `${Math.min(300, canvas.width * 2)}px`;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(canvas.width, canvas.height);
  const scale = largest(layer.values);
  for (let c = 0; c < channels; c++) {
    const x0 = (c % cols) * (w + gap), y0 = Math.floor(c / cols) * (h + gap);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        colour(image.data, 4 * ((y0 + y) * canvas.width + x0 + x), layer.values[(c * h + y) * w + x], scale);
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

// ---- the served model ------------------------------------------------------------------------

async function refreshModel() {
  const info = await (await fetch("/api/model")).json();
  const accuracy = info.test_accuracy == null ? "" :
    `, ${(100 * info.test_accuracy).toFixed(2)}% on the MNIST test set`;
  $("model-info").textContent = `model #${info.version}: ${info.description}${accuracy}`;
  $("model-info").dataset.version = info.version;
}

// ---- training --------------------------------------------------------------------------------

$("train-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("hidden").value.trim();
  const hidden = text ? text.split(/[\s,]+/).filter(Boolean).map(Number) : [];
  const params = {
    hidden, activation: $("activation").value, optimizer: $("optimizer").value,
    lr: Number($("lr").value), epochs: Number($("epochs").value),
    batch_size: Number($("batch-size").value), limit: Number($("limit").value),
  };
  const response = await fetch("/api/train", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params),
  });
  if (!response.ok) status((await response.json()).error, true);
});

$("cancel").addEventListener("click", () => fetch("/api/train/cancel", {
  method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
}));

function status(text, error = false) {
  $("train-status").textContent = text;
  $("train-status").classList.toggle("error", error);
}

function running(yes) {
  $("train").disabled = yes;
  $("cancel").disabled = !yes;
}

function onTrainingEvent(event) {
  if (event.type === "start") {
    state.run = { epochs: event.recipe.epochs, loss: [], accuracy: [] };
    running(true);
    status(`training ${event.description}…`);
  } else if (!state.run) {
    return;
  } else if (event.type === "step") {
    state.run.loss.push([event.progress, event.loss]);
  } else if (event.type === "epoch") {
    state.run.accuracy.push([event.epoch, event.val_accuracy]);
    status(`epoch ${event.epoch}/${state.run.epochs}: loss ${event.loss.toFixed(4)}, ` +
           `test accuracy ${(100 * event.val_accuracy).toFixed(2)}%, ${event.epoch_time.toFixed(2)} s`);
  } else if (event.type === "done") {
    running(false);
    status(`done: test accuracy ${(100 * event.test_accuracy).toFixed(2)}%; the canvas now uses this model`);
    refreshModel();
    requestPrediction();
  } else if (event.type === "cancelled") {
    running(false);
    status("cancelled; the previous model is still in use");
  } else if (event.type === "error") {
    running(false);
    status(`training failed: ${event.error}`, true);
  }
  drawCurve();
}

function drawCurve() {
  const canvas = $("curve"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = { l: 44, r: 58, t: 14, b: 26 };
  ctx.clearRect(0, 0, W, H);
  const run = state.run;
  canvas.dataset.points = run ? run.loss.length : 0;
  canvas.dataset.epochs = run ? run.accuracy.length : 0;
  if (!run) return;
  const x = (p) => pad.l + (W - pad.l - pad.r) * p / run.epochs;
  const maxLoss = Math.max(0.1, ...run.loss.map((p) => p[1]).filter(Number.isFinite));
  const yLoss = (v) => pad.t + (H - pad.t - pad.b) * (1 - Math.min(v, maxLoss) / maxLoss);
  const minAcc = Math.min(0.9, ...run.accuracy.map((p) => p[1]));
  const yAcc = (v) => pad.t + (H - pad.t - pad.b) * (1 - (v - minAcc) / (1 - minAcc));
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#d0d5dd";
  ctx.strokeRect(pad.l, pad.t, W - pad.l - pad.r, H - pad.t - pad.b);
  ctx.fillStyle = "#667085";
  ctx.textAlign = "center";
  for (let e = 0; e <= run.epochs; e++) ctx.fillText(String(e), x(e), H - 10);
  ctx.fillText("epoch", W / 2, H - 0);
  ctx.textAlign = "right";
  ctx.fillStyle = "#1c7ed6";
  ctx.fillText(maxLoss.toFixed(2), pad.l - 4, pad.t + 8);
  ctx.fillText("loss", pad.l - 4, H / 2);
  ctx.fillText("0", pad.l - 4, H - pad.b);
  ctx.textAlign = "left";
  ctx.fillStyle = "#e8590c";
  ctx.fillText("100%", W - pad.r + 4, pad.t + 8);
  ctx.fillText("test acc", W - pad.r + 4, H / 2);
  ctx.fillText(`${(100 * minAcc).toFixed(0)}%`, W - pad.r + 4, H - pad.b);
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = "#1c7ed6";
  ctx.beginPath();
  run.loss.forEach(([p, v], i) => {
    if (!Number.isFinite(v)) return;
    if (i === 0) ctx.moveTo(x(p), yLoss(v)); else ctx.lineTo(x(p), yLoss(v));
  });
  ctx.stroke();
  ctx.strokeStyle = ctx.fillStyle = "#e8590c";
  ctx.beginPath();
  run.accuracy.forEach(([e, v], i) => (i === 0 ? ctx.moveTo(x(e), yAcc(v)) : ctx.lineTo(x(e), yAcc(v))));
  ctx.stroke();
  run.accuracy.forEach(([e, v]) => { ctx.beginPath(); ctx.arc(x(e), yAcc(v), 3, 0, 2 * Math.PI); ctx.fill(); });
}

// A browser opens at most six HTTP/1.1 connections to one server, and every open event stream
// holds one: a hidden tab closes its stream, so any number of tabs can stay open. Reopened (or
// reconnected by the browser after an error), a stream replays the run from its start.
let source = null;

function followTraining() {
  if (source) return;
  source = new EventSource("/api/train/events");
  source.onmessage = (message) => onTrainingEvent(JSON.parse(message.data));
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden && source) {
    source.close();
    source = null;
  } else if (!document.hidden) {
    followTraining();
  }
});

// ---- start -------------------------------------------------------------------------------------

buildBars();
showProbabilities(null);
refreshModel().catch((error) => { $("model-info").textContent = `no model: ${error.message}`; });
if (!document.hidden) followTraining();

// For scripts and tests: the page's own request path and its measurements.
window.fastnnDemo = { state, whenIdle, clearDrawing, predictDrawing: () => predict(drawingPayload()) };
