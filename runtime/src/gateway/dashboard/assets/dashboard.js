// PiCloud dashboard: progressive enhancement only. Every page works without
// this file; live views (log tails over EventSource) hook in here.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Forms marked data-confirm ask once more before they post (the server
  // asks too, with its own confirmation page, when JavaScript is off).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
