// durable ui: live pages. While something a page shows is active (a run
// not finished, the first page of the runs, the queues), the page asks the
// server every few seconds for the version of what it shows (#live-state's
// data-poll: one cheap read, see rust/engine/browse.rs); when that differs
// from the version it was drawn at, it reads itself again and replaces each
// element that has data-live and an id by its counterpart, keeping which
// <details> were open and never touching a region the user is typing in.
// No polling while the tab is hidden or the page frozen (the header's
// Freeze button; kept for the tab in sessionStorage).
"use strict";
(() => {
  const FROZEN = "durable-live-frozen";
  let timer = null;
  let checking = false;
  let checked = new Date();
  let failed = null;

  const state = () => document.getElementById("live-state");

  function frozen() {
    try {
      return window.sessionStorage.getItem(FROZEN) === "1";
    } catch {
      return false;
    }
  }

  function setFrozen(value) {
    try {
      if (value) window.sessionStorage.setItem(FROZEN, "1");
      else window.sessionStorage.removeItem(FROZEN);
    } catch {
      // not kept: the toggle still holds for this page
    }
  }

  function wanted() {
    const live = state();
    return live !== null && live.dataset.active === "yes" && !frozen() && !document.hidden;
  }

  // (Re)arms the timer for the next check, if one is wanted.
  function plan() {
    clearTimeout(timer);
    timer = null;
    if (wanted() && !checking) timer = setTimeout(check, Number(state().dataset.every) || 2000);
    show();
  }

  async function check() {
    timer = null;
    if (!wanted()) return plan();
    checking = true;
    try {
      const live = state();
      if (live.dataset.poll) {
        const answer = await get(live.dataset.poll, "application/json");
        const { version } = await answer.json();
        if (version !== live.dataset.version) await reread();
      } else {
        await reread();
      }
      checked = new Date();
      failed = null;
    } catch (error) {
      failed = error instanceof Error ? error.message : String(error);
    }
    checking = false;
    plan();
  }

  async function get(url, accept) {
    const answer = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: accept } });
    if (!answer.ok) {
      let message = `${answer.status} ${answer.statusText}`;
      try {
        message = (await answer.json()).error || message;
      } catch {
        // not JSON
      }
      throw new Error(message);
    }
    return answer;
  }

  async function reread() {
    const answer = await get(window.location.href, "text/html");
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    if (!wanted()) return; // frozen or hidden meanwhile: the next check does it
    swap(fresh);
  }

  function swap(fresh) {
    for (const old of document.querySelectorAll("[data-live][id]")) {
      if (old.parentElement?.closest("[data-live]")) continue; // goes with the region around it
      const next = fresh.getElementById(old.id);
      if (!next || busy(old)) continue;
      const open = openDetails(old);
      const adopted = document.importNode(next, true);
      for (const details of adopted.querySelectorAll("details")) {
        const was = open.get(detailsKey(details));
        if (was !== undefined) details.open = was;
      }
      old.replaceWith(adopted);
    }
    document.dispatchEvent(new CustomEvent("durable:live-updated"));
  }

  // Whether the user is typing in `region` (focus in a field, or a field changed).
  function busy(region) {
    const focused = document.activeElement;
    if (focused && region.contains(focused) && focused.matches("input, textarea, select")) return true;
    return [...region.querySelectorAll("input, textarea, select")].some(changed);
  }

  function changed(field) {
    if (field instanceof HTMLSelectElement) return [...field.options].some((o) => o.selected !== o.defaultSelected);
    if (field.type === "checkbox" || field.type === "radio") return field.checked !== field.defaultChecked;
    return field.value !== field.defaultValue;
  }

  function openDetails(region) {
    const open = new Map();
    for (const details of region.querySelectorAll("details")) open.set(detailsKey(details), details.open);
    return open;
  }

  // A <details>' name that survives the swap: its id, its data-key, or its
  // place under the nearest row (data-name, data-step) or element with an id
  // (at the latest the region itself, which has one).
  function detailsKey(details) {
    if (details.id) return `#${details.id}`;
    if (details.dataset.key) return `key:${details.dataset.key}`;
    const owner = details.parentElement.closest("[data-name], [data-step], [id]");
    const label = owner.dataset.name ?? owner.dataset.step ?? owner.id;
    const kin = [...owner.querySelectorAll("details")].filter(
      (d) => d.parentElement.closest("[data-name], [data-step], [id]") === owner,
    );
    return `${label}|${kin.indexOf(details)}`;
  }

  function show() {
    const indicator = document.getElementById("live-indicator");
    const toggle = document.getElementById("live-toggle");
    if (!indicator || !toggle) return;
    const live = state();
    let said;
    let mode;
    if (frozen()) [mode, said] = ["frozen", "frozen"];
    else if (document.hidden) [mode, said] = ["paused", "paused (tab hidden)"];
    else if (!live || live.dataset.active !== "yes") [mode, said] = ["idle", "up to date · nothing running"];
    else if (failed) [mode, said] = ["error", `live · retrying (${failed})`];
    else [mode, said] = ["live", `live · updated ${checked.toLocaleTimeString([], { hour12: false })}`];
    indicator.textContent = said;
    indicator.dataset.state = mode;
    toggle.textContent = frozen() ? "Live" : "Freeze";
    toggle.setAttribute("aria-pressed", String(frozen()));
  }

  document.getElementById("live-toggle")?.addEventListener("click", () => {
    setFrozen(!frozen());
    if (!frozen() && !checking) check(); // catch up at once
    else plan();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !checking) check(); // catch up at once
    else plan();
  });
  plan();
})();
