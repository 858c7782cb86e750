// The page: two forms over the JSON API (/api/info, /api/{sample,edit}/stream). Each run streams events:
// queued (our place in line), scales, scale (that scale's images), then done (the result) or error.
"use strict";

const $ = (id) => document.getElementById(id);
const png = (base64) => "data:image/png;base64," + base64;
let info = null;
let current = null;  // the running request's AbortController: one run at a time per page
const edit = {image: null, filename: null, mask: null, maskFilename: null, box: null};  // what Edit sends

// ---- the model's details fill the forms ----------------------------------------------------------------

async function loadInfo() {
  const response = await fetch("/api/info");
  info = await response.json();
  const scales = info.scales.map((s) => `${s}×${s}`).join(", ");
  $("model-info").textContent = `${info.model} · ${info.resolution}×${info.resolution} px · ` +
    `${info.scales.length} scales (${scales}) · ${info.classes.length} classes`;
  for (const [prefix, unconditional] of [["generate", false], ["edit", true]]) {
    const select = $(`${prefix}-class`);
    select.add(new Option("unconditional", ""));
    info.classes.forEach((name, id) => {
      const label = name === String(id) ? name : `${id}: ${name}`;
      select.add(new Option(label, String(id)));
    });
    select.value = unconditional ? "" : "0";
    $(`${prefix}-seed`).value = info.defaults.seed;
    for (const setting of info.settings) $(`${prefix}-settings`).append(settingField(prefix, setting));
  }
  $("generate-n").value = info.defaults.n;
  for (const name of info.examples) $("edit-example").add(new Option(name, name));
}

// The sampler settings the server offers, each with its label, help and default (defined once, in Python).
function settingField(prefix, setting) {
  const input = document.createElement("input");
  input.name = setting.name;
  input.id = `${prefix}-${setting.flag.replace(/^--/, "")}`;
  input.inputMode = setting.type === "integer" ? "numeric" : "decimal";
  input.value = setting.default;
  const label = document.createElement("label");
  label.title = setting.help;
  label.append(`${setting.label} `, input);
  return label;
}

// ---- running a job and showing its events --------------------------------------------------------------

function showError(text) {
  $("message").textContent = text;
  $("message").hidden = false;
  $("status").textContent = "";
}

function reset() {
  if (current) current.abort();  // its job leaves the server's line, or stops at its next scale
  current = null;
  $("message").hidden = true;
  $("status").textContent = "";
  $("pyramid").replaceChildren();
  $("results").hidden = true;
  $("result-images").replaceChildren();
}

function fields(form) {
  const body = {};
  for (const [name, value] of new FormData(form)) body[name] = value;
  body.class = body.class === "" ? null : body.class;
  return body;
}

