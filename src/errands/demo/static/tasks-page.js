// "My tasks": keep the status column live from the API's stream of the user's changes,
// and on the newest page, offer to show tasks created since the page was loaded. A
// change of a filter applies it at once (the Filter button is for pages without
// JavaScript).
const table = document.getElementById("my-tasks");
const fresh = document.getElementById("new-tasks");
const filters = document.getElementById("task-filters");
const query = new URLSearchParams(window.location.search);
const newest = !query.get("cursor");
const wanted = query.get("status") || "";
const kind = query.get("kind") || "";

if (filters) {
  for (const select of filters.querySelectorAll("select")) {
    select.addEventListener("change", () => filters.requestSubmit());
  }
}
const since = (() => {
  const first = table && table.querySelector("tbody time[datetime]");
  return first ? Date.parse(first.getAttribute("datetime")) : -Infinity;
})();
const arrived = new Set();

function update(row, task) {
  const badge = row.querySelector(".badge");
  if (badge) {
    badge.textContent = task.status;
    badge.dataset.status = task.status;
  }
  const percent = row.children[2];
  if (percent && task.progress.percent !== null) {
    percent.textContent = `${Math.round(task.progress.percent)}%`;
  }
}

function announce(task) {
  if (!fresh || !newest || arrived.has(task.id)) return;
  if (wanted && task.status !== wanted) return;
  if (kind && task.name !== kind) return;
  if (!(Date.parse(task.created_at) > since)) return; // an older task, not on this page
  arrived.add(task.id);
  const link = fresh.querySelector("a");
  link.textContent = arrived.size === 1 ? "1 new task: show it" : `${arrived.size} new tasks: show them`;
  fresh.hidden = false;
}

if ((table || fresh) && "EventSource" in window) {
  const source = new EventSource("/api/events");
  source.addEventListener("task", (event) => {
    const task = JSON.parse(event.data);
    const row = table && table.querySelector(`tr[data-task-id="${task.id}"]`);
    if (row) update(row, task);
    else announce(task);
  });
  window.addEventListener("pagehide", () => source.close());
}
