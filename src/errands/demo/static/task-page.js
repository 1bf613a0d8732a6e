// The task page: hits arrive through the <errands-task> element's `errands:output`
// events; a new attempt of the task (`errands:attempt`, e.g. a retry) drops the hits of
// the earlier one. When the task finishes, the page reloads once to show what comes
// next (the export button, the download link), all of which is rendered on the server.
const task = document.getElementById("task");
const hits = document.getElementById("hits");
const count = document.getElementById("hit-count");

if (task && hits) {
  let last = Number(hits.dataset.lastSeq || 0);
  const counted = () => {
    if (count) count.textContent = String(hits.children.length);
  };
  task.addEventListener("errands:output", (event) => {
    const { seq, data } = event.detail;
    if (seq <= last) return;
    last = seq;
    const li = document.createElement("li");
    li.dataset.seq = String(seq);
    const where = document.createElement("code");
    where.textContent = `${data.path}:${data.line}`;
    li.append(where, " ", data.text);
    hits.append(li);
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

if (task && !task.dataset.initiallyDone) {
  task.addEventListener("errands:done", () => {
    setTimeout(() => window.location.reload(), 300);
  });
}