async function run(kind, body) {
  reset();
  const controller = current = new AbortController();
  const buttons = [$("generate-button"), $("edit-button")];
  buttons.forEach((b) => { b.disabled = true; });
  $("status").textContent = "Sending…";
  let finished = false;
  try {
    const response = await fetch(`/api/${kind}/stream`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({error: response.statusText}));
      showError(`Refused (${response.status}): ${answer.error}`);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const event = JSON.parse(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        finished = finished || event.event === "done" || event.event === "error";
        handle(kind, event);
      }
    }
    if (!finished) showError("The connection closed before the result came (did the server stop?)");
  } catch (error) {
    if (!controller.signal.aborted) showError(`The server did not answer: ${error}`);
  } finally {
    if (current === controller) {
      current = null;
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
}

function handle(kind, event) {
  if (event.event === "queued") {
    const ahead = event.position === 1 ? "1 generation" : `${event.position} generations`;
    $("status").textContent = `Waiting in line: ${ahead} ahead of yours`;
  } else if (event.event === "started") {
    $("status").textContent = "Starting…";
  } else if (event.event === "scales") {
    for (const side of event.scales) {
      const tile = document.createElement("li");
      tile.innerHTML = `<img alt="scale ${side}×${side}"><span>${side}×${side}</span>`;
      $("pyramid").append(tile);
    }
  } else if (event.event === "scale") {
    const tiles = $("pyramid").children;
    if (!tiles[event.index]) return;
    tiles[event.index].querySelector("img").src = png(event.images[0]);
    tiles[event.index].classList.add("drawn");
    $("status").textContent = `Drawn scale ${event.index + 1} of ${tiles.length} (${event.side}×${event.side})`;
  } else if (event.event === "done") {
    $("status").textContent = kind === "edit" ? "Done: the input as the model saw it, and the result" : "Done";
    showResults(kind, event);
  } else if (event.event === "error") {
    showError(`Failed (${event.status}): ${event.error}`);
  }
}

function figure(base64, caption, filename) {
  const item = document.createElement("figure");
  const image = document.createElement("img");
  image.src = png(base64);
  image.alt = caption;
  if (caption !== "input") image.className = "result";
  if (filename) {
    const link = document.createElement("a");
    link.href = image.src;
    link.download = filename;
    link.className = "download";
    link.append(image);
    item.append(link);
  } else {
    item.append(image);
  }
  const text = document.createElement("figcaption");
  text.textContent = caption;
  item.append(text);
  return item;
}

function showResults(kind, result) {
  const images = $("result-images");
  if (kind === "edit") {
    images.append(figure(result.input, "input", edit.filename));  // the file the command line names
    images.append(figure(result.images[0], "result", `nextscale-edit-seed${result.seed}.png`));
  } else {
    result.images.forEach((image, i) => {
      const label = result.labels[i] < info.classes.length ? info.classes[result.labels[i]] : "unconditional";
      images.append(figure(image, `${label} · image ${i + 1}`, `nextscale-seed${result.seed}-${i}.png`));
    });
  }
  $("command").textContent = result.command;
  $("results").hidden = false;
}

// ---- the edit canvas: an image, a dragged box, or a mask -----------------------------------------------

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function setImage(dataUrl, filename) {
  edit.image = dataUrl;
  edit.filename = filename;
  $("edit-input").src = dataUrl;
  $("edit-hint").hidden = true;
}

function describeRegion() {
  let text = "Drag a box on the image, or upload a mask.";
  if (edit.mask) text = "Using the uploaded mask (white = repaint).";
  else if (edit.box) text = `Box: rows ${edit.box[0].toFixed(2)}–${edit.box[2].toFixed(2)}, ` +
    `columns ${edit.box[1].toFixed(2)}–${edit.box[3].toFixed(2)} of the image.`;
  $("edit-region").textContent = text;
}

function dragBox() {
  const canvas = $("edit-canvas");
  const shape = $("edit-box");
  let start = null;
  const at = (event) => {
    const rect = canvas.getBoundingClientRect();
    const clamp = (v) => Math.round(Math.min(1, Math.max(0, v)) * 1000) / 1000;  // a short --box
    return [clamp((event.clientY - rect.top) / rect.height), clamp((event.clientX - rect.left) / rect.width)];
  };
  const draw = (a, b) => {
    const [y0, y1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
    const [x0, x1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
    Object.assign(shape.style, {top: `${y0 * 100}%`, left: `${x0 * 100}%`,
                                height: `${(y1 - y0) * 100}%`, width: `${(x1 - x0) * 100}%`});
    shape.hidden = false;
    return [y0, x0, y1, x1];
  };
  canvas.addEventListener("pointerdown", (event) => {
    if (!edit.image) return;
    start = at(event);
    canvas.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  canvas.addEventListener("pointermove", (event) => { if (start) draw(start, at(event)); });
  const abandon = () => {
    if (!start) return;
    start = null;
    shape.hidden = !edit.box;
  };
  canvas.addEventListener("pointercancel", abandon);
  canvas.addEventListener("lostpointercapture", abandon);
  canvas.addEventListener("pointerup", (event) => {
    if (!start) return;
    const box = draw(start, at(event));
    start = null;
    const big = box[2] - box[0] > 0.01 && box[3] - box[1] > 0.01;
    edit.box = big ? box : null;
    shape.hidden = !big;
    describeRegion();
  });
}

// ---- wiring -------------------------------------------------------------------------------------------

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
    for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== `panel-${tab.dataset.panel}`;
    reset();
  });
}

$("generate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run("sample", fields($("generate-form")));
});

$("edit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!edit.image) return showError("Upload an image or pick an example first.");
  if (!edit.mask && !edit.box) return showError("Drag a box on the image (or upload a mask) first.");
  const body = {...fields($("edit-form")), image: edit.image, filename: edit.filename};
  if (edit.mask) Object.assign(body, {mask: edit.mask, mask_filename: edit.maskFilename});
  else body.box = edit.box;
  run("edit", body);
});

$("edit-file").addEventListener("change", async () => {
  const file = $("edit-file").files[0];
  if (file) { setImage(await readFile(file), file.name); $("edit-example").value = ""; }
});

$("edit-example").addEventListener("change", async () => {
  const name = $("edit-example").value;
  if (!name) return;
  const blob = await (await fetch(`/api/examples/${name}.png`)).blob();
  setImage(await readFile(blob), `${name}.png`);
});

$("edit-mask").addEventListener("change", async () => {
  const file = $("edit-mask").files[0];
  edit.mask = file ? await readFile(file) : null;
  edit.maskFilename = file ? file.name : null;
  describeRegion();
});

$("edit-input").addEventListener("error", () => {
  if (edit.image) $("edit-region").textContent = "The browser cannot show this file; the server will check it.";
});

$("download-all").addEventListener("click", () => {
  for (const image of document.querySelectorAll("#result-images a.download img.result")) image.parentElement.click();
});

$("copy-command").addEventListener("click", () => {
  const text = $("command").textContent;
  if (navigator.clipboard) navigator.clipboard.writeText(text);
  else getSelection().selectAllChildren($("command"));
});

dragBox();
loadInfo().catch((error) => showError(`Could not read the model's details: ${error}`));
