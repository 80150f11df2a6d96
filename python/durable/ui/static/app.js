// durable ui: the filters' empty fields are left out of the URL, so a
// shared view's URL holds only the filters that are set.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("filters");
  if (!form) return;
  form.addEventListener("submit", () => {
    for (const input of form.querySelectorAll("input")) {
      if (input.value === "" || (input.name === "limit" && input.value === "50")) input.disabled = true;
    }
  });
});
