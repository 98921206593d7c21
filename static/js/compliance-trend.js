// Weekly compliance percentages of the dashboard's main figures (data from json_script).
(function () {
  const canvas = document.getElementById("compliance-trend");
  const source = document.getElementById("compliance-trend-data");
  if (!canvas || !source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  const colours = ["#0d6efd", "#d63384", "#198754", "#fd7e14", "#6f42c1", "#20c997", "#dc3545"];

  new Chart(canvas, {
    type: "line",
    data: {
      labels: data.labels.map((day) => `week of ${day}`),
      datasets: data.series.map((series, i) => ({
        label: series.label,
        data: series.data,
        borderColor: colours[i % colours.length],
        backgroundColor: colours[i % colours.length],
        spanGaps: true,
        tension: 0.2,
        pointRadius: 4,
      })),
    },
    options: {
      maintainAspectRatio: false,
      animation: false,
      scales: { y: { min: 0, max: 100, title: { display: true, text: "% compliant" } } },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${item.formattedValue} %` } },
      },
    },
  });
})();
