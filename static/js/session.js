// The session page: countdown to the next check, the vitals chart, focus back to the first field
// after a save (htmx swaps the live part of the page without a reload).
(function () {
  let chart = null;

  function drawChart() {
    const canvas = document.getElementById("vitals-chart");
    const source = document.getElementById("vitals-chart-data");
    if (!canvas || !source || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    const labels = data.labels.map((iso) =>
      new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    if (chart) chart.destroy();
    chart = new Chart(canvas, {
      type: "line",
      data: {
        labels,
        datasets: [
          { label: "SBP", data: data.sbp, borderColor: "#dc3545", backgroundColor: "#dc3545", spanGaps: true },
          { label: "DBP", data: data.dbp, borderColor: "#fd7e14", backgroundColor: "#fd7e14", spanGaps: true },
          { label: "HR", data: data.hr, borderColor: "#0d6efd", backgroundColor: "#0d6efd", spanGaps: true },
          { label: "SpO2", data: data.spo2, borderColor: "#198754", backgroundColor: "#198754", spanGaps: true },
        ],
      },
      options: { maintainAspectRatio: false, animation: false, scales: { y: { suggestedMin: 40, suggestedMax: 200 } } },
    });
  }

  function tick() {
    for (const el of document.querySelectorAll(".countdown")) {
      const due = new Date(el.dataset.due).getTime();
      const late = Date.now() - due - Number(el.dataset.window) * 60000;
      const diff = Math.round((due - Date.now()) / 1000);
      const abs = Math.abs(diff);
      const text = `${Math.floor(abs / 60)}:${String(abs % 60).padStart(2, "0")}`;
      if (late > 0) { el.textContent = `overdue by ${Math.floor(late / 60000)} min`; el.className = "countdown fw-bold text-danger"; }
      else if (diff < 0) { el.textContent = `due now (${text} ago)`; el.className = "countdown fw-bold text-warning-emphasis"; }
      else { el.textContent = `in ${text}`; el.className = "countdown fw-bold"; }
    }
  }

  document.addEventListener("DOMContentLoaded", () => { drawChart(); tick(); setInterval(tick, 1000); });
  // afterSettle: htmx has finished restoring attributes, so the new canvas keeps its chart.
  document.body.addEventListener("htmx:afterSettle", (event) => {
    if (event.detail.target.id !== "session-live") return;
    drawChart();
    tick();
    const form = document.getElementById("vitals-form");
    if (!form || event.detail.requestConfig.verb !== "post") return;
    const firstError = form.querySelector(".invalid-feedback");
    const target = firstError
      ? form.querySelector(`[name="${firstError.dataset.field}"]`)
      : form.querySelector('[name="sbp"]');
    if (target) target.focus();
  });
})();
