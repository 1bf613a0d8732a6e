// "My tasks": keep the status column live from the API's stream of the user's changes.
const table = document.getElementById("my-tasks");
if (table && "EventSource" in window) {
  const source = new EventSource("/api/events");
  source.addEventListener("task", (event) => {
    const task = JSON.parse(event.data);
    const row = table.querySelector(`tr[data-task-id="${task.id}"]`);
    if (!row) return;
    const badge = row.querySelector(".badge");
    if (badge) {
      badge.textContent = task.status;
      badge.dataset.status = task.status;
    }
    const percent = row.children[2];
    if (percent && task.progress.percent !== null) {
      percent.textContent = `${Math.round(task.progress.percent)}%`;
    }
  });
  window.addEventListener("pagehide", () => source.close());
}
