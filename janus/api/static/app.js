// Janus's status page: polls /status (the picture `janus status` prints) every second and draws
// one card per dependency, with a sparkline of admissions/s against its tightest rate limit over
// the last minutes (kept in this page: the server holds no history). No framework, no CDN.
"use strict";

const POLL_MS = 1000;
const HISTORY_S = 300;
const history = new Map(); // dependency -> [{t, admissions}]

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 120 ? `${value.toFixed(1)} s` : `${(value / 60).toFixed(0)} min`;
}

function limitPerSecond(lane) {
  const perSecond = lane.rates.filter((r) => r.window_seconds).map((r) => r.count / r.window_seconds);
  return perSecond.length ? Math.min(...perSecond) : null;
}

function remember(lane, now) {
  const points = history.get(lane.dependency) || [];
  points.push({ t: now, admissions: lane.admissions_total });
  while (points.length && points[0].t < now - HISTORY_S) points.shift();
  history.set(lane.dependency, points);
  return points;
}

function sparkline(points, limit) {
  const width = 240, height = 48;
  const rates = [];
  for (let i = 1; i < points.length; i++) {
    const dt = points[i].t - points[i - 1].t;
    if (dt > 0) rates.push({ t: points[i].t, v: Math.max(0, (points[i].admissions - points[i - 1].admissions) / dt) });
  }
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("role", "img");
  const top = Math.max(limit || 0, ...rates.map((r) => r.v), 1) * 1.1;
  const end = points.length ? points[points.length - 1].t : 0;
  // The page's own history: the x axis spans what it has seen (30 s at least, HISTORY_S at most).
  const span = Math.max(30, points.length ? end - points[0].t : 0);
  const x = (t) => width - ((end - t) / span) * width;
  const y = (v) => height - (v / top) * height;
  if (limit) {
    const line = document.createElementNS(ns, "line");
    Object.entries({ x1: 0, x2: width, y1: y(limit), y2: y(limit), class: "limit" }).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  }
  const path = document.createElementNS(ns, "polyline");
  path.setAttribute("points", rates.map((r) => `${x(r.t).toFixed(1)},${y(r.v).toFixed(1)}`).join(" "));
  path.setAttribute("class", "admitted");
  svg.append(path);
  const last = rates.length ? rates[rates.length - 1].v : 0;
  svg.setAttribute("aria-label", `admissions ${last.toFixed(1)}/s` + (limit ? ` against a limit of ${limit}/s` : ""));
  return svg;
}

// An operator's pause and override in force (`janus pause`, `janus override`): who, why, until when.
function steering(lane, now) {
  const parts = [];
  for (const [kind, verb] of [["pause", "paused"], ["override", "overridden"]]) {
    const hand = lane.steering && lane.steering[kind];
    if (!hand) continue;
    const until = hand.until === null
      ? "until resumed"
      : `until ${new Date(hand.until * 1000).toLocaleTimeString()} (in ${seconds(Math.max(0, hand.until - now))})`;
    parts.push(`${verb} by ${hand.by} ${until}`);
  }
  return parts.join("; ") || "–";
}

// Adaptive limits where a dependency has them: "rate 38/1s, concurrency 12, lowered 2 s ago after
// throttled results", as `janus status` says it.
const ADAPTIVE_MOVES = {
  throttled: ["lowered", "after throttled results"],
  clean: ["raised", "after a clean round"],
  latency_rise: ["lowered", "as latency rose"],
  latency_floor: ["raised", "with latency near its floor"],
};

function adaptive(lane) {
  const a = lane.adaptive;
  if (!a) return "–";
  const parts = [];
  if (a.rate !== null) parts.push(`rate ${Number(a.rate.toPrecision(3))}/1s`);
  if (a.concurrency !== null) parts.push(`concurrency ${a.concurrency}`);
  let line = parts.join(", ");
  const move = ADAPTIVE_MOVES[a.signal];
  if (move && a.changed_seconds_ago !== null) line += `, ${move[0]} ${Math.round(a.changed_seconds_ago)} s ago ${move[1]}`;
  return line;
}

