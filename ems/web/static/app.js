// The daemon's page: live figures from /api/status every second, the chart every minute, events and
// the bill; the override forms; the English/Japanese switch. Plain JavaScript, no library, nothing
// fetched from outside the daemon. Times are the site's, as the API gives them (ISO 8601 with offset).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let lang = document.body.dataset.lang || "en";
  let labels = null;
  let last = null;          // the last status
  let nextEvents = null;    // the query of the next (older) page of events
  let prefilled = false;

  const t = (key) => (labels && labels[lang] && labels[lang][key]) || key;
  const token = () => localStorage.getItem("ems-token") || "";
  const headers = (extra) => Object.assign(token() ? { Authorization: "Bearer " + token() } : {}, extra || {});
  const get = (url) => fetch(url, { headers: headers(), cache: "no-store" });
  const num = (x, nd) => (x === null || x === undefined ? "–" : Number(x).toFixed(nd === undefined ? 2 : nd));
  const kw = (x) => num(x) + " kW";
  const hms = (iso) => (iso ? iso.slice(11, 19) : "–");
  const hm = (iso) => (iso ? iso.slice(11, 16) : "–");
  const dayHm = (iso) => (iso ? iso.slice(5, 10) + " " + iso.slice(11, 16) : "–");
  const offset = () => (last && last.now ? last.now.slice(19) : "+09:00");
  const age = (s) => (s === null || s === undefined ? "–" : s < 120 ? Math.round(s) + " s" : Math.round(s / 60) + " min");

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function relabel() {
    document.documentElement.lang = lang;
    document.body.dataset.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((e) => { e.textContent = t(e.dataset.i18n); });
    if (last) show(last);
  }

  function show(s) {
    last = s;
    $("clock").textContent = s.now.slice(0, 10) + " " + hms(s.now);
    const d = s.daemon;
    const stale = d.last_tick_age_s !== null && d.last_tick_age_s > 60;
    $("alive").textContent = stale ? t("stale") + " " + age(d.last_tick_age_s) : t("alive");
    $("alive").className = "pill " + (stale ? "bad" : "good");
    $("grid-down").hidden = s.grid_up;
    const w = s.window;
    $("w-range").textContent = hm(w.start) + "–" + hm(w.end);
    $("w-progress").style.width = (w.elapsed_s === null ? 0 : Math.min(100, w.elapsed_s / 18)) + "%";
    $("w-kwh").textContent = num(w.import_kwh, 3) + " kWh";
    $("w-avg").textContent = kw(w.average_kw);
    $("w-now").textContent = kw(w.import_now_kw);
    $("w-pred").textContent = kw(w.predicted_kw);
    $("w-target").textContent = kw(w.target_kw);
    $("alarm").textContent = t("alarm_" + w.alarm);
    $("alarm").className = "alarm " + w.alarm;
    $("demand").dataset.alarm = w.alarm;
    const m = s.month;
    $("m-name").textContent = m.month;
    $("m-peak").textContent = kw(m.peak_kw) + (m.peak_source ? " (" + t("source_" + m.peak_source) + ")" : "");
    $("m-contract").textContent = kw(m.contract_kw) + (m.contract_set_by ? " (" + t("set_by") + " " + m.contract_set_by + ")" : "");
    $("m-bar").style.width = (m.contract_kw ? Math.min(100, (100 * m.peak_kw) / m.contract_kw) : 0) + "%";
    const p = s.plan;
    $("p-state").textContent = p ? (p.following ? t("following") : t("safe_rule")) + ", " + t("plan_age") + " " + hm(p.created) : "–";
    showCars(s);
    showOverrides(s);
    if (!prefilled) prefill(s);
  }

  function showCars(s) {
    const rows = $("car-rows");
    rows.replaceChildren();
    const byCar = {};
    s.units.forEach((u) => { if (u.vehicle) byCar[u.vehicle] = u; });
    const add = (car, u) => {
      const tr = el("tr");
      const soc = car && car.soc_pct !== null && car.soc_pct !== undefined ? num(car.soc_pct, 1) + " % (" + num(car.soc_kwh, 1) + " kWh)" : "–";
      const sp = u && u.setpoint ? "+" + num(u.setpoint.charge_kw) + " / −" + num(u.setpoint.discharge_kw) + " kW (" + u.setpoint.reason + ")" : "–";
      const step = u && u.plan_step ? "+" + num(u.plan_step.charge_kw) + " / −" + num(u.plan_step.discharge_kw) : "–";
      const where = u ? u.id + (u.reachable ? "" : " (" + t("unreachable") + ")") : t("away");
      const flags = car && car.discharge_allowed === false ? " · " + t("no_discharge") : "";
      [car ? car.vehicle || "–" : "–", where, soc, car && car.target_pct !== null && car.target_pct !== undefined ? num(car.target_pct, 0) + " %" : "–",
        car ? dayHm(car.departure) : "–", u ? kw(u.power_kw) : "–", sp + flags, step,
        u ? age(u.heartbeat_age_s) : "–"].forEach((text) => tr.appendChild(el("td", text)));
      tr.dataset.vehicle = car ? car.vehicle || "" : "";
      rows.appendChild(tr);
    };
    s.vehicles.forEach((v) => add(Object.assign({}, v, byCar[v.vehicle] || {}), byCar[v.vehicle]));
    s.units.filter((u) => !u.vehicle || !s.vehicles.some((v) => v.vehicle === u.vehicle)).forEach((u) => add(u.vehicle ? u : null, u));
  }

  function showOverrides(s) {
    const ul = $("ov-list");
    ul.replaceChildren();
    if (!s.overrides.length) ul.appendChild(el("li", t("none"), "muted"));
    s.overrides.forEach((o) => {
      const li = el("li");
      li.dataset.id = o.id;
      li.dataset.kind = o.kind;
      li.appendChild(el("span", o.text + " — " + o.by + ", " + dayHm(o.created_at)));
      const b = el("button", t("cancel"));
      b.type = "button";
      b.onclick = () => send("DELETE", "/api/overrides/" + encodeURIComponent(o.id) + "?by=" + encodeURIComponent(who()), null);
      li.appendChild(b);
      ul.appendChild(li);
    });
  }

  function prefill(s) {   // the forms start from the daemon's own time (it may be simulated)
    const wall = Date.parse(s.now.slice(0, 19) + "Z");   // the site's wall clock, read as if UTC
    const at = (hours) => new Date(wall + hours * 3600e3).toISOString().slice(0, 16);
    document.querySelectorAll('input[name="until"][required]').forEach((e) => { e.value = at(4); });
    document.querySelectorAll('input[name="depart"]').forEach((e) => { e.value = at(2); });
    prefilled = true;
  }

  async function refresh() {
    try {
      const r = await get("/api/status");
      if (r.ok) show(await r.json());
    } catch (e) { $("alive").textContent = "offline"; $("alive").className = "pill bad"; }
  }

  async function chart() {
    const r = await get("/chart.svg?lang=" + lang);
    if (r.ok) $("chart-svg").innerHTML = await r.text();
  }

  async function events(more) {
    const r = await get(more && nextEvents ? nextEvents : "/api/events?limit=20");
    if (!r.ok) return;
    const body = await r.json();
    const ol = $("ev-list");
    if (!more) ol.replaceChildren();
    body.events.forEach((e) => {
      const li = el("li", dayHm(e.time) + " " + e.kind + ": " + e.message, e.severity);
      ol.appendChild(li);
    });
    nextEvents = body.next;
    $("ev-more").hidden = !nextEvents;
  }

  async function bill() {
    const r = await get("/api/bill");
    if (!r.ok) return;
    const body = await r.json();
    const tb = $("bill-table");
    tb.replaceChildren();
    const b = body.bill;
    if (!b) return;
    const row = (key, value) => { const tr = el("tr"); tr.appendChild(el("th", t(key))); tr.appendChild(el("td", value)); tb.appendChild(tr); };
    const money = (x) => Number(x).toLocaleString(lang === "ja" ? "ja-JP" : "en-US", { maximumFractionDigits: 0 }) + " " + body.currency;
    row("bill_basic", money(b.basic) + (b.contract_kw ? " (" + num(b.contract_kw) + " kW)" : ""));
    row("bill_energy", money(b.energy));
    row("bill_adders", money(b.adders));
    row("bill_import", num(b.import_kwh, 1) + " kWh");
    row("bill_total", money(b.total));
  }

  const who = () => localStorage.getItem("ems-who") || "";

  async function send(method, url, body) {
    const msg = $("ov-msg");
    const r = await fetch(url, { method: method, headers: headers({ "Content-Type": "application/json" }), body: body ? JSON.stringify(body) : undefined });
    const out = await r.json().catch(() => ({}));
    if (r.ok) {
      msg.textContent = t("saved");
      msg.className = "ok";
    } else {
      const ps = (out.problems || []).map((p) => p.field + ": " + p.allowed).join("; ");
      msg.textContent = r.status + " " + (out.error || "") + (ps ? " — " + ps : "");
      msg.className = "bad";
    }
    refresh();
    events(false);
    return r.ok;
  }

  function submit(ev) {
    ev.preventDefault();
    const f = ev.target;
    const body = { kind: f.dataset.kind };
    if (who()) body.by = who();
    new FormData(f).forEach((value, name) => {
      if (value === "") { if (name === "vehicle") body.vehicle = null; return; }
      if (name === "depart" || name === "until") body[name] = value + ":00" + offset();
      else if (name === "vehicle") body.vehicle = value;
      else body[name] = Number(value);
    });
    send("POST", "/api/overrides", body);
  }

  function init() {
    $("token").value = token();
    $("who").value = who();
    $("token").addEventListener("change", (e) => { localStorage.setItem("ems-token", e.target.value.trim()); refreshAll(); });
    $("who").addEventListener("change", (e) => localStorage.setItem("ems-who", e.target.value.trim()));
    document.querySelectorAll("form.override").forEach((f) => f.addEventListener("submit", submit));
    $("ev-more").addEventListener("click", () => events(true));
    $("lang").addEventListener("click", () => {
      lang = lang === "ja" ? "en" : "ja";
      document.cookie = "lang=" + lang + "; path=/; max-age=31536000; samesite=strict";
      const u = new URL(location.href);
      u.searchParams.set("lang", lang);
      history.replaceState(null, "", u);
      relabel();
      chart();
      bill();
    });
  }

  function refreshAll() { refresh(); chart(); events(false); bill(); }

  fetch("/static/i18n.json").then((r) => r.json()).then((j) => { labels = j; relabel(); });
  init();
  refreshAll();
  setInterval(refresh, 1000);
  setInterval(chart, 60000);
  setInterval(() => events(false), 10000);
  setInterval(bill, 60000);
})();
