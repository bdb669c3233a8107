/* collm-nas dashboard pages: each fills its shell from the JSON API and polls it for live updates. */
"use strict";

const ROOT = document.body.dataset.root || "";
const RUN = document.body.dataset.run || "";
const POLL_MS = 1500;

// ------------------------------------------------------------------ helpers
function esc(value) {
  return String(value === null || value === undefined ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
const $ = id => document.getElementById(id);
const fmt = v => (typeof v === "number" ? Charts.fmt(v) : (v === null || v === undefined ? "–" : String(v)));
const runUrl = id => `${ROOT}/runs/${encodeURIComponent(id)}`;

async function api(path, options) {
  const response = await fetch(ROOT + path, { credentials: "same-origin", ...(options || {}) });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}
const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function when(ts) {
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  const pad = n => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function ago(ts) {
  if (!ts) return "–";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}
function statusClass(status) {
  if (!status) return "status";
  if (status.startsWith("awaiting")) return "status awaiting";
  if (status.startsWith("running")) return "status running";
  if (status.startsWith("finished")) return "status finished";
  if (status.startsWith("failed")) return "status failed";
  return "status";
}
function facts(dl, items) {
  dl.innerHTML = items.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v, id]) => `<div><dt>${esc(k)}</dt><dd${id ? ` id="${id}"` : ""}>${v}</dd></div>`).join("");
}
function ready() { document.body.dataset.ready = "1"; }

/* Calls fn every ms; the header's "live" mark turns amber while the server does not answer. */
function poll(fn, ms) {
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try { await fn(); $("live").classList.remove("stale"); $("live").textContent = "live"; }
    catch (e) { $("live").classList.add("stale"); $("live").textContent = "reconnecting…"; }
    finally { busy = false; }
  };
  return setInterval(tick, ms || POLL_MS);
}
function debounce(fn, ms) { let t = null; return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); }; }

function pager(box, offset, limit, total, go) {
  box.textContent = "";
  if (total <= limit && offset === 0) return;
  const prev = document.createElement("button");
  prev.type = "button"; prev.textContent = "‹ previous"; prev.disabled = offset <= 0;
  prev.onclick = () => go(Math.max(0, offset - limit));
  const next = document.createElement("button");
  next.type = "button"; next.textContent = "next ›"; next.disabled = offset + limit >= total;
  next.onclick = () => go(offset + limit);
  const text = document.createElement("span");
  text.textContent = `${total ? offset + 1 : 0}–${Math.min(total, offset + limit)} of ${total}`;
  box.append(prev, text, next);
}

function sortHeaders(table, state, onChange) {
  table.querySelectorAll("th[data-key]").forEach(th => {
    th.classList.toggle("asc", th.dataset.key === state.key && state.dir === "asc");
    th.classList.toggle("desc", th.dataset.key === state.key && state.dir === "desc");
    th.onclick = () => {
      if (state.key === th.dataset.key) state.dir = state.dir === "asc" ? "desc" : "asc";
      else { state.key = th.dataset.key; state.dir = th.classList.contains("num") ? "desc" : "asc"; }
      onChange();
    };
  });
}