function row(label, value, cls) {
  return el("div", { class: "row" }, el("span", { class: "label" }, label), el("span", { class: `value ${cls}` }, value));
}

function card(lane, points, now) {
  const cap = lane.concurrency === null ? "–" : String(lane.concurrency);
  const rate = lane.rates.map((r) => `${r.used}/${r.limit}`).join(", ") || "no limit";
  const blocked = lane.blocked
    ? lane.blocked.limit + (lane.blocked.lifts_in_seconds !== null ? `, lifts in ${seconds(lane.blocked.lifts_in_seconds)}` : "")
    : "nothing";
  const reasons = Object.entries(lane.waiting_by_reason).map(([r, n]) => `${r} ${n}`).join(", ") || "–";
  const scopes = lane.top_scopes.slice(0, 3).map((s) => `${s.scope} ${s.waiting} waiting, ${s.held} held`).join("; ") || "–";
  const changes = Object.entries(lane.gate_events).map(([kind, n]) => `${kind.replace(/_/g, " ")} ${n}`).join(", ") || "–";
  const state = lane.state.replace(/ /g, "-");
  return el(
    "article",
    { class: `card state-${state}`, "data-dependency": lane.dependency },
    el("h2", {}, lane.dependency, " ", el("span", { class: "state" }, lane.state)),
    sparkline(points, limitPerSecond(lane)),
    row("admitted", String(lane.admissions_total), "admissions"),
    row("rate used/limit", rate, "rate"),
    row("held/cap", `${lane.held}/${cap}`, "held"),
    row("waiting", String(lane.waiting), "waiting"),
    row("oldest wait", seconds(lane.oldest_waiting_seconds), "oldest"),
    row("operator", steering(lane, now), "steering"),
    row("adaptive", adaptive(lane), "adaptive"),
    row("held back by", blocked, "blocked"),
    row("waiting by reason", reasons, "reasons"),
    row("top scopes", scopes, "scopes"),
    row("pauses, circuit", changes, "changes"),
  );
}

// The newest policy versions, pauses and overrides (`janus history` has them all).
function change(c) {
  const when = c.at === null ? "?" : new Date(c.at * 1000).toLocaleString();
  let what = c.what === "version" ? `version ${c.version}` : `${c.what} ${c.dependency}`;
  if (c.what !== "version" && c.detail) what += ` (${c.detail})`;
  if (c.what === "pause" || c.what === "override") {
    what += c.until === null ? " until resumed" : ` until ${new Date(c.until * 1000).toLocaleTimeString()}`;
  }
  const by = c.actor + (c.reason ? `: ${c.reason}` : "");
  const item = el("li", { "data-what": c.what }, el("span", { class: "muted" }, when), " ", what, " by ", by,
    c.applied ? "" : " (pending)");
  if (c.what === "version" && c.detail) {
    item.append(el("details", {}, el("summary", { class: "muted" }, "diff"), el("pre", { class: "diff" }, c.detail)));
  }
  return item;
}

// Member mode (scale-out): who leads which dependency, as the process last read the database.
function short(member) {
  return member ? member.split("-")[0] : "–";
}

function cells(...values) {
  return el("tr", {}, ...values.map((v) => el("td", {}, v)));
}

