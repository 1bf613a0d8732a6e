// The task page's "Waiting: you already have N searches running" note (waiting.py).
// The server renders it as the page loads; while the task is queued (a search in
// several folders: until it is done) this script asks again every few seconds
// (GET /tasks/{id}/waiting), and at once when the <errands-task> element reports a new
// status, so the note comes when the user's other tasks take their share of the workers
// and goes as soon as the task starts. The element's status is the one trusted.
const note = document.getElementById("waiting");
const task = document.getElementById("task");
const EVERY_MS = 2000;

if (note && task && note.dataset.src) {
  const group = note.dataset.group === "yes";
  let status = task.querySelector(".et-status")?.dataset.status ?? "queued";
  let timer = 0;
  let asking = false;
  let again = false; // the status changed while a request was on its way

  const show = (text) => {
    note.textContent = text || "";
    note.hidden = !text;
  };
  const FINISHED = ["succeeded", "failed", "cancelled"];
  const watching = () => (group ? !FINISHED.includes(status) : status === "queued");

  const ask = async () => {
    clearTimeout(timer);
    timer = 0;
    if (!watching()) {
      show("");
      return;
    }
    if (asking) {
      again = true;
      return;
    }
    asking = true;
    try {
      const response = await fetch(note.dataset.src, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const doc = await response.json();
        show(watching() ? doc.waiting : "");
      }
    } catch {
      // Offline for a moment: keep the note as it is and ask again later.
    } finally {
      asking = false;
    }
    if (again) {
      again = false;
      ask();
    } else if (watching()) {
      timer = setTimeout(ask, EVERY_MS);
    }
  };

  task.addEventListener("errands:update", (event) => {
    const next = event.detail && event.detail.status;
    if (typeof next !== "string" || next === status) return;
    status = next;
    if (!group && status !== "queued") show(""); // started (or ended): no longer waiting
    ask();
  });
  window.addEventListener("pagehide", () => clearTimeout(timer));
  if (watching()) timer = setTimeout(ask, EVERY_MS);
}
