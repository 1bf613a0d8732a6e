// The task page: hits arrive through the <errands-task> element's `errands:output`
// events; a new attempt of the task (`errands:attempt`, e.g. a retry) drops the hits of
// the earlier one. When the task finishes, the page shows its outcome at once (see
// showOutcome), then reloads once to show what comes next (the export button, the
// repeat form), all of which is rendered on the server.
//
// A search in several folders is a group: its output is every part's hits, each as
// {part, task_id, item}, shown with the part's folder (the list's data-folders). Its
// table of parts follows their changes on the user's event stream (/api/events).
const task = document.getElementById("task");
const hits = document.getElementById("hits");
const count = document.getElementById("hit-count");
const parts = document.getElementById("parts");
const folders = (() => {
  try {
    return hits && hits.dataset.folders ? JSON.parse(hits.dataset.folders) : null;
  } catch {
    return null;
  }
})();

function hitItem(seq, data) {
  const li = document.createElement("li");
  li.dataset.seq = String(seq);
  const where = document.createElement("code");
  if (folders && data && typeof data.part === "number") {
    const hit = data.item || {};
    li.dataset.part = String(data.part);
    const folder = document.createElement("span");
    folder.className = "folder";
    folder.textContent = folders[data.part] ?? "";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = hit.text ?? "";
    where.textContent = `${hit.path}:${hit.line}`;
    li.append(folder, where, " ", text);
    return li;
  }
  where.textContent = `${data.path}:${data.line}`;
  li.append(where, " ", data.text);
  return li;
}

if (task && hits) {
  let last = Number(hits.dataset.lastSeq || 0);
  // The hits listed, until the task's outcome gives the search's own count (a page
  // that loads finished lists its first hits, then its element brings the rest).
  const counted = () => {
    const outcome = document.getElementById("outcome");
    const final = outcome ? outcome.dataset.hitCount : "";
    if (count) count.textContent = final || String(hits.children.length);
    const note = document.getElementById("hits-shown"); // "the first 500 are listed"
    if (note) note.hidden = hits.children.length >= Number(note.dataset.total);
  };
  task.addEventListener("errands:output", (event) => {
    const { seq, data } = event.detail;
    if (seq <= last) return;
    last = seq;
    hits.append(hitItem(seq, data));
    counted();
  });
  task.addEventListener("errands:attempt", (event) => {
    hits.replaceChildren();
    last = event.detail.output_floor;
    counted();
  });
  // Hits the server rendered before a new attempt began (the element, new on the page,
  // is not told of it): the task's resource says which hits are no longer its output.
  task.addEventListener("errands:update", (event) => {
    const floor = event.detail.output_floor;
    if (typeof floor !== "number" || floor <= 0) return;
    let dropped = false;
    for (const li of Array.from(hits.children)) {
      if (Number(li.dataset.seq) <= floor) {
        li.remove();
        dropped = true;
      }
    }
    if (last < floor) last = floor;
    if (dropped) counted();
  });
}

// A finished task: its last progress message (which names the last file read) gives
// way to the outcome the server words (_outcome.html, also at /tasks/{id}/outcome): the
// final line, the result's summary, the JSON under "as JSON"; and a search's hit count
// becomes its result's ("5,000+" when it stopped at the limit).
function showOutcome(outcome) {
  const here = document.getElementById("outcome");
  if (here && outcome) here.replaceWith(outcome);
  if (!outcome || !count) return;
  if (outcome.dataset.hitCount) count.textContent = outcome.dataset.hitCount;
  const limit = document.getElementById("hit-limit");
  if (limit) limit.hidden = outcome.dataset.hitLimit !== "yes";
}

async function fetchOutcome(id) {
  try {
    const response = await fetch(`/tasks/${encodeURIComponent(id)}/outcome`, {
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok) return null;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    return doc.getElementById("outcome");
  } catch {
    return null;
  }
}

if (task) {
  task.addEventListener("errands:update", (event) => {
    if (!event.detail || !event.detail.done) return;
    const message = task.querySelector(".et-message");
    if (message) message.hidden = true;
  });
}

if (task && !task.dataset.initiallyDone) {
  task.addEventListener("errands:done", async () => {
    showOutcome(await fetchOutcome(task.getAttribute("task-id")));
    // Then what comes next (the export button, the repeat form), rendered on the server.
    setTimeout(() => window.location.reload(), 300);
  });
}

// The parts' rows follow their tasks until every one has ended (after a cancelled
// group, its running parts take a moment to stop).
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const partsRunning = () =>
  Array.from(parts.querySelectorAll(".badge")).some((b) => !FINISHED.has(b.dataset.status));

if (parts && partsRunning() && "EventSource" in window) {
  const source = new EventSource("/api/events");
  source.addEventListener("task", (event) => {
    let doc;
    try {
      doc = JSON.parse(event.data);
    } catch {
      return;
    }
    const row = parts.querySelector(`tr[data-task-id="${doc.id}"]`);
    if (!row) return;
    const badge = row.querySelector(".badge");
    if (badge) {
      badge.textContent = doc.status;
      badge.dataset.status = doc.status;
    }
    const percent = row.children[2];
    if (percent && doc.progress && typeof doc.progress.percent === "number") {
      percent.textContent = `${Math.round(doc.progress.percent)}%`;
    }
    if (doc.status === "succeeded" && doc.result && typeof doc.result === "object") {
      const files = row.querySelector(".files-count");
      const found = row.querySelector(".hits-count");
      if (files && typeof doc.result.files === "number") files.textContent = String(doc.result.files);
      if (found && typeof doc.result.hits === "number") found.textContent = String(doc.result.hits);
    }
    if (!partsRunning()) source.close();
  });
  window.addEventListener("pagehide", () => source.close());
}
