// Live run status: poll the JSON endpoint while a run is queued or running, then reload
// once it settles so versions and metrics are current. Works without a channel layer.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  const url = root.dataset.statusUrl;
  const live = (s) => s === "queued" || s === "running";
  let lastPoints = {};
  const fmt = (s) => s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;

  async function refresh() {
    let data;
    try { data = await (await fetch(url, { credentials: "same-origin" })).json(); } catch (e) { return; }
    let reload = false;
    for (const run of data.runs) {
      const row = root.querySelector(`tr[data-run-id="${run.id}"]`);
      if (!row) { if (live(run.status)) reload = true; continue; }
      if (live(row.dataset.status) && !live(run.status)) reload = true;
      row.dataset.status = run.status;
      row.querySelector(".status").firstChild.textContent = run.status_label;
      row.querySelector(".stage").textContent =
        run.stage_number ? `${run.stage} (${run.stage_number}/${run.stages})` : run.stage;
      const eta = run.eta_seconds ?? run.stage_eta_seconds;
      row.querySelector(".eta").textContent = eta === null || eta === undefined ? "" :
        `${run.eta_seconds === null ? "stage ETA" : "ETA"} ${fmt(eta)}`;
      row.querySelector("progress").value = run.progress;
      row.querySelector(".steps").textContent = `${run.step}/${run.total_steps}`;
      if (lastPoints[run.id] !== undefined && lastPoints[run.id] !== run.loss_points) {
        const svg = await fetch(`runs/${run.id}/loss.svg`, { credentials: "same-origin" });
        row.querySelector(".chart").innerHTML = await svg.text();  // server-escaped SVG
      }
      lastPoints[run.id] = run.loss_points;
    }
    if (reload) location.reload();
  }
  setInterval(refresh, 2000);
  refresh();
})();
