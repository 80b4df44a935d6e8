// The page of `serve`: choose or take a photo, send it to /api/classify, show the answer.
// Text is set with textContent only (never innerHTML), so nothing an answer holds can run.
"use strict";

const state = { models: [], file: null, previewUrl: null };

function $(id) { return document.getElementById(id); }

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value) || state.models[0];
}

async function loadModels() {
  const answer = await fetch("/api/models");
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error || answer.statusText);
  state.models = body.models;
  for (const model of state.models) $("model").append(new Option(model.name, model.name));
  $("model-choice").hidden = state.models.length < 2;
  modelChosen();
}

function modelChosen() {
  const model = currentModel();
  const fields = $("patient-fields");
  fields.replaceChildren();
  const columns = model.patient_metadata || [];
  $("patient").hidden = columns.length === 0;
  for (const column of columns) {
    const label = element("label", column.name.replace(/_/g, " "), "field");
    let input;
    if (column.kind === "numeric") {
      input = element("input");
      input.type = "number";
      input.inputMode = "numeric";
      input.min = "0";
      input.max = column.name.startsWith("age") ? "120" : "";
      input.step = "any";
    } else {
      input = element("select");
      input.append(new Option("unknown", ""));
      for (const category of column.categories) input.append(new Option(category, category));
    }
    input.name = column.name;
    label.append(input);
    fields.append(label);
  }
  showCard(model);
  $("result").hidden = true;
}

function showCard(model) {
  const sections = $("card-sections");
  sections.replaceChildren();
  for (const section of model.model_card_sections) {
    const details = element("details");
    details.open = true;
    details.append(element("summary", section.title), ...cardBlocks(section.lines));
    sections.append(details);
  }
  $("card").hidden = model.model_card_sections.length === 0;
}

// The model card's lines as retrain writes them in Markdown: "- " bullets, "|" table rows, paragraphs.
function cardBlocks(lines) {
  const blocks = [];
  let list = null;
  let table = null;
  for (const line of lines) {
    if (line.startsWith("- ")) {
      if (!list) blocks.push((list = element("ul")));
      list.append(element("li", line.slice(2)));
      table = null;
    } else if (line.startsWith("|")) {
      if (/^\|[-| ]+\|$/.test(line)) continue;
      const cells = line.split("|").slice(1, -1).map((cell) => cell.trim());
      const row = element("tr");
      for (const cell of cells) row.append(element(table ? "td" : "th", cell));
      if (!table) blocks.push((table = element("table", undefined, "card-table")));
      table.append(row);
      list = null;
    } else {
      list = null;
      table = null;
      if (line.trim()) blocks.push(element("p", line));
    }
  }
  return blocks;
}

function fileChosen(event) {
  const file = event.target.files[0];
  if (!file) return;
  state.file = file;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  $("preview").src = state.previewUrl;
  $("preview").hidden = false;
  $("chosen").textContent = file.name;
  $("classify").disabled = false;
  $("result").hidden = true;
  showError("");
}

async function classify(event) {
  event.preventDefault();
  if (!state.file) return;
  const model = currentModel();
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  form.append("model", model.name);
  if (model.heatmap) form.append("heatmap", "1");
  for (const input of $("patient-fields").querySelectorAll("input, select")) {
    if (input.value.trim()) form.append(input.name, input.value.trim());
  }
  showError("");
  $("busy").hidden = false;
  $("classify").disabled = true;
  try {
    const answer = await fetch("/api/classify", { method: "POST", body: form });
    const body = await answer.json();
    if (!answer.ok) {
      $("result").hidden = true;
      showError(body.error || `the server answered ${answer.status}`);
      return;
    }
    showResult(body);
  } catch (error) {
    showError(`cannot reach the server: ${error.message}`);
  } finally {
    $("busy").hidden = true;
    $("classify").disabled = false;
  }
}

function percent(value) {
  return value === null || value === undefined ? "n/a" : `${(100 * value).toFixed(1)} %`;
}

function decisionItem(decision, line) {
  const item = element("li", undefined, decision.positive ? "called" : "not-called");
  const headline = decision.positive
    ? `Refer for review: ${decision.label} called`
    : `${decision.label} not called: this does not rule it out`;
  item.append(element("strong", headline, "decision-line"));
  const comparison = decision.positive ? "≥" : "<";
  const chosen = decision.target === "threshold"
    ? `threshold set by hand (${decision.value})`
    : `threshold chosen for ${decision.target} ${decision.value} on ${decision.chosen_on}`;
  item.append(element("p", `Score ${decision.score.toFixed(3)} ${comparison} threshold ${decision.threshold.toFixed(3)}; `
    + `${chosen}, where it gave sensitivity ${percent(decision.validation_sensitivity)} and specificity `
    + `${percent(decision.validation_specificity)}.`));
  if (line) item.title = line;
  if (decision.caveat) item.append(element("p", `(${decision.caveat})`, "caveat"));
  return item;
}

function showResult(body) {
  const level = body.ood ? body.ood.level : "none";
  $("ood-warning").hidden = level !== "not_of_kind";
  $("ood-note").hidden = level !== "unlike_training";
  if (level === "not_of_kind") $("ood-warning").textContent = body.lines.ood;
  if (level === "unlike_training") $("ood-note").textContent = body.lines.ood;
  const setAside = level === "not_of_kind";
  for (const id of ["decisions", "classes", "heatmap"]) $(id).classList.toggle("set-aside", setAside);
  $("set-aside").hidden = !setAside;

  const list = $("decision-list");
  list.replaceChildren();
  body.decisions.forEach((decision, i) => list.append(decisionItem(decision, body.lines.decisions[i])));
  if (body.decisions.length === 0) list.append(element("li", `No decision: ${body.no_operating_point}`, "muted"));

  const rows = $("class-table").tBodies[0];
  rows.replaceChildren();
  for (const prediction of body.predictions) {
    const row = element("tr");
    row.append(element("th", prediction.label));
    const bar = element("td");
    const meter = element("progress");
    meter.max = 1;
    meter.value = prediction.score;
    bar.append(meter);
    row.append(bar, element("td", prediction.score.toFixed(3), "score"));
    rows.append(row);
  }

  const image = $("heatmap-img");
  const missing = $("heatmap-missing");
  image.hidden = !body.heatmap;
  missing.hidden = Boolean(body.heatmap);
  if (body.heatmap) {
    image.src = body.heatmap.png;
    image.alt = `Heatmap of ${body.heatmap.label} over the image`;
  } else {
    image.removeAttribute("src");
    missing.textContent = body.heatmap_error || "This model draws no heatmap.";
  }

  const notes = $("notes");
  notes.replaceChildren();
  for (const line of [...body.lines.warnings, ...body.lines.notes]) notes.append(element("li", line));
  $("result").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  $("image").addEventListener("change", fileChosen);
  $("camera").addEventListener("change", fileChosen);
  $("model").addEventListener("change", modelChosen);
  $("request").addEventListener("submit", classify);
  loadModels().catch((error) => showError(`cannot load the models: ${error.message}`));
});
