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

// A bundle upload: the file is the request body, the session's CSRF token a header.
document.addEventListener("DOMContentLoaded", () => {
  const install = document.getElementById("install");
  if (!install) return;
  install.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = install.querySelector("input[type=file]").files[0];
    const result = document.getElementById("install-result");
    if (!file) return;
    fetch(install.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": install.dataset.csrf, "Content-Type": "application/octet-stream" },
      body: file,
    })
      .then((answer) => answer.text())
      .then((html) => { result.innerHTML = html; })
      .catch((err) => { result.textContent = String(err); });
  });
});