// ---------------------------------------------------------------- runs page
function runsPage() {
  const state = { key: "updated_at", dir: "desc", filter: "", offset: 0, limit: 100, picked: new Set(), rows: [] };
  const table = $("runs-table");

  function render(data) {
    state.rows = data.runs;
    table.tBodies[0].innerHTML = data.runs.map(r => `
      <tr class="${r.awaiting ? "awaiting" : ""}" data-run="${esc(r.run_id)}">
        <td class="pick"><input type="checkbox" data-pick="${esc(r.run_id)}" ${state.picked.has(r.run_id) ? "checked" : ""} aria-label="select ${esc(r.run_id)}"></td>
        <td><a href="${runUrl(r.run_id)}">${esc(r.run_id)}</a></td>
        <td><span class="${statusClass(r.status)}">${esc(r.status)}</span>${r.awaiting ? ` <a class="approve-link" href="${runUrl(r.run_id)}/approval">review batch</a>` : ""}</td>
        <td>${esc(r.space)}</td><td>${esc(r.dataset)}</td><td>${esc(r.strategy)}</td><td>${esc(r.llm || "–")}</td>
        <td class="num evaluations">${esc(r.evaluations)} / ${esc(r.budget)}</td>
        <td class="num">${fmt(r.best_value)}</td>
        <td>${when(r.created_at)}</td><td title="${when(r.updated_at)}">${ago(r.updated_at)}</td>
      </tr>`).join("");
    table.querySelectorAll("input[data-pick]").forEach(box => {
      box.onchange = () => { box.checked ? state.picked.add(box.dataset.pick) : state.picked.delete(box.dataset.pick); pickedChanged(); };
    });
    sortHeaders(table, state, () => { state.offset = 0; load().catch(showError); });
    pager($("runs-pager"), state.offset, state.limit, data.total, o => { state.offset = o; load().catch(showError); });
    $("runs-empty").hidden = data.total > 0 || !!state.filter;
    $("runs-location").textContent = data.location;
    const banner = $("runs-awaiting");
    banner.hidden = !data.awaiting.length;
    banner.className = "banner awaiting";
    banner.innerHTML = data.awaiting.length ? `${data.awaiting.length} run${data.awaiting.length > 1 ? "s wait" : " waits"} for approval: ` +
      data.awaiting.map(id => `<a href="${runUrl(id)}/approval">${esc(id)}</a>`).join(", ") : "";
  }
  function pickedChanged() {
    const button = $("compare-selected");
    button.disabled = state.picked.size === 0;
    button.textContent = state.picked.size ? `Compare selected (${state.picked.size})` : "Compare selected";
  }
  function showError(e) { $("runs-empty").hidden = false; $("runs-empty").textContent = e.message; }
  $("compare-selected").onclick = () => {
    location.href = `${ROOT}/compare?runs=${[...state.picked].map(encodeURIComponent).join(",")}`;
  };
  $("pick-all").onchange = ev => {
    for (const r of state.rows) ev.target.checked ? state.picked.add(r.run_id) : state.picked.delete(r.run_id);
    pickedChanged();
    table.querySelectorAll("input[data-pick]").forEach(box => { box.checked = state.picked.has(box.dataset.pick); });
  };
  $("runs-filter").addEventListener("input", debounce(ev => { state.filter = ev.target.value; state.offset = 0; load().catch(showError); }, 200));

  async function load() {  // one page, sorted and filtered by the server
    const q = new URLSearchParams({ offset: state.offset, limit: state.limit, sort: state.key, order: state.dir, q: state.filter });
    render(await api(`/api/runs?${q}`));
  }
  load().then(ready, e => { showError(e); ready(); });
  poll(load, 2000);
}

