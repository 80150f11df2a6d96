// durable ui: the filters' empty fields are left out of the URL, so a
// shared view's URL holds only the filters that are set; the action buttons
// (absent in read-only mode) POST with the header the server requires of a
// write, then reload the page.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("filters");
  if (form) {
    form.addEventListener("submit", () => {
      for (const input of form.querySelectorAll("input")) {
        if (input.value === "" || (input.name === "limit" && input.value === "50")) input.disabled = true;
      }
    });
  }
});

// Delegated, so that buttons in regions that live.js replaces keep working.
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-action]") : null;
  if (button && !button.disabled) act(button);
});

async function act(button) {
  const question = button.dataset.confirm;
  if (question && !window.confirm(question)) return;
  const said = document.getElementById("action-error");
  button.disabled = true;
  try {
    const response = await fetch(button.dataset.action, {
      method: "POST",
      headers: { "X-Durable-UI": "1" },
      credentials: "same-origin",
    });
    if (response.ok) {
      window.location.reload();
      return;
    }
    const text = await response.text();
    let message = text || `${response.status} ${response.statusText}`;
    try {
      message = JSON.parse(text).error || message;
    } catch {
      // not JSON: the guard's plain text
    }
    show(said, message);
  } catch (error) {
    show(said, String(error));
  }
  button.disabled = false;
}

function show(element, message) {
  if (!element) return;
  element.textContent = message;
  element.hidden = false;
}
