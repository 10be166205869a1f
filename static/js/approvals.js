/* The approvals inbox: deadline countdowns, the bulk selection, and errors shown at the
   decision form. A static file because the CSP allows no inline script. */
(function () {
  "use strict";

  // A decision refused (403) or overtaken by another reviewer (409) is answered with the
  // pane and the reason at the form; the answer says so with a header. Other error pages
  // are never swapped in.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var xhr = evt.detail.xhr;
    if (xhr && xhr.status >= 400 && xhr.getResponseHeader("X-Inline-Error") === "true") {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
    }
  });

  // Deadlines count down between pushes: "2 h 5 min left", "40 s left", "overdue".
  function left(seconds) {
    if (seconds <= 0) {
      return "overdue";
    }
    if (seconds < 90) {
      return seconds + " s left";
    }
    var minutes = Math.round(seconds / 60);
    if (minutes < 90) {
      return minutes + " min left";
    }
    var hours = Math.floor(minutes / 60);
    if (hours < 48) {
      return hours + " h " + (minutes % 60) + " min left";
    }
    return Math.round(hours / 24) + " days left";
  }
  function tick() {
    var now = Date.now();
    var nodes = document.querySelectorAll("time[data-deadline]");
    Array.prototype.forEach.call(nodes, function (el) {
      var at = Date.parse(el.getAttribute("data-deadline"));
      if (isNaN(at)) {
        return;
      }
      var seconds = Math.round((at - now) / 1000);
      el.textContent = left(seconds);
      el.classList.toggle("deadline-past", seconds <= 0);
      el.classList.toggle("deadline-soon", seconds > 0 && seconds <= 3600);
    });
  }
  window.setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
  document.addEventListener("htmx:wsAfterMessage", tick);

  // Bulk selection. Pushes re-render the rows, so the selection is kept here and put back
  // after every swap; what is sent is what is ticked on screen.
  var selected = {};
  function restoreSelection() {
    var boxes = document.querySelectorAll("input.approval-select");
    var all = document.getElementById("inbox-select-all");
    var kept = {};
    var ticked = 0;
    Array.prototype.forEach.call(boxes, function (box) {
      box.checked = selected[box.value] === true;
      if (box.checked) {
        kept[box.value] = true;
        ticked += 1;
      }
    });
    selected = kept;
    if (all) {
      all.checked = boxes.length > 0 && ticked === boxes.length;
      all.indeterminate = ticked > 0 && ticked < boxes.length;
    }
    var count = document.getElementById("inbox-bulk-count");
    if (count) {
      count.textContent =
        ticked === 1 ? "1 request selected:" : ticked + " requests selected:";
    }
  }
  document.addEventListener("change", function (evt) {
    var box = evt.target;
    if (!(box instanceof HTMLInputElement)) {
      return;
    }
    if (box.id === "inbox-select-all") {
      var boxes = document.querySelectorAll("input.approval-select");
      Array.prototype.forEach.call(boxes, function (b) {
        selected[b.value] = box.checked;
      });
      restoreSelection();
    } else if (box.classList.contains("approval-select")) {
      selected[box.value] = box.checked;
      restoreSelection();
    }
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    if (evt.detail.elt && evt.detail.elt.id === "inbox-bulk" && evt.detail.successful) {
      selected = {};
      restoreSelection();
    }
  });
  document.addEventListener("htmx:afterSettle", restoreSelection);
  document.addEventListener("htmx:oobAfterSwap", restoreSelection);
  document.addEventListener("htmx:wsAfterMessage", restoreSelection);
  document.addEventListener("DOMContentLoaded", function () {
    var boxes = document.querySelectorAll("input.approval-select");
    Array.prototype.forEach.call(boxes, function (b) {
      selected[b.value] = b.checked;
    });
    restoreSelection();
  });
})();