function owners(answer) {
  const section = document.getElementById("owners");
  if (!answer || (!answer.members.length && !answer.dependencies.length)) {
    section.hidden = true; // a single leader: nothing to show
    return;
  }
  const now = answer.as_of;
  const leases = new Map(answer.dependencies.map((d) => [d.dependency, d]));
  for (const name of answer.unowned) if (!leases.has(name)) leases.set(name, null);
  const rows = [...leases.keys()].sort().map((name) => {
    const d = leases.get(name);
    if (d === null) return el("tr", { "data-dependency": name, class: "unowned" }, el("td", {}, name), el("td", {}, "nobody"));
    const left = d.live ? seconds(d.lease_left_seconds) : `expired ${seconds(Math.max(0, now - d.since))} ago`;
    const row = cells(name, short(d.member) + (d.member_live ? "" : " (gone)"), d.host || "–", String(d.epoch), left);
    row.dataset.dependency = name;
    if (!d.live) row.className = "unowned";
    return row;
  });
  document.getElementById("owners-list").replaceChildren(...rows);
  document.getElementById("owners-read").textContent = `(read ${seconds(answer.read_seconds_ago)} ago)`;
  document.getElementById("members-head").textContent = `Members (${answer.members.length} live)`;
  document.getElementById("members-list").replaceChildren(...answer.members.map((m) => {
    const name = short(m.member) + (m.member === answer.this_member ? " (this process)" : "");
    const row = cells(name, m.host || "–", seconds(Math.max(0, now - m.started_at)),
      `${seconds(m.heartbeat_age_seconds)} ago`, m.dependencies.join(", ") || "nothing (standing by)");
    row.dataset.member = m.member;
    return row;
  }));
  section.hidden = false;
}

function show(body) {
  const process = document.getElementById("process");
  const standby = document.getElementById("standby");
  const list = document.getElementById("dependencies");
  if (body.process.leading) {
    process.textContent = `leading in epoch ${body.process.epoch}`;
    standby.hidden = true;
  } else {
    process.textContent = "standing by";
    const leader = body.leader;
    standby.textContent = !leader
      ? "This process does not lead, and no leader is recorded."
      : leader.error
        ? `This process does not lead; ${leader.error}`
        : `This process does not lead: ${leader.identity}${leader.address ? " on " + leader.address : ""} ` +
          `${leader.live ? "leads" : "held the lease last"} in epoch ${leader.epoch}. Open its page.`;
    standby.hidden = false;
  }
  list.replaceChildren(...body.dependencies.map((lane) => card(lane, remember(lane, body.time), body.time)));
  owners(body.owners);
  const changes = body.recent_changes || [];
  document.getElementById("changes-list").replaceChildren(
    ...(changes.length ? changes.map(change) : [el("li", { class: "muted" }, "none")]),
  );
  document.getElementById("updated").textContent = `updated ${new Date(body.time * 1000).toLocaleTimeString()}`;
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

async function poll() {
  const error = document.getElementById("error");
  try {
    const response = await fetch("/status", { cache: "no-store" });
    if (!response.ok) throw new Error(`/status answered ${response.status}`);
    show(await response.json());
    error.hidden = true;
  } catch (e) {
    error.textContent = `cannot read /status: ${e.message}`;
    error.hidden = false;
  }
  setTimeout(poll, POLL_MS);
}

async function why(event) {
  event.preventDefault();
  const job = document.getElementById("why-job").value.trim();
  const answer = document.getElementById("why-answer");
  answer.replaceChildren(el("p", { class: "muted" }, "asking…"));
  try {
    const response = await fetch(`/why/${encodeURIComponent(job)}`, { cache: "no-store" });
    const body = await response.json();
    if (body.error) {
      answer.replaceChildren(el("p", { class: "error" }, body.error));
      return;
    }
    const head = el("p", { class: "why-head" }, `${body.job_id}: ${body.state} (${body.dependency}, scope ${body.scope})`);
    const reasons = body.waits_for;
    const items = reasons === undefined || reasons === null
      ? [el("li", {}, "not waiting")]
      : reasons.length === 0
        ? [el("li", {}, "nothing holds it back: it goes at the next tick")]
        : reasons.map((r) => el("li", { "data-reason": r.reason }, `${r.reason}: ${r.detail}`));
    answer.replaceChildren(head, el("ul", {}, ...items));
  } catch (e) {
    answer.replaceChildren(el("p", { class: "error" }, `cannot ask: ${e.message}`));
  }
}

document.getElementById("why-form").addEventListener("submit", why);
poll();
