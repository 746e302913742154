// Live updates: every element with data-refresh is replaced by the server's fresh rendering of
// it every few seconds (escaped HTML made by the console), unless the operator is typing in it.
"use strict";
const REFRESH_MS = 5000;
function refresh(region) {
  if (region.contains(document.activeElement)) return;
  fetch(region.dataset.refresh, { credentials: "same-origin" })
    .then((answer) => (answer.ok ? answer.text() : null))
    .then((html) => { if (html !== null && !region.contains(document.activeElement)) region.innerHTML = html; })
    .catch(() => {});
}
document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[data-refresh]")) {
    setInterval(() => refresh(region), REFRESH_MS);
  }
});
