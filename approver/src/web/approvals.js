// The approvers' page, progressively enhanced: every view works without
// this script. With it, countdowns tick, and the pending list follows the
// approval service (new requests appear, decided ones go) without a reload.
// It only ever moves server-rendered, server-escaped HTML into the page; it
// never builds markup from data.
"use strict";

(function () {
  const POLL_MS = 3000;
  const body = document.body;
  // The server's clock decides deadlines; correct for the browser's.
  const skew = Number(body.dataset.serverNow || Date.now()) - Date.now();

  function human(ms) {
    if (ms <= 0) return "expired";
    const s = Math.floor(ms / 1000);
    const pad = (n) => String(n).padStart(2, "0");
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
  }

  function tick() {
    const now = Date.now() + skew;
    for (const el of document.querySelectorAll("time.countdown[data-deadline]")) {
      el.textContent = human(Number(el.dataset.deadline) - now);
    }
  }

  tick();
  setInterval(tick, 1000);

  const view = document.getElementById("view");
  if (!view || view.dataset.view !== "pending") return;

  function shownIds() {
    return Array.from(view.querySelectorAll("article.request"), (a) => a.id).sort().join(" ");
  }

  // A half-typed deny reason is not thrown away by a refresh.
  function typing() {
    const el = document.activeElement;
    return el && el.tagName === "INPUT" && el.value !== "" && view.contains(el);
  }

  function announce() {
    const status = document.getElementById("status");
    const n = view.querySelectorAll("article.request").length;
    if (status) status.textContent = n === 1 ? "1 pending request" : n + " pending requests";
  }

  async function refresh() {
    const response = await fetch("/", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return;
    const fresh = new DOMParser()
      .parseFromString(await response.text(), "text/html")
      .getElementById("view");
    if (!fresh) return;
    view.replaceChildren(...Array.from(fresh.childNodes, (n) => document.importNode(n, true)));
    announce();
    tick();
  }

  async function poll() {
    try {
      const response = await fetch("/v1/approvals?status=pending", {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const listed = (await response.json()).approvals.map((a) => a.id).sort().join(" ");
        if (listed !== shownIds() && !typing()) await refresh();
      }
    } catch (e) {
      // The service is briefly unreachable: the next poll tries again.
    }
    setTimeout(poll, POLL_MS);
  }

  setTimeout(poll, POLL_MS);
})();
