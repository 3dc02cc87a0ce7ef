// Refreshes the progress of the jobs on an admin page (the list and a job's own page) from the admin's
// JSON endpoint, without reloading the page: the progress bar, the overall percentage, the stage, and
// the status and stage cells beside them. It polls only while some job shown is still active.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;

  function widgets() {
    return Array.prototype.slice.call(document.querySelectorAll(".job-progress[data-url]"));
  }

  function setText(scope, selector, text) {
    if (!scope) return;
    var el = scope.querySelector(selector);
    if (el) el.textContent = text;
  }

  function apply(widget, state) {
    var bar = widget.querySelector("progress");
    if (bar) bar.value = state.overall;
    setText(widget, ".job-overall", Math.round(state.overall) + " %");
    setText(widget, ".job-stage", state.text);
    widget.dataset.active = state.active ? "1" : "";
    // The list's row, or the change page's form: the status and stage shown beside the widget.
    var row = widget.closest("tr") || widget.closest("form");
    setText(row, ".field-status .readonly, td.field-status", state.status_display);
    setText(row, ".field-stage .readonly, td.field-stage", state.stage || "-");
  }

  function poll() {
    var active = widgets().filter(function (w) { return w.dataset.active; });
    if (!active.length) return;
    var url = active[0].dataset.url + "?" + active.map(function (w) {
      return "pk=" + encodeURIComponent(w.dataset.pk);
    }).join("&");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (body) {
          active.forEach(function (w) {
            var state = body.jobs[w.dataset.pk];
            if (state) apply(w, state);
          });
        }
      })
      .catch(function () { /* a missed poll is retried at the next tick */ })
      .then(function () { window.setTimeout(poll, INTERVAL_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () { window.setTimeout(poll, INTERVAL_MS); });
})();
