// Times in the reader's own time zone. The server knows only UTC: it renders
// <time datetime="ISO" data-local>2026-06-01 08:00:00 UTC</time>, and this script
// rewrites each to the browser's local time with a relative phrase
// ("2026-06-01 17:00:00 GMT+9 · 2 minutes ago"), the UTC text kept as its tooltip.
// Administrators' pages keep UTC on the page (<time … data-hint>): there the local
// time and the phrase are the tooltip. The phrases are renewed every 30 seconds.
// Without JavaScript the UTC text stays.
const EVERY_MS = 30 * 1000;
const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const UNITS = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["week", 7 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
];

function ago(when, now) {
  const seconds = (when - now) / 1000;
  if (Math.abs(seconds) < 45) return "just now";
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return relative.format(Math.round(seconds / 60), "minute");
}

const pad = (n) => String(n).padStart(2, "0");

function local(date) {
  const zone = new Intl.DateTimeFormat("en", { timeZoneName: "short" })
    .formatToParts(date)
    .find((part) => part.type === "timeZoneName");
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return `${day} ${time}${zone ? ` ${zone.value}` : ""}`;
}

function render() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[datetime][data-local], time[datetime][data-hint]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    if (el.dataset.utc === undefined) el.dataset.utc = el.textContent.trim();
    const at = local(when);
    const phrase = ago(when, now);
    if (el.hasAttribute("data-local")) {
      // Two pieces that each stay on one line; a narrow column breaks between them.
      const time = document.createElement("span");
      time.className = "at";
      time.textContent = at;
      const since = document.createElement("span");
      since.className = "ago";
      since.textContent = `· ${phrase}`;
      el.replaceChildren(time, " ", since);
      el.title = el.dataset.utc;
    } else {
      el.title = `${at} · ${phrase}`;
    }
  }
}

render();
setInterval(render, EVERY_MS);
