// durable ui: the actions' forms (send a message, start, fork) and the bulk
// buttons of the runs page. Every listener is on `document` (event
// delegation), so parts of a page swapped live keep working. Writes POST JSON
// with the header the server requires of a write; what the server answers
// (an error, "sent", how many runs were done) is said next to the form.
"use strict";

const WRITE = { "X-Durable-UI": "1" };
const BULK_SAID = "durable-ui-bulk-said";

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-post]");
  if (!form) return;
  event.preventDefault();
  post(form);
});

document.addEventListener("click", (event) => {
  const opener = event.target.closest("button[data-fork]");
  if (opener) openFork(opener);
  const closer = event.target.closest("dialog button[data-close]");
  if (closer) closer.closest("dialog").close();
  const bulk = event.target.closest("button[data-bulk]");
  if (bulk) bulkAct(bulk);
});

document.addEventListener("DOMContentLoaded", () => {
  // A bulk action's outcome, said after the reload that shows it done.
  const said = sessionStorage.getItem(BULK_SAID);
  const output = document.getElementById("bulk-said");
  if (said && output) {
    sessionStorage.removeItem(BULK_SAID);
    tell(output, said, false);
  }
});

// The form's fields as a JSON object of strings; a field marked
// data-only-if-edited is left out while it holds what the page gave it.
function fields(form) {
  const body = {};
  for (const element of form.elements) {
    if (!element.name || element.disabled) continue;
    if ("onlyIfEdited" in element.dataset && element.value === element.defaultValue) continue;
    body[element.name] = element.value;
  }
  return body;
}

async function post(form) {
  const output = form.querySelector("output.said");
  const button = form.querySelector('button[type="submit"]');
  if (button) button.disabled = true;
  tell(output, "…", false);
  try {
    const answer = await request(form.dataset.post, "POST", fields(form));
    if (answer.url) {
      window.location.assign(answer.url);
      return;
    }
    tell(output, answer.message || "done", false);
  } catch (error) {
    tell(output, error.message, true);
  }
  if (button) button.disabled = false;
}

// The JSON the server answers; an Error with its message when it refuses.
async function request(url, method, body) {
  const init = { method, credentials: "same-origin", headers: { ...WRITE } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let answer = null;
  try {
    answer = JSON.parse(text);
  } catch {
    // not JSON: the guard's plain text
  }
  if (!response.ok || !answer || answer.ok === false) {
    throw new Error((answer && answer.error) || text || `${response.status} ${response.statusText}`);
  }
  return answer;
}

function openFork(opener) {
  const dialog = document.getElementById("fork-dialog");
  if (!dialog) return;
  const form = dialog.querySelector("form");
  const step = opener.dataset.step;
  const what = dialog.querySelector("#fork-what");
  form.elements.from_step.value = step === undefined ? "" : step;
  what.textContent =
    step === undefined
      ? what.dataset.whole
      : `From step "${step}": keeps the steps and children completed before it, runs it and the rest again.`;
  tell(form.querySelector("output.said"), "", false);
  dialog.showModal();
}

async function bulkAct(button) {
  const output = document.getElementById("bulk-said");
  const action = button.dataset.bulk;
  button.disabled = true;
  try {
    const preview = await request(`/api/bulk/${action}/preview${window.location.search}`, "GET");
    if (preview.count === 0) {
      tell(output, preview.message, false);
    } else if (window.confirm(preview.question)) {
      const done = await request(preview.act, "POST");
      sessionStorage.setItem(BULK_SAID, done.message);
      window.location.reload();
      return;
    }
  } catch (error) {
    tell(output, error.message, true);
  }
  button.disabled = false;
}

function tell(output, message, problem) {
  if (!output) return;
  output.textContent = message;
  output.classList.toggle("problem", problem);
}
