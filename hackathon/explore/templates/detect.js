// hackathon explore, detection page: per-class counts, confusion matrix (cells filter the gallery to
// their images) and a paged gallery with ground-truth and predicted boxes drawn as an SVG over each image.
"use strict";
const D = window.EXPLORE;
const PAGE = 48;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const COLOURS = ["#16a34a", "#2563eb", "#9333ea", "#0891b2", "#ca8a04", "#db2777"];
const colour = (label) => COLOURS[Math.max(0, D.classes.indexOf(label)) % COLOURS.length];
const BG = "background";
const state = {page: 0, images: D.images, cell: null};

const area = (b) => (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]);
const sizeOf = (b) => (area(b) < 32 * 32 ? "small" : area(b) > 96 * 96 ? "large" : "medium");

function visibleBoxes(im, cls) {  // with a class filter only that class's boxes are drawn
  const keep = (b) => !cls || b.label === cls;
  return {gt: im.gt.filter(keep), pred: im.pred.filter(keep)};
}
function apply() {
  const cls = $("class").value, outcome = $("outcome").value, size = $("size").value, q = $("search").value.trim().toLowerCase();
  const cell = state.cell ? new Set(state.cell.ids) : null;
  state.images = D.images.filter((im) => {
    if (cell && !cell.has(im.id)) return false;
    if (q && !im.name.toLowerCase().includes(q)) return false;
    const b = visibleBoxes(im, cls), all = b.gt.concat(b.pred);
    if (cls && !all.length) return false;
    if (size && !all.some((x) => sizeOf(x) === size)) return false;
    if (outcome === "fp" && !b.pred.some((p) => p.match === BG)) return false;
    if (outcome === "miss" && !b.gt.some((g) => g.match === BG)) return false;
    if (outcome === "confused" && !b.gt.some((g) => g.match && g.match !== BG && g.match !== g.label)) return false;
    if (outcome === "clean" && (im.fp || im.miss || im.confused)) return false;
    return true;
  });
  state.page = Math.min(state.page, Math.max(0, Math.ceil(state.images.length / PAGE) - 1));
  render();
}
function svgFor(im, cls) {
  const b = visibleBoxes(im, cls), parts = [];
  const rect = (x, kind, dashed, bad) => {
    const [x1, y1, x2, y2] = x.box, c = bad ? "#dc2626" : colour(x.label), sw = Math.max(1.5, im.width / 160);
    return `<rect class="box ${kind}" data-label="${esc(x.label)}" data-match="${esc(x.match || "")}" x="${x1}" y="${y1}" width="${x2 - x1}" height="${y2 - y1}" ` +
      `fill="none" stroke="${c}" stroke-width="${sw}" ${dashed ? `stroke-dasharray="${sw * 3} ${sw * 2}"` : ""}><title>${kind === "gt" ? "ground truth" : "prediction"} ${esc(x.label)}${x.score != null ? " " + x.score : ""}${x.match ? " → " + esc(x.match) : ""}</title></rect>`;
  };
  for (const g of b.gt) parts.push(rect(g, "gt", false, g.match === BG));
  for (const p of b.pred) parts.push(rect(p, "pred", true, p.match === BG));
  return `<svg viewBox="0 0 ${im.width} ${im.height}" preserveAspectRatio="none">${parts.join("")}</svg>`;
}
function render() {
  const cls = $("class").value, start = state.page * PAGE;
  $("count").textContent = `${state.images.length} of ${D.images.length} images`;
  $("cell").innerHTML = state.cell ? `showing ${esc(state.cell.title)} <button id="clear-cell">clear</button>` : "";
  if (state.cell) $("clear-cell").onclick = () => { state.cell = null; apply(); };
  $("gallery").innerHTML = state.images.slice(start, start + PAGE).map((im) => {
    const notes = [im.fp ? `${im.fp} FP` : "", im.miss ? `${im.miss} missed` : "", im.confused ? `${im.confused} wrong class` : ""].filter(Boolean).join(", ");
    return `<div class="card" data-id="${im.id}"><div class="frame"><img loading="lazy" src="${esc(im.path)}" alt="${esc(im.name)}">${svgFor(im, cls)}</div>` +
      `<div>${esc(im.name)} <span class="muted">${esc(im.split)} ${im.width}×${im.height}</span></div><div class="warn">${notes}</div></div>`;
  }).join("");
  const pages = Math.max(1, Math.ceil(state.images.length / PAGE));
  $("pager-top").innerHTML = $("pager-bottom").innerHTML =
    `<button data-go="0">«</button><button data-go="${state.page - 1}">‹</button> page ${state.page + 1} of ${pages} <button data-go="${state.page + 1}">›</button><button data-go="${pages - 1}">»</button>`;
}
function init() {
  const t = D.totals;
  $("sources").textContent = D.sources.join(" · ");
  $("totals").innerHTML = `<span><b>${t.images}</b> images</span><span><b>${t.boxes}</b> boxes</span>` +
    (D.has_predictions ? `<span><b>${t.predictions}</b> predictions (score ≥ ${D.score_threshold}, match IoU ≥ ${D.iou})</span>` : "");
  $("counts").innerHTML = "<tr><th>class</th><th>ground truth</th>" + (D.has_predictions ? "<th>predicted</th>" : "") + "</tr>" +
    D.classes.map((c) => `<tr><th style="color:${colour(c)}">${esc(c)}</th><td>${D.counts[c].gt}</td>${D.has_predictions ? `<td>${D.counts[c].pred}</td>` : ""}</tr>`).join("");
  if (!D.has_predictions) $("confusion-panel").innerHTML = '<h2>Confusion matrix</h2><p class="muted">No predictions in these inputs (a detect run dir after its infer stage has them).</p>';
  else {
    const L = D.labels, rows = ["<tr><th>GT \\ pred</th>" + L.map((l) => `<th>${esc(l)}</th>`).join("") + "</tr>"];
    L.forEach((gl, i) => rows.push(`<tr><th>${esc(gl)}</th>` + L.map((pl, j) => {
      const ids = D.confusion[i][j];
      if (i === L.length - 1 && j === L.length - 1) return "<td></td>";
      return `<td class="${i === j ? "diag" : ids.length ? "off" : ""}">${ids.length ? `<a data-i="${i}" data-j="${j}">${ids.length}</a>` : "0"}</td>`;
    }).join("") + "</tr>"));
    $("confusion").innerHTML = rows.join("");
    $("confusion").addEventListener("click", (e) => {
      const a = e.target.closest("a"); if (!a) return;
      const i = +a.dataset.i, j = +a.dataset.j, gl = D.labels[i], pl = D.labels[j];
      const title = gl === BG ? `false positives predicted as ${pl}` : pl === BG ? `missed ${gl}` : `ground truth ${gl} predicted as ${pl}`;
      state.cell = {ids: D.confusion[i][j], title: `${D.confusion[i][j].length} images with ${title}`}; state.page = 0; apply();
    });
  }
  D.classes.forEach((c) => $("class").insertAdjacentHTML("beforeend", `<option>${esc(c)}</option>`));
  for (const id of ["class", "outcome", "size"]) $(id).addEventListener("change", () => { state.page = 0; apply(); });
  $("search").addEventListener("input", () => { state.page = 0; apply(); });
  for (const p of ["pager-top", "pager-bottom"]) $(p).addEventListener("click", (e) => {
    if (e.target.dataset.go == null) return;
    state.page = Math.max(0, Math.min(Math.ceil(state.images.length / PAGE) - 1, +e.target.dataset.go)); render();
  });
  apply();
  document.body.dataset.ready = "1";
}
init();
