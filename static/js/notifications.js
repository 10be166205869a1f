/* The notification preferences page. A static file because the CSP allows no inline script.
   Each row shows its list of workflows only with the "chosen workflows" scope, and its digest
   period only for digests; without JavaScript every control shows and the server checks. */
(function () {
  "use strict";

  function hasError(el) {
    var cell = el.closest("td");
    return !!(cell && cell.classList.contains("has-error"));
  }

  function sync(row) {
    var scope = row.querySelector('select[data-field="scope"]');
    var workflows = row.querySelector('select[data-field="workflows"]');
    var when = row.querySelector('select[data-field="when"]');
    var minutes = row.querySelector('input[data-field="digest_minutes"]');
    if (scope && workflows) {
      workflows.hidden = scope.value !== "workflows" && !hasError(workflows);
    }
    if (when && minutes) {
      minutes.hidden = when.value !== "digest" && !hasError(minutes);
    }
  }

  document.addEventListener("change", function (evt) {
    var target = evt.target;
    var row = target instanceof Element ? target.closest("tr.pref-row") : null;
    if (row) {
      sync(row);
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("tr.pref-row"), sync);
  });
})();
