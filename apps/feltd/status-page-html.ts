// The status page document (apps/feltd/status-page.ts serves it): static HTML with an inline style and script,
// nothing from elsewhere. The script fills the page from the /events stream (or polls /status.json where
// EventSource is missing) and writes every value with textContent: lease data is untrusted text.

export const STATUS_CSS = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5b6475; --bg: #f7f8fa; --card: #fff; --line: #dde1e8; --ok: #1a7f37; --warn: #b35900; --self: #eef5ff; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8ee; --muted: #9aa3b5; --bg: #14171d; --card: #1c2028; --line: #2e3440; --ok: #3fb950; --warn: #f0883e; --self: #1d2a3d; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap; padding: 1rem 1.5rem; border-bottom: 1px solid var(--line); background: var(--card); }
h1 { font-size: 1.2rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 .6rem; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 1rem; padding: 1rem 1.5rem; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; overflow-x: auto; }
section.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .6rem .25rem 0; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; }
tr.self td { background: var(--self); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; }
.mono, td.mono, dd.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 13px; }
.muted { color: var(--muted); }
#live { font-weight: 600; }
#live.live { color: var(--ok); }
#live.down { color: var(--warn); }
ol#events { list-style: none; margin: 0; padding: 0; }
ol#events li { padding: .2rem 0; border-bottom: 1px solid var(--line); }
ol#events .type { font-weight: 600; margin: 0 .5rem; }
`;

export const STATUS_JS = `
"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function ms(s) { return s === null || s === undefined ? "-" : (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms"; }
  function ago(iso, now) {
    var t = Date.parse(iso);
    if (!isFinite(t)) return "";
    var d = Math.round((t - now) / 1000), a = Math.abs(d), u;
    if (a < 90) u = a + " s"; else if (a < 5400) u = Math.round(a / 60) + " min"; else if (a < 172800) u = Math.round(a / 3600) + " h"; else u = Math.round(a / 86400) + " d";
    return d >= 0 ? "in " + u : u + " ago";
  }
  function when(iso, now) { return iso ? iso.replace("T", " ").replace(/\\.\\d+Z$/, "Z") + " (" + ago(iso, now) + ")" : "-"; }
  function dd(id, text) { var e = $(id); e.textContent = text === null || text === undefined || text === "" ? "-" : String(text); }

  function render(s) {
    var now = Date.parse(s.generatedAt) || Date.now();
    var n = s.node;
    $("title").textContent = "feltd on " + n.publicIP;
    document.title = "feltd " + n.publicIP;
    dd("n-ip", n.publicIP); dd("n-subnet", [n.subnet, n.ipv6Subnet].filter(Boolean).join(" + "));
    dd("n-backend", n.backendType); dd("n-vtep", n.vtepMac); dd("n-network", s.network);
    dd("n-expiry", n.leaseExpiration ? when(n.leaseExpiration, now) : "no lease");
    dd("n-since", n.leasedSince ? when(n.leasedSince, now) : "-");
    dd("n-ready", n.ready ? "yes (subnet.env written)" : "not yet");

    var body = $("nodes-body"); clear(body);
    s.nodes.forEach(function (x) {
      var tr = el("tr"); tr.setAttribute("data-key", x.key); if (x.self) tr.className = "self";
      tr.appendChild(el("td", [x.subnet, x.ipv6Subnet].filter(Boolean).join(" + ") || x.key, "mono subnet"));
      tr.appendChild(el("td", x.publicIP || "-", "mono public-ip"));
      tr.appendChild(el("td", x.vtepMac || "-", "mono vtep-mac"));
      tr.appendChild(el("td", x.backendType || "-", "backend"));
      tr.appendChild(el("td", x.changed ? when(x.changed, now) : "-", "changed"));
      tr.appendChild(el("td", x.expiration ? ago(x.expiration, now) : "-", "expires"));
      tr.appendChild(el("td", x.self ? "this node" : "", "muted"));
      body.appendChild(tr);
    });
    $("nodes-count").textContent = String(s.nodes.length);

    var rb = $("reconcile-body"); clear(rb);
    ["full", "delta"].forEach(function (k) {
      var p = s.reconcile[k], tr = el("tr");
      tr.appendChild(el("td", k));
      tr.appendChild(el("td", p.count, "num"));
      tr.appendChild(el("td", ms(p.last), "num"));
      tr.appendChild(el("td", ms(p.p50), "num"));
      tr.appendChild(el("td", ms(p.p99), "num"));
      rb.appendChild(tr);
    });

    var ob = $("ops-body"); clear(ob);
    var kinds = Object.keys(s.opsApplied).concat(Object.keys(s.driftRepaired)).filter(function (k, i, a) { return a.indexOf(k) === i; }).sort();
    kinds.forEach(function (k) {
      var tr = el("tr");
      tr.appendChild(el("td", k));
      tr.appendChild(el("td", s.opsApplied[k] || 0, "num"));
      tr.appendChild(el("td", s.driftRepaired[k] || 0, "num"));
      ob.appendChild(tr);
    });
    var errs = Object.keys(s.storeErrors).map(function (k) { return k + " " + s.storeErrors[k]; }).join(", ");
    dd("store-errors", errs || "0");

    var c = s.cni;
    dd("cni-socket", c ? c.socket : "not serving (the plugins run in-process)");
    dd("cni-rate", c ? c.perMinute + " / min" : "-");
    dd("cni-attachments", c && c.attachments.length ? c.attachments.map(function (a) { return a.network + " " + a.count; }).join(", ") : "-");

    var ev = $("events"); clear(ev);
    if (!s.events.length) ev.appendChild(el("li", "no lease events yet", "muted"));
    s.events.forEach(function (e) {
      var li = el("li");
      li.appendChild(el("span", when(e.time, now), "muted mono"));
      li.appendChild(el("span", e.type, "type"));
      li.appendChild(el("span", e.summary, "mono"));
      ev.appendChild(li);
    });
    $("updated").textContent = s.generatedAt;
  }

  function live(state, text) { var e = $("live"); e.className = state; e.textContent = text; }
  function poll() {
    live("live", "polling");
    var go = function () {
      fetch("/status.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (s) { render(s); live("live", "polling"); }, function () { live("down", "unreachable, retrying"); });
    };
    go(); setInterval(go, 2000);
  }
  if (typeof EventSource !== "function") return poll();
  var es = new EventSource("/events");
  es.addEventListener("status", function (m) { render(JSON.parse(m.data)); live("live", "live"); });
  es.onerror = function () { live("down", "reconnecting"); };
})();
`;

export const statusHtml = (): string => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>feltd</title>
<style>${STATUS_CSS}</style>
</head>
<body>
<header><h1 id="title">feltd</h1><span id="live" class="down">connecting</span><span class="muted">read-only; updated <span id="updated" class="mono">-</span></span></header>
<main>
<section id="this-node"><h2>This node</h2>
<dl>
<dt>Public IP</dt><dd id="n-ip" class="mono">-</dd>
<dt>Subnet</dt><dd id="n-subnet" class="mono">-</dd>
<dt>Network</dt><dd id="n-network" class="mono">-</dd>
<dt>Backend</dt><dd id="n-backend">-</dd>
<dt>VtepMAC</dt><dd id="n-vtep" class="mono">-</dd>
<dt>Lease expires</dt><dd id="n-expiry">-</dd>
<dt>Leased since</dt><dd id="n-since">-</dd>
<dt>Ready</dt><dd id="n-ready">-</dd>
</dl>
</section>
<section id="reconcile"><h2>Reconcile passes</h2>
<table><thead><tr><th>kind</th><th class="num">passes</th><th class="num">last</th><th class="num">p50</th><th class="num">p99</th></tr></thead><tbody id="reconcile-body"></tbody></table>
</section>
<section id="ops"><h2>Kernel ops</h2>
<table><thead><tr><th>kind</th><th class="num">applied</th><th class="num">drift repaired</th></tr></thead><tbody id="ops-body"></tbody></table>
<dl><dt>Store errors</dt><dd id="store-errors">-</dd></dl>
</section>
<section id="cni"><h2>CNI</h2>
<dl>
<dt>Socket</dt><dd id="cni-socket" class="mono">-</dd>
<dt>Requests</dt><dd id="cni-rate">-</dd>
<dt>Attachments</dt><dd id="cni-attachments" class="mono">-</dd>
</dl>
</section>
<section id="nodes" class="wide"><h2>Nodes (<span id="nodes-count">0</span>)</h2>
<table><thead><tr><th>subnet</th><th>public IP</th><th>VtepMAC</th><th>backend</th><th>last change</th><th>lease expires</th><th></th></tr></thead><tbody id="nodes-body"></tbody></table>
</section>
<section id="lease-events" class="wide"><h2>Last lease events</h2><ol id="events"></ol></section>
</main>
<script>${STATUS_JS}</script>
</body>
</html>
`;
