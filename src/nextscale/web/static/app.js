// The page: a model picker and two forms over the JSON API (/api/info, /api/{sample,edit}/stream). Each run
// streams events: queued (our place in line), scales, scale (that scale's images), then done (the result) or error.
"use strict";

const $ = (id) => document.getElementById(id);
const png = (base64) => "data:image/png;base64," + base64;
let info = null;  // the shown model's /api/info: everything on the page that depends on the model comes from it
let infoAsked = 0;  // the latest model asked for: an older answer that arrives late is dropped
let current = null;  // the running request's AbortController: one run at a time per page
const edit = {image: null, filename: null, mask: null, maskFilename: null, box: null};  // what Edit sends

// ---- the model's details fill the forms ----------------------------------------------------------------

// Shows model `name` (null: the server's default, or the one in the address's ?model=).
async function loadInfo(name) {
  const asked = ++infoAsked;
  const query = name ? `?model=${encodeURIComponent(name)}` : "";
  const response = await fetch(`/api/info${query}`);
  const answer = await response.json().catch(() => ({error: response.statusText}));
  if (asked !== infoAsked) return;
  if (!response.ok) throw new Error(`Refused (${response.status}): ${answer.error}`);
  info = answer;
  showModel();
}

function showModel() {
  const picker = $("model");
  picker.replaceChildren(...info.models.map((name) => new Option(name, name)));
  picker.value = info.model;
  $("model-picker").hidden = info.models.length < 2;
  const address = new URL(location.href);
  address.searchParams.set("model", info.model);  // a reload (or a shared link) shows the same model
  history.replaceState(null, "", address);
  const [first, last] = [info.scales[0], info.scales[info.scales.length - 1]];
  const name = info.models.length < 2 ? `${info.model} · ` : "";  // else the picker shows it
  const raster = info.kind === "raster-ar";  // one token map, token by token: nothing to repaint by scale
  const shape = raster ? `raster order, one ${last}×${last} token map` :
    `${info.scales.length} scales (${first}×${first} to ${last}×${last})`;
  $("model-info").textContent = `${name}${info.resolution}×${info.resolution} px · ${shape} · ` +
    `${info.classes.length} classes`;
  $("tab-edit").hidden = raster;
  if (raster && !$("panel-edit").hidden) $("tab-generate").click();
  for (const [prefix, unconditional] of [["generate", false], ["edit", true]]) {
    const select = $(`${prefix}-class`);
    select.replaceChildren(new Option("unconditional", ""));
    info.classes.forEach((name, id) => {
      const label = name === String(id) ? name : `${id}: ${name}`;
      select.add(new Option(label, String(id)));
    });
    select.value = unconditional ? "" : "0";
    if (!$(`${prefix}-seed`).value) $(`${prefix}-seed`).value = info.defaults.seed;
    // The settings' fields follow the model; a value typed for a setting it shares with the last one stays.
    const settings = $(`${prefix}-settings`);
    const typed = new Map([...settings.querySelectorAll("input")].map((input) => [input.name, input.value]));
    settings.replaceChildren(...info.settings.map((setting) => settingField(prefix, setting, typed.get(setting.name))));
  }
  if (!$("generate-n").value) $("generate-n").value = info.defaults.n;
  const example = $("edit-example");
  const chosen = example.value;
  example.replaceChildren(new Option("—", ""), ...info.examples.map((name) => new Option(name, name)));
  example.value = info.examples.includes(chosen) ? chosen : "";
}

// The sampler settings the server offers, each with its label, help and default (defined once, in Python).
function settingField(prefix, setting, value) {
  const input = document.createElement("input");
  input.name = setting.name;
  input.id = `${prefix}-${setting.flag.replace(/^--/, "")}`;
  input.inputMode = setting.type === "integer" ? "numeric" : "decimal";
  input.value = value ?? setting.default;
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
  const body = {model: info?.model};
  for (const [name, value] of new FormData(form)) body[name] = value;
  body.class = body.class === "" ? null : body.class;
  return body;
}

async function run(kind, body) {
  reset();
  const model = info;  // the results are named by the classes of the model that drew them
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
        handle(kind, event, model);
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

function handle(kind, event, model) {
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
    showResults(kind, event, model);
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

function showResults(kind, result, model) {
  const images = $("result-images");
  if (kind === "edit") {
    images.append(figure(result.input, "input", edit.filename));  // the file the command line names
    images.append(figure(result.images[0], "result", `nextscale-edit-seed${result.seed}.png`));
  } else {
    result.images.forEach((image, i) => {
      const label = result.labels[i] < model.classes.length ? model.classes[result.labels[i]] : "unconditional";
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

$("model").addEventListener("change", async () => {
  const name = $("model").value;
  reset();
  $("status").textContent = `Loading ${name}…`;  // its first pick loads it on the server
  try {
    await loadInfo(name);
    if (info.model === name) $("status").textContent = "";
  } catch (error) {
    $("model").value = info.model;  // the page still shows the last model
    showError(`Could not load model ${name}: ${error.message}`);
  }
});

// The model in the address (?model=NAME), else the server's default; a name the server does not offer says so,
// then the default is shown.
async function start() {
  const asked = new URLSearchParams(location.search).get("model");
  try {
    await loadInfo(asked);
  } catch (error) {
    if (!asked) throw error;
    await loadInfo(null);
    showError(`Model ${asked}: ${error.message}`);
  }
}

dragBox();
start().catch((error) => showError(`Could not read the model's details: ${error.message ?? error}`));
