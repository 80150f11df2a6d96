// The JSON viewer's copy buttons: each holds its value's exact JSON text
// (data-copy). Clicks are taken on the document (event delegation), so
// buttons in page regions swapped in by a live update work too.
(function () {
  "use strict";

  function fallbackCopy(text) {
    // navigator.clipboard needs a secure context (https or localhost);
    // elsewhere (a token-guarded LAN address) a selected textarea does it.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "json-copy-buffer";
    document.body.appendChild(area);
    area.select();
    let done = false;
    try {
      done = document.execCommand("copy");
    } finally {
      area.remove();
    }
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  document.addEventListener("click", function (event) {
    const button = event.target instanceof Element ? event.target.closest("button.json-copy") : null;
    if (!button) {
      return;
    }
    copy(button.getAttribute("data-copy") || "").then(
      function () {
        button.classList.add("copied");
        button.textContent = "Copied";
      },
      function () {
        button.textContent = "Copy failed: select the text instead";
      }
    );
  });
})();
