// The errands dashboard's one script: keeps unfinished tasks live by polling the
// dashboard's own /live (status and progress), for up to 15 minutes after the page
// loaded. On a task's page, a change of status reloads the page.
(() => {
  "use strict";
  const LIVE_MS = 15 * 60 * 1000;
  const EVERY_MS = 2000;

  async function states(ids) {
    const url = new URL(document.body.dataset.liveUrl, window.location.href);
    for (const id of ids) url.searchParams.append("id", id);
    const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!res.ok) throw new Error(`live: ${res.status}`);
    return (await res.json()).tasks;
  }

  function percent(progress) {
    return typeof progress.percent === "number" ? `${Math.round(progress.percent)}%` : "";
  }

  function follow(live, update) {
    const started = Date.now();
    async function tick() {
      const ids = live();
      if (!ids.length) return;
      try {
        update(await states(ids));
      } catch (e) {
        // try again on the next tick
      }
      if (Date.now() - started < LIVE_MS) setTimeout(tick, EVERY_MS);
    }
    setTimeout(tick, EVERY_MS);
  }

  // Times stay in UTC on the page (as in the logs); each <time> gets the reader's
  // local time and how long ago as its tooltip, renewed every 30 seconds.
  const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  const UNITS = [["day", 86400], ["hour", 3600], ["minute", 60]];

  function ago(when, now) {
    const seconds = (when - now) / 1000;
    if (Math.abs(seconds) < 45) return "just now";
    for (const [unit, size] of UNITS) {
      if (Math.abs(seconds) >= size) return RELATIVE.format(Math.round(seconds / size), unit);
    }
    return RELATIVE.format(Math.round(seconds / 60), "minute");
  }

  function hints() {
    const local = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
    });
    const now = Date.now();
    for (const el of document.querySelectorAll("time[datetime]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (!Number.isNaN(when.getTime())) el.title = `${local.format(when)} · ${ago(when, now)}`;
    }
  }

  function start() {
    hints();
    setInterval(hints, 30000);
    // The overview: the rows of unfinished tasks.
    const rows = Array.from(document.querySelectorAll("tr[data-task-id][data-live]"));
    if (rows.length) {
      follow(
        () => rows.filter((row) => row.hasAttribute("data-live")).map((row) => row.dataset.taskId),
        (tasks) => {
          for (const row of rows) {
            const doc = tasks[row.dataset.taskId];
            if (!doc || !row.hasAttribute("data-live")) continue;
            const badge = row.querySelector(".badge[data-status]");
            badge.textContent = doc.status;
            badge.dataset.status = doc.status;
            row.querySelector("[data-progress]").textContent = percent(doc.progress);
            if (doc.done) row.removeAttribute("data-live");
          }
        },
      );
    }
    // A task's page.
    const badge = document.querySelector("#task-status[data-live]");
    if (badge) {
      follow(
        () => [badge.dataset.taskId],
        (tasks) => {
          const doc = tasks[badge.dataset.taskId];
          if (!doc) return;
          if (doc.status !== badge.textContent.trim()) {
            window.location.reload();
            return;
          }
          const p = doc.progress;
          if (p.current !== null) {
            let text = String(p.current);
            if (p.total !== null) text += ` / ${p.total}`;
            if (p.percent !== null) text += ` (${percent(p)})`;
            if (p.message) text += ` · ${p.message}`;
            document.getElementById("progress").textContent = text;
          }
        },
      );
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
