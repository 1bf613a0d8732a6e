// The task page of a count: the <errands-task> element shows status, progress and the
// result; this lists what the task emits (each file's most common word) as its
// `errands:output` events arrive, and the ten most common words once it is done.
const task = document.getElementById("task");
const words = document.getElementById("words");
const count = document.getElementById("word-count");

function item(...parts) {
  const li = document.createElement("li");
  li.append(...parts);
  return li;
}

function code(text) {
  const node = document.createElement("code");
  node.textContent = text;
  return node;
}

if (task && words) {
  task.addEventListener("errands:output", (event) => {
    const { file, word, times } = event.detail.data;
    words.append(item(code(file), ` ${word} ×${times}`));
    count.textContent = String(words.children.length);
  });
  // A new attempt (a retry): what was listed is no longer the task's output.
  task.addEventListener("errands:attempt", () => {
    words.replaceChildren();
    count.textContent = "0";
  });
  task.addEventListener("errands:done", (event) => {
    const { status, result } = event.detail;
    if (status !== "succeeded" || !result) return;
    const top = document.getElementById("top-words");
    top.replaceChildren(...result.top.map(([word, times]) => item(code(word), ` ×${times}`)));
    document.getElementById("top").hidden = false;
  });
}
