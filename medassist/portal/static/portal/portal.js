// medassist portal: live progress by polling the job's progress URL, and auto-submitting the kind choice.
// No framework: every page works without this file (progress then updates on reload).
(function () {
  "use strict";
  function eta(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    seconds = Math.round(seconds);
    if (seconds < 60) return seconds + " s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + " min " + String(s).padStart(2, "0") + " s";
    return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  }
  function poll(block) {
    var url = block.getAttribute("data-progress-url");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) return;
        var bar = block.querySelector("progress");
        if (bar) { bar.value = p.percent; bar.textContent = p.percent + "%"; }
        var set = function (name, text) {
          var el = block.querySelector('[data-field="' + name + '"]');
          if (el) el.textContent = text;
        };
        set("percent", p.percent + "%");
        set("processed", p.processed);
        set("eta", eta(p.eta_seconds));
        var badge = block.querySelector('[data-field="status"]');
        if (badge) { badge.textContent = p.status_display; badge.className = "badge status-" + p.status; }
        if (p.is_final) {
          block.setAttribute("data-final", "1");
          if (block.hasAttribute("data-reload-when-done")) window.location.reload();
        } else {
          setTimeout(function () { poll(block); }, 1000);
        }
      })
      .catch(function () { setTimeout(function () { poll(block); }, 3000); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".progress-block[data-progress-url]").forEach(function (block) {
      if (block.getAttribute("data-final") !== "1") setTimeout(function () { poll(block); }, 500);
    });
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
