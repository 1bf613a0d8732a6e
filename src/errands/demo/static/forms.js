// Behaviours of the site's forms, for every page (the CSP allows no inline handler):
// a field marked data-submit-on-change submits its form when it changes (the filters
// of "My tasks"; a <noscript> button does it without JavaScript).
for (const field of document.querySelectorAll("[data-submit-on-change]")) {
  field.addEventListener("change", () => field.form && field.form.requestSubmit());
}
