// "Repeat this search": a fresh form gets the browser's time zone and the current local
// time of day (without this script it says UTC and the server's clock). A form shown
// again with a message keeps what was submitted.
const form = document.getElementById("repeat");

if (form && form.dataset.fill === "browser") {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone) form.elements.timezone.value = zone;
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  form.elements.at.value = `${pad(now.getHours())}:${pad(now.getMinutes())}`;
}
