// PHQ-9 and GAD-7 totals over time, with the instruments' band edges drawn as dashed lines.
(function () {
  const canvas = document.getElementById("instrument-trend");
  const source = document.getElementById("instrument-trend-data");
  if (!canvas || !source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);

  const bandLines = {
    id: "bandLines",
    afterDatasetsDraw(chart) {
      const { ctx, chartArea, scales } = chart;
      const edges = new Map();
      for (const [scale, list] of Object.entries(data.bands)) {
        for (const edge of list) {
          const name = scale === "phq9" ? "PHQ-9" : "GAD-7";
          const text = edges.get(edge.from);
          edges.set(edge.from, (text ? text + " · " : "") + `${name} ${edge.label}`);
        }
      }
      ctx.save();
      ctx.setLineDash([4, 4]);
      ctx.strokeStyle = "rgba(108,117,125,0.6)";
      ctx.fillStyle = "rgba(73,80,87,0.9)";
      ctx.font = "11px system-ui, sans-serif";
      ctx.textAlign = "right";
      for (const [value, text] of edges) {
        const y = scales.y.getPixelForValue(value);
        ctx.beginPath();
        ctx.moveTo(chartArea.left, y);
        ctx.lineTo(chartArea.right, y);
        ctx.stroke();
        ctx.fillText(`${text} ≥ ${value}`, chartArea.right - 4, y - 3);
      }
      ctx.restore();
    },
  };

  new Chart(canvas, {
    type: "line",
    data: {
      labels: data.labels,
      datasets: [
        {
          label: "PHQ-9 total", data: data.phq9, borderColor: "#0d6efd", backgroundColor: "#0d6efd", tension: 0.2,
          pointRadius: (ctx) => (data.markers && data.markers[ctx.dataIndex] ? 9 : 5),
          pointStyle: (ctx) => (data.markers && data.markers[ctx.dataIndex] === "remission" ? "star" : data.markers && data.markers[ctx.dataIndex] === "response" ? "triangle" : "circle"),
        },
        { label: "GAD-7 total", data: data.gad7, borderColor: "#d63384", backgroundColor: "#d63384", tension: 0.2, pointRadius: 5 },
      ],
    },
    options: {
      maintainAspectRatio: false,
      animation: false,
      scales: { y: { min: 0, max: data.max.phq9, title: { display: true, text: "Total score" } } },
      plugins: {
        tooltip: {
          callbacks: {
            afterLabel: (item) => {
              const marker = data.markers && data.markers[item.dataIndex];
              return item.datasetIndex === 0 && marker ? `${marker} (PHQ-9 vs first assessment)` : "";
            },
          },
        },
      },
    },
    plugins: [bandLines],
  });
})();
