// A button with data-copy="ID" copies the text of the element with that id: through
// the Clipboard API where the browser offers it (a secure context, with permission),
// else by selecting the text and asking the browser to copy the selection; when both
// fail, the text stays selected for the person to copy.
function select(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copy(element) {
  const text = element.textContent.trim();
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // refused (no permission, the page not focused): fall back to the selection
    }
  }
  select(element);
  try {
    return document.execCommand("copy");
  } catch {
    return false;
  }
}

for (const button of document.querySelectorAll("button[data-copy]")) {
  const target = document.getElementById(button.dataset.copy);
  if (!target) continue;
  const status = button.parentElement.querySelector("[role=status]");
  button.hidden = false;
  button.addEventListener("click", async () => {
    const copied = await copy(target);
    if (!copied) select(target);
    if (status) status.textContent = copied ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.";
  });
}
