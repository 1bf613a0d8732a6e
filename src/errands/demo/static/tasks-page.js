// "My tasks": keep the status column live from the API's stream of the user's changes,
// and on the newest page, offer to show tasks created since the page was loaded. A
// change of a filter applies it at once (the Filter button does the same, and is what
// pages without JavaScript use).
const table = document.getElementById("my-tasks");
const fresh = document.getElementById("new-tasks");
const filters = document.getElementById("task-filters");
const query = new URLSearchParams(window.location.search);
const newest = !query.get("cursor");
const wanted = query.get("status") || "";
// The kind shown (its task name, and whether it is a group), from the filter's option.
const kind = (() => {
  const option = filters && filters.querySelector("select[name=kind] option:checked");
  return option && option.value ? option.dataset : null;
})();

if (filters) {
  // The form's own GET, without the filters left at "all" (a shorter link to keep).
  const selects = Array.from(filters.querySelectorAll("select"));
  const apply = () => {
    const params = new URLSearchParams();
    for (const select of selects) if (select.value) params.set(select.name, select.value);
    const search = params.toString();
    window.location.assign(search ? `/tasks?${search}` : "/tasks");
  };
  for (const select of selects) select.addEventListener("change", apply);
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
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
  if (kind && task.name !== kind.name) return;
  if (kind && kind.group && (kind.group === "yes") !== Boolean(task.group)) return;
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