// ------------------------------------------------------------------ run page
function runPage() {
  const id = encodeURIComponent(RUN);
  const base = `/api/runs/${id}`;
  const trials = { key: "eval", dir: "asc", q: "", status: "all", offset: 0, limit: 50 };
  const rounds = { offset: 0, limit: 10 };
  const scatterState = { x: "", y: "", xdir: "", ydir: "" };
  let last = null;
  let curveData = null;

  function renderSummary(s) {
    $("run-status").className = statusClass(s.status);
    $("run-status").textContent = s.status + (s.stop_reason && !s.awaiting ? ` (${s.stop_reason})` : "");
    const best = s.best;
    facts($("run-facts"), [
      ["evaluations", `${s.evaluations} / ${s.budget}`, "run-evaluations"],
      [`best ${s.searched_metric}`, best ? fmt(best.searched) : "–", "run-best"],
      s.reported_metric !== s.searched_metric ? [`its ${s.reported_metric}`, best ? fmt(best.reported) : "–"] : ["", null],
      ["best NCode", best ? `<span class="mono">${esc(best.ncode)}</span> (evaluation ${esc(best.found_at)})` : "–"],
      ["architecture", best ? `<span class="mono">${esc(best.arch)}</span>` : "–"],
      ["failed trials", s.failed],
      ["space", esc(s.space)], ["dataset", esc(s.dataset)], ["strategy", esc(s.strategy)], ["LLM", esc(s.llm || "none")],
      ["started", when(s.created_at)], ["last activity", `<span title="${when(s.updated_at)}">${ago(s.updated_at)}</span>`],
      s.objectives ? ["objectives", esc(s.objectives.join(", "))] : ["", null],
      s.objectives ? ["Pareto front", `${s.front_size} trials; hypervolume ${fmt(s.hypervolume)}`] : ["", null],
      s.hosted_by ? ["hosted by", `LangGraph server ${esc(s.hosted_by)}`] : ["", null],
      s.parent ? ["forked from", `<a href="${runUrl(s.parent.run_id)}">${esc(s.parent.run_id)}</a> round ${esc(s.parent.round)}`] : ["", null],
    ]);
    $("run-note").textContent = s.metric_note || "";
    const pause = $("run-pause");
    pause.hidden = !s.awaiting;
    pause.innerHTML = s.awaiting ? `Waiting for approval of round ${esc(s.pending_round)}: <a id="review-link" href="${runUrl(RUN)}/approval">review the batch</a>` : "";
    const answer = $("run-answer");
    const a = s.answer;
    answer.hidden = !(a && (a.running || a.error));
    if (a && a.running) { answer.className = "banner"; answer.textContent = `Answered here (${a.reply.action}); the run goes on in the dashboard's process…`; }
    else if (a && a.error) { answer.className = "banner bad"; answer.textContent = `The run stopped after the answer: ${a.error}`; }
    $("run-config").textContent = JSON.stringify(s.config, null, 2);
    $("run-degraded").hidden = !s.degraded;
    $("run-degraded").textContent = s.degraded || "";
    const llm = s.llm_summary;
    $("llm-card").hidden = !llm;
    if (llm) {
      const modes = Object.entries(llm.modes || {}).map(([r, m]) => `${r}: ${m.join("/")}`).join("; ");
      facts($("llm-facts"), [
        ["rounds with the LLM", `${llm.llm_rounds} / ${llm.rounds}`], ["fell back", `${llm.fallback_rounds} rounds`],
        ["calls", `${llm.calls} (${llm.failed_calls} failed)`], ["tokens", `prompt ${llm.prompt_tokens} / completion ${llm.completion_tokens}`],
        ["latency", `${fmt(llm.latency_s)} s (${fmt(llm.latency_per_call_s)} s a call)`], ["decoding", esc(modes || "–")],
        ["proposals", llm.proposed], ["illegal", `${llm.illegal} (${fmt(100 * llm.illegal_rate)}%)`],
        ["duplicates", `${llm.duplicates} (${fmt(100 * llm.duplicate_rate)}%)`], ["accepted", llm.accepted],
        ["topped up", llm.topped_up], ["corrective follow-ups", llm.corrections], ["ranked out", llm.ranked_out],
        ["tool calls", Object.entries(llm.tool_calls || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "none"],
        ["local server", llm.server_restarts || llm.server_timeouts || llm.server_down ?
          esc(`restarted ${llm.server_restarts} times; ${llm.server_timeouts} slow calls timed out` +
              (llm.server_down ? "; given up after its restarts" : "")) : "no trouble"],
      ]);
    }
  }

  function renderCurve(c) {
    curveData = c;
    const steps = c.steps.map(s => [s.eval, s.value]);
    Charts.line($("curve"), [
      { label: "best so far", points: steps, step: true, until: c.evaluations, marks: steps.length < 80, dots: c.values },
    ], {
      xlabel: "evaluations", ylabel: `${c.metric} (${c.mode})`, xMax: Math.max(c.evaluations, 2), xMin: 1,
      emptyText: "no successful trial yet",
      hover: x => {
        if (x < 1 || x > c.evaluations) return null;
        let k = -1;
        for (let i = 0; i < c.steps.length && c.steps[i].eval <= x; i++) k = i;
        if (k < 0) return `evaluation ${x}: no successful trial yet`;
        const s = c.steps[k];
        return `<b>evaluation ${x}</b>: best so far ${esc(c.metric)} = ${fmt(s.value)}<br>` +
          `NCode <span class="mono">${esc(s.ncode)}</span> (found at evaluation ${s.eval}, round ${s.round})<br>` +
          `<span class="mono">${esc(s.arch)}</span>`;
      },
    });
  }

  function renderTrials(t) {
    const table = $("trials-table");
    const metricCols = t.metrics;
    const cols = [["eval", "#", true], ["round", "round", true], ["ncode", "NCode"], ["arch", "architecture"],
                  ["status", "status"], ...metricCols.map(m => [m, m, true]), ["seconds", "seconds", true], ["error", "error"]];
    table.tHead.innerHTML = "<tr>" + cols.map(([k, label, num]) => `<th data-key="${esc(k)}"${num ? ' class="num"' : ""}>${esc(label)}</th>`).join("") + "</tr>";
    table.tBodies[0].innerHTML = t.rows.map(r => "<tr" + (r.status !== "ok" ? ' class="failed"' : "") + ">" + cols.map(([k, , num]) => {
      let v = k in r && k !== "metrics" ? r[k] : r.metrics[k];
      if (k === "arch") return `<td class="arch">${esc(v)}</td>`;
      if (k === "ncode") return `<td class="mono">${esc(v)}</td>`;
      return `<td${num ? ' class="num"' : ""}>${num ? fmt(v) : esc(v === null || v === undefined ? "" : v)}</td>`;
    }).join("") + "</tr>").join("");
    sortHeaders(table, trials, () => { trials.offset = 0; loadTrials(); });
    $("trials-count").textContent = t.total === t.all ? `${t.all} trials` : `${t.total} of ${t.all} trials match`;
    pager($("trials-pager"), t.offset, t.limit, t.total, o => { trials.offset = o; loadTrials(); });
  }
  async function loadTrials() {
    const q = new URLSearchParams({ offset: trials.offset, limit: trials.limit, sort: trials.key, order: trials.dir, q: trials.q, status: trials.status });
    renderTrials(await api(`${base}/trials?${q}`));
  }

  function renderScatter(sc) {
    for (const [sel, value] of [["scatter-x", sc.x], ["scatter-y", sc.y]]) {
      const box = $(sel);
      const wanted = sc.metrics.join("|");
      if (box.dataset.metrics !== wanted) {
        box.innerHTML = sc.metrics.map(m => `<option value="${esc(m)}">${esc(m)}</option>`).join("");
        box.dataset.metrics = wanted;
      }
      box.value = value;
    }
    $("scatter-xdir").value = sc.xdir;
    $("scatter-ydir").value = sc.ydir;
    Object.assign(scatterState, { x: sc.x, y: sc.y, xdir: sc.xdir, ydir: sc.ydir });
    const cloud = sc.points.map(p => ({ x: p[0], y: p[1], eval: p[2], ncode: p[3] }));
    Charts.scatter($("scatter"), cloud, sc.front, {
      xlabel: `${sc.x} (${sc.xdir})`, ylabel: `${sc.y} (${sc.ydir})`,
      hover: (p, onFront) => `<b>evaluation ${p.eval}</b>${onFront ? " · non-dominated" : ""}<br>${esc(sc.x)} = ${fmt(p.x)}, ${esc(sc.y)} = ${fmt(p.y)}<br>` +
        `NCode <span class="mono">${esc(p.ncode)}</span>` + (p.arch ? `<br><span class="mono">${esc(p.arch)}</span>` : ""),
    });
    $("scatter-note").textContent = sc.count ? `${sc.count} trials; ${sc.front.length} non-dominated (orange)` +
      (sc.points.length + sc.front.length < sc.count ? `; ${sc.points.length + sc.front.length} drawn` : "") : "";
  }
  async function loadScatter() {
    const q = new URLSearchParams(Object.fromEntries(Object.entries(scatterState).filter(([, v]) => v)));
    renderScatter(await api(`${base}/scatter?${q}`));
  }
  for (const sel of ["scatter-x", "scatter-y", "scatter-xdir", "scatter-ydir"]) {
    $(sel).addEventListener("change", () => {
      scatterState[sel.replace("scatter-", "")] = $(sel).value;
      if (sel === "scatter-x") scatterState.xdir = "";
      if (sel === "scatter-y") scatterState.ydir = "";
      loadScatter();
    });
  }

  function verdictChip(v) {
    const cls = { accepted: "accepted", illegal: "illegal", duplicate: "duplicate", "ranked out": "ranked", "same network": "duplicate", "topped up": "topped" }[v.verdict] || "";
    return `<span class="verdict ${cls}" title="${esc(v.verdict + (v.why ? ": " + v.why : ""))}">${esc(v.ncode)} · ${esc(v.verdict)}</span>`;
  }
  function strategyHtml(nav, summary) {
    if (!nav && !summary) return "";
    nav = nav || { summary };
    const parts = [`<div><b>Navigator:</b> ${esc(nav.summary || summary || "")}</div>`];
    const items = [];
    for (const p of nav.patterns || []) items.push(`pattern: ${esc(p)}`);
    for (const [decision, pref] of Object.entries(nav.directions || {})) {
      const bits = [];
      if (pref.prefer && pref.prefer.length) bits.push(`prefer ${esc(pref.prefer.join(", "))}`);
      if (pref.avoid && pref.avoid.length) bits.push(`avoid ${esc(pref.avoid.join(", "))}`);
      if (bits.length) items.push(`${esc(decision)}: ${bits.join("; ")}`);
    }
    for (const c of nav.constraints || []) items.push(`constraint: ${esc(c)}`);
    if (nav.example_codes && nav.example_codes.length) items.push(`examples: <span class="mono">${esc(nav.example_codes.join(" "))}</span>`);
    if (items.length) parts.push("<ul>" + items.map(i => `<li>${i}</li>`).join("") + "</ul>");
    return `<div class="strategy">${parts.join("")}</div>`;
  }
  function humanHtml(h) {
    if (!h) return "";
    let text = `<b>Person:</b> ${esc(h.action)}`;
    if (h.action === "edit") text += ` — dropped ${esc((h.drop || []).join(" ") || "none")}, added ${esc((h.add || []).join(" ") || "none")}`;
    if (h.comment) text += ` — “${esc(h.comment)}”`;
    return `<div class="human">${text}</div>`;
  }
  function renderRounds(r) {
    $("rounds-count").textContent = `${r.total} rounds`;
    $("rounds").innerHTML = r.rounds.map(x => {
      const llm = x.llm ? ` · LLM ${x.llm.calls} calls, ${x.llm.prompt_tokens}+${x.llm.completion_tokens} tokens, ${fmt(x.llm.latency_s)} s` +
        (x.llm.failed_calls ? `, ${x.llm.failed_calls} failed` : "") : "";
      const counts = `proposed ${fmt(x.proposed)}: accepted ${fmt(x.accepted)}, illegal ${fmt(x.illegal)}, ` +
        `duplicates ${fmt(x.duplicates)}, ranked out ${fmt(x.ranked_out || 0)}; topped up ${fmt(x.topped_up)}` +
        (x.same_network ? `; same network as one held ${fmt(x.same_network)}` : "") +
        (x.corrections ? `; ${x.corrections} corrective follow-up${x.corrections > 1 ? "s" : ""}` : "");
      let verdicts = `<div class="muted">${counts}</div>`;
      if (x.verdicts && x.verdicts.length) {
        const more = (x.proposed || 0) + (x.topped_up || 0) - x.verdicts.length;
        verdicts = `<details${x.verdicts.length <= 24 ? " open" : ""}><summary class="muted">${counts}</summary>` +
          `<div class="verdicts">${x.verdicts.map(verdictChip).join("")}</div>` +
          (more > 0 ? `<div class="muted">(${more} more not kept)</div>` : "") + "</details>";
      }
      const head = x.rejected ? `rejected: nothing evaluated` :
        `evaluated ${fmt(x.evaluated)}${x.failed ? ` (${x.failed} failed)` : ""} · best so far ${fmt(x.best_value)} · ${fmt(x.seconds)} s`;
      return `<div class="round" data-round="${x.round}"><h3>Round ${x.round} <span class="muted">${head}${llm}</span></h3>` +
        strategyHtml(x.navigator, x.strategy) + verdicts + humanHtml(x.human) + "</div>";
    }).join("") || '<p class="muted">no round finished yet</p>';
    pager($("rounds-pager"), r.offset, r.limit, r.total, o => { rounds.offset = o; loadRounds(); });
  }
  async function loadRounds() {
    renderRounds(await api(`${base}/rounds?offset=${rounds.offset}&limit=${rounds.limit}`));
  }

  async function loadAll() {  // every panel's request at once, each drawn when it arrives
    const which = $("curve-which").value;
    await Promise.all([api(base).then(renderSummary), api(`${base}/curve?which=${which}`).then(renderCurve),
                       loadTrials(), loadScatter(), loadRounds()]);
  }
  $("curve-which").addEventListener("change", async () => renderCurve(await api(`${base}/curve?which=${$("curve-which").value}`)));
  $("trials-filter").addEventListener("input", debounce(ev => { trials.q = ev.target.value; trials.offset = 0; loadTrials().catch(showError); }, 300));
  $("trials-status").addEventListener("change", ev => { trials.status = ev.target.value; trials.offset = 0; loadTrials().catch(showError); });
  window.addEventListener("resize", debounce(() => { if (curveData) renderCurve(curveData); loadScatter().catch(showError); }, 200));

  function showError(e) { $("run-note").textContent = e.message; }
  loadAll().then(ready, e => { showError(e); ready(); });
  poll(async () => {
    const s = await api(`${base}/status`);
    const key = `${s.evaluations}|${s.status}|${s.updated_at}|${s.answering}`;
    if (last !== null && key !== last) await loadAll();
    last = key;
  });
}

// ------------------------------------------------------------ approval page
function approvalPage() {
  const base = `/api/runs/${encodeURIComponent(RUN)}/approval`;
  let shownRound = null;
  let answeredRound = null;  // the round of the pause answered from this page, until the run moved on

  function setBusy(busy) {
    for (const b of ["approve-button", "edit-button", "reject-button"]) $(b).disabled = busy;
  }
  function showError(message) {
    const box = $("approval-error");
    box.hidden = !message;
    box.textContent = message || "";
  }
  function banner(text, kind) {
    const box = $("approval-answer");
    box.hidden = !text;
    box.className = `banner ${kind || ""}`;
    box.textContent = text || "";
  }
  function render(a) {
    $("approval-status").className = statusClass(a.status);
    $("approval-status").textContent = a.status;
    $("approval-progress").textContent = `evaluations ${a.evaluations} / ${a.budget}`;
    let p = a.pending;
    if (a.answer && a.answer.error) banner(`The run stopped after the answer: ${a.answer.error}`, "bad");
    if (answeredRound !== null) {
      if (p && p.round === answeredRound && !p.error) p = null;  // the answer is on its way (a server takes it)
      if (!p) banner(`Answer taken; the run goes on (${a.status}).`, "good");
      else if (p.round !== answeredRound) { banner(`Answer taken; the run went on and now waits at round ${p.round}.`, "good"); answeredRound = null; }
      else answeredRound = null;  // the pause stayed open: its error says why
    }
    $("approval-pause").hidden = !p;
    $("approval-none").hidden = !!p;
    if (!p) {
      $("approval-none").innerHTML = `Nothing to approve now: run <a href="${runUrl(RUN)}">${esc(RUN)}</a> is ${esc(a.status)}.`;
      shownRound = null;
      return;
    }
    if (shownRound === p.round && $("approval-table").tBodies[0].rows.length) return; // keep what the person ticked
    shownRound = p.round;
    setBusy(false);
    showError("");
    $("approval-head").innerHTML = `<b>Round ${esc(p.round)}</b> — ${esc(p.reason)}`;
    const s = p.strategy || {};
    $("approval-strategy").innerHTML = s.summary ? `<b>Navigator:</b> ${esc(s.summary)}` +
      ((s.patterns || []).length ? "<ul>" + s.patterns.map(x => `<li>${esc(x)}</li>`).join("") + "</ul>" : "") : "";
    $("approval-table").tBodies[0].innerHTML = p.candidates.map((c, i) => `
      <tr data-ncode="${esc(c.ncode)}">
        <td><input type="checkbox" class="drop" value="${esc(c.ncode)}" aria-label="drop ${esc(c.ncode)}"></td>
        <td>${i + 1}</td><td class="mono">${esc(c.ncode)}</td>
        <td>${c.valid ? "yes" : `<span class="problem">no: ${esc(c.problems.join("; "))}</span>`}</td>
        <td class="num">${c.estimated_cost_s === null ? "?" : fmt(c.estimated_cost_s)}</td>
        <td class="arch">${esc(c.arch || "")}</td>
      </tr>`).join("");
    $("approval-budget").textContent = `Budget left ${p.budget_left} of ${p.budget}; estimated cost of the batch: ` +
      `${p.estimated_cost_s === null ? "unknown" : fmt(p.estimated_cost_s) + " s"} (${p.cost_source}).`;
    $("approval-earlier").hidden = !p.error;
    $("approval-earlier").textContent = p.error ? `An earlier answer was refused: ${p.error}` : "";
  }

  async function load() { render(await api(base)); }

  async function answer(reply) {
    setBusy(true);
    showError("");
    const body = { ...reply, round: shownRound };
    try {
      const check = await post(`${base}/check`, body);   // refused answers come back here, as 200s
      if (!check.ok) { showError(check.error); setBusy(false); return; }
      await post(base, body);
      answeredRound = body.round;
      $("edit-add").value = "";
      $("reject-comment").value = "";
      await load();
    } catch (e) {
      showError(e.message);
      setBusy(false);
    }
  }
  $("approve-button").onclick = () => answer({ action: "approve" });
  $("edit-button").onclick = () => {
    const drop = [...document.querySelectorAll("#approval-table input.drop:checked")].map(b => b.value);
    const add = $("edit-add").value.split(/[\s,]+/).filter(Boolean);
    if (!drop.length && !add.length) { showError("tick candidates to drop or type codes to add, then apply the edit"); return; }
    answer({ action: "edit", drop, add });
  };
  $("reject-button").onclick = () => answer({ action: "reject", comment: $("reject-comment").value });

  load().then(ready, e => { showError(e.message); ready(); });
  poll(load);
}

// ------------------------------------------------------------- compare page
function comparePage() {
  const params = new URLSearchParams(location.search);
  const picked = new Set((params.get("runs") || "").split(",").map(s => s.trim()).filter(Boolean));
  let allRuns = [];

  function renderPicker() {
    $("compare-picker").innerHTML = allRuns.map(r => `<label><input type="checkbox" value="${esc(r.run_id)}" ${picked.has(r.run_id) ? "checked" : ""}> ${esc(r.run_id)}</label>`).join("");
    $("compare-picker").querySelectorAll("input").forEach(box => {
      box.onchange = () => {
        box.checked ? picked.add(box.value) : picked.delete(box.value);
        history.replaceState(null, "", `${ROOT}/compare?runs=${[...picked].map(encodeURIComponent).join(",")}`);
        load().catch(e => { $("compare-charts").textContent = e.message; });
      };
    });
  }
  function render(data) {
    const box = $("compare-charts");
    box.textContent = "";
    const panels = [...new Set(data.series.map(s => s.panel))];
    for (const panel of panels) {
      const title = document.createElement("div");
      title.className = "panel-title";
      title.textContent = panel;
      const chart = document.createElement("div");
      chart.className = "chart";
      box.append(title, chart);
      const series = data.series.filter(s => s.panel === panel);
      const lines = series.map((s, i) => ({
        label: s.label, color: Charts.PALETTE[i % Charts.PALETTE.length], step: true,
        points: s.points.map(p => [p[0], p[1]]), band: s.runs.length > 1 ? s.points.map(p => [p[0], p[2], p[3]]) : null,
      }));
      Charts.line(chart, lines, {
        xlabel: "evaluations", ylabel: `${data.which} metric of the best so far`, xMin: 1,
        hover: x => {
          const rows = series.map((s, i) => {
            let k = -1;
            for (let j = 0; j < s.points.length && s.points[j][0] <= x; j++) k = j;
            if (k < 0) return null;
            const p = s.points[k];
            return `<span style="color:${Charts.PALETTE[i % Charts.PALETTE.length]}">■</span> ${esc(s.label)}: ${fmt(p[1])}` +
              (s.runs.length > 1 ? ` (min ${fmt(p[2])}, max ${fmt(p[3])}, ${p[4]} runs)` : "");
          }).filter(Boolean);
          return rows.length ? `<b>evaluation ${x}</b><br>${rows.join("<br>")}` : null;
        },
      });
      Charts.legend(chart, series.map((s, i) => ({ label: `${s.label} (n=${s.runs.length})`, color: Charts.PALETTE[i % Charts.PALETTE.length] })));
    }
    if (!panels.length) box.innerHTML = '<p class="muted">Pick runs above to compare them.</p>';
    $("compare-table").tBodies[0].innerHTML = data.runs.map(r => `<tr><td><a href="${runUrl(r.run_id)}">${esc(r.run_id)}</a></td>` +
      `<td>${esc(r.strategy)}</td><td>${esc(r.panel)}</td><td>${esc(r.seed)}</td><td><span class="${statusClass(r.status)}">${esc(r.status)}</span></td>` +
      `<td class="num compare-evaluations">${r.evaluations} / ${r.budget}</td></tr>`).join("");
  }
  async function load() {
    if (!picked.size) { render({ which: $("compare-which").value, series: [], runs: [] }); return; }
    render(await api(`/api/compare?runs=${[...picked].map(encodeURIComponent).join(",")}&which=${$("compare-which").value}`));
  }
  $("compare-which").addEventListener("change", () => load());
  (async () => {
    allRuns = (await api("/api/runs?sort=updated_at&order=desc")).runs;
    renderPicker();
    await load();
  })().then(ready, e => { $("compare-charts").textContent = e.message; ready(); });
  poll(load, 3000);
}

const PAGES = { runs: runsPage, run: runPage, approval: approvalPage, compare: comparePage };
(PAGES[document.body.dataset.page] || (() => ready()))();
