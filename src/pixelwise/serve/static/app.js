// The pixelwise page: send an image to POST predict?format=mask&palette=false, then draw the overlay, legend
// and area table in the browser from that one mask (8-bit PNG: each pixel's value is its class).
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;   // GET model
let shown = null;   // {image, colours, width, height}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return resp.statusText || "request failed";
  }
}

function swatch(color) {
  const s = document.createElement("span");
  s.className = "swatch";
  s.style.backgroundColor = `rgb(${color[0]}, ${color[1]}, ${color[2]})`;
  return s;
}

async function loadModel() {
  const resp = await fetch("model", { headers: authHeaders() });
  if (resp.status === 401) {
    $("auth").hidden = false;
    $("model-info").textContent = "";
    setStatus("This server needs a token: enter it above.", true);
    return false;
  }
  if (!resp.ok) {
    setStatus(`Cannot read the model (${resp.status}): ${await errorText(resp)}`, true);
    return false;
  }
  model = await resp.json();
  const arch = model.architecture;
  const val = (model.metrics && model.metrics.val) || {};
  const miou = typeof val.miou === "number" ? `, validation mIoU ${(100 * val.miou).toFixed(1)}` : "";
  $("model-info").textContent =
    `${arch.arch || "model"}${arch.encoder ? " / " + arch.encoder : ""}, ${model.num_classes} classes${miou}`;
  const legend = $("legend");
  legend.replaceChildren();
  for (const c of model.classes) {
    const li = document.createElement("li");
    li.dataset.index = c.index;
    li.append(swatch(c.color), document.createTextNode(`${c.index}: ${c.name}`));
    legend.append(li);
  }
  if (!$("auth").hidden) setStatus("Token accepted.");
  return true;
}

function draw() {
  if (!shown) return;
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  const alpha = Number($("opacity").value) / 100;
  $("opacity-value").textContent = `${Math.round(alpha * 100)}%`;
  ctx.globalAlpha = 1;
  if (shown.image) {
    ctx.drawImage(shown.image, 0, 0, shown.width, shown.height);
  } else {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, shown.width, shown.height);
  }
  ctx.globalAlpha = alpha;
  ctx.drawImage(shown.colours, 0, 0);
  ctx.globalAlpha = 1;
}

function fillTable(counts, total) {
  const body = $("areas").tBodies[0];
  body.replaceChildren();
  for (const c of model.classes) {
    const tr = document.createElement("tr");
    tr.dataset.index = c.index;
    const name = document.createElement("td");
    name.append(swatch(c.color), document.createTextNode(" " + c.name));
    const pixels = document.createElement("td");
    pixels.textContent = String(counts[c.index]);
    pixels.className = "pixels";
    const share = document.createElement("td");
    share.textContent = `${(100 * counts[c.index] / total).toFixed(2)}%`;
    tr.append(name, pixels, share);
    body.append(tr);
  }
}

async function predict(file) {
  if (!model && !(await loadModel())) return;
  if (model.num_classes > 256) {
    setStatus("This page shows models of up to 256 classes; use the API (POST /predict) for this one.", true);
    return;
  }
  setStatus(`Labelling ${file.name}…`);
  document.body.dataset.state = "busy";
  const form = new FormData();
  form.append("file", file, file.name);
  let resp;
  try {
    resp = await fetch("predict?format=mask&palette=false", { method: "POST", body: form, headers: authHeaders() });
  } catch (e) {
    setStatus(`The server did not answer: ${e.message}`, true);
    document.body.dataset.state = "error";
    return;
  }
  if (!resp.ok) {
    if (resp.status === 401) $("auth").hidden = false;
    setStatus(`Error ${resp.status}: ${await errorText(resp)}`, true);
    document.body.dataset.state = "error";
    return;
  }
  const timing = resp.headers.get("Server-Timing") || "";
  const maskBlob = await resp.blob();
  const mask = await createImageBitmap(maskBlob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const width = mask.width, height = mask.height;

  // Read the class of every pixel, count, and paint the colour layer.
  const scratch = document.createElement("canvas");
  scratch.width = width;
  scratch.height = height;
  const sctx = scratch.getContext("2d", { willReadFrequently: true });
  sctx.drawImage(mask, 0, 0);
  const pixels = sctx.getImageData(0, 0, width, height);
  const counts = new Array(model.num_classes).fill(0);
  const palette = model.classes.map((c) => c.color);
  const px = pixels.data;
  for (let i = 0; i < px.length; i += 4) {
    const k = px[i];
    const color = palette[k] || [0, 0, 0];
    if (k < counts.length) counts[k] += 1;
    px[i] = color[0]; px[i + 1] = color[1]; px[i + 2] = color[2]; px[i + 3] = 255;
  }
  sctx.putImageData(pixels, 0, 0);

  let image = null;
  try {
    image = await createImageBitmap(file);  // some formats (TIFF) the browser cannot show: colours only
  } catch (e) {
    image = null;
  }
  shown = { image, colours: scratch, width, height };
  const canvas = $("overlay");
  canvas.width = width;
  canvas.height = height;
  $("result").hidden = false;
  draw();
  fillTable(counts, width * height);

  const link = $("download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(maskBlob);
  link.download = `${file.name.replace(/\.[^.]*$/, "") || "image"}_mask.png`;
  const total = /total;dur=([\d.]+)/.exec(timing);
  setStatus(`${file.name}: ${width}x${height} pixels` + (total ? `, ${Math.round(Number(total[1]))} ms on the server` : ""));
  document.body.dataset.state = "done";
}

function start() {
  $("file").addEventListener("change", () => {
    if ($("file").files.length) predict($("file").files[0]);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
  });
  $("opacity").addEventListener("input", draw);
  $("use-token").addEventListener("click", loadModel);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") loadModel(); });
  loadModel().then((ok) => { document.body.dataset.state = ok ? "ready" : "error"; });
}

start();
