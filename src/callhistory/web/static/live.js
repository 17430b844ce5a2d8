// The call list's live view: on the unfiltered first page (newest first), fetch the same page
// every few seconds and swap in its rows and total, marking the calls that were not shown
// before. Paused while the tab is hidden; an error (offline, logged out) waits for the next turn.
(() => {
  const table = document.querySelector("table[data-live]");
  if (!table) return;
  const every = Number(table.dataset.live) * 1000;
  const shown = () => new Set([...table.querySelectorAll("tbody tr[data-id]")].map((r) => r.dataset.id));

  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (!response.ok || response.redirected) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const rows = fresh.querySelector("table[data-live] tbody");
      const total = fresh.querySelector("#total");
      if (!rows || !total) return;
      const before = shown();
      table.querySelector("tbody").replaceWith(rows);
      for (const row of rows.querySelectorAll("tr[data-id]")) {
        if (!before.has(row.dataset.id)) row.classList.add("new");
      }
      document.querySelector("#total").textContent = total.textContent;
    } catch (error) {
      // try again at the next turn
    }
  }

  setInterval(refresh, every);
})();
