// durable ui: the colour theme. Loaded in <head> without defer, so that
// <html data-theme> is set before the first paint (no flash of the other
// theme). "auto" (no data-theme) follows the system's prefers-color-scheme;
// the choice is kept in localStorage. The header's button cycles it.
"use strict";
(() => {
  const KEY = "durable-theme";
  const CHOICES = ["auto", "light", "dark"];

  function saved() {
    try {
      const value = window.localStorage.getItem(KEY);
      return CHOICES.includes(value) ? value : "auto";
    } catch {
      return "auto"; // storage refused (privacy settings): follow the system
    }
  }

  function apply(choice) {
    if (choice === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = choice;
    const button = document.getElementById("theme-toggle");
    if (button) button.textContent = `Theme: ${choice}`;
  }

  apply(saved());
  document.addEventListener("DOMContentLoaded", () => {
    apply(saved());
    document.getElementById("theme-toggle")?.addEventListener("click", () => {
      const next = CHOICES[(CHOICES.indexOf(saved()) + 1) % CHOICES.length];
      try {
        window.localStorage.setItem(KEY, next);
      } catch {
        // not kept: this page only
      }
      apply(next);
    });
  });
})();
