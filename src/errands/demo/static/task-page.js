// The task page: hits arrive through the <errands-task> element's `errands:output`
// events; when the task finishes, the page reloads once to show what comes next
// (the export button, the download link), all of which is rendered on the server.
const task = document.getElementById("task");
const hits = document.getElementById("hits");
const count = document.getElementById("hit-count");

if (task && hits) {
  let last = Number(hits.dataset.lastSeq || 0);
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
    if (count) count.textContent = String(hits.children.length);
  });
}

if (task && !task.dataset.initiallyDone) {
  task.addEventListener("errands:done", () => {
    setTimeout(() => window.location.reload(), 300);
  });
}
