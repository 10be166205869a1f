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
  // The open request follows what other reviewers do: when its row in the list (pushed, or
  // polled) shows another state than the pane, or the row left the list, the pane is
  // fetched again. While its form holds the reviewer's typing it is not, unless the row
  // says the request was decided (nothing can be submitted for it any more).
  var typed = false;
  var fetchedFor = "";
  document.addEventListener("input", function (evt) {
    if (evt.target.closest && evt.target.closest("#decision-form")) {
      typed = true;
    }
  });
  function followPane() {
    var pane = document.getElementById("approval-detail");
    if (!pane || !pane.dataset.request || !document.getElementById("inbox-list") || !window.htmx) {
      return;
    }
    var row = document.getElementById("approval-row-" + pane.dataset.request);
    if (row) {
      pane.dataset.listed = "1";
    }
    var state = row ? row.dataset.state : pane.dataset.listed === "1" ? "left" : "";
    if (!state || state === pane.dataset.state) {
      return;
    }
    // A row that left the list may still be pending (another filter or page, a more urgent
    // request ahead of it): only a pane the reviewer has not typed into is fetched again.
    if (typed && (state === "left" || state.indexOf("pending:") === 0)) {
      staleNotice(pane);
      return;
    }
    var key = pane.dataset.request + " " + state;
    if (key === fetchedFor) {
      return; // fetched for this state already: never loop
    }
    fetchedFor = key;
    refetch(pane);
  }
  function refetch(pane) {
    htmx.ajax("GET", pane.dataset.url, { target: "#approval-detail", swap: "outerHTML" });
  }
  // Kept typing: say that the request changed, and offer the latest (which drops it).
  function staleNotice(pane) {
    if (pane.querySelector(".pane-stale")) {
      return;
    }
    var note = document.createElement("p");
    note.className = "notice pane-stale";
    note.setAttribute("role", "status");
    note.appendChild(document.createTextNode("Another reviewer acted on this request. "));
    var latest = document.createElement("button");
    latest.type = "button";
    latest.textContent = "Show the latest";
    latest.addEventListener("click", function () {
      refetch(pane);
    });
    note.appendChild(latest);
    var head = pane.querySelector(".detail-head");
    pane.insertBefore(note, head ? head.nextSibling : pane.firstChild);
  }
  document.addEventListener("htmx:afterSwap", function (evt) {
    var target = evt.detail && evt.detail.target;
    if (target && target.id === "approval-detail") {
      // A pane answered with the reviewer's own input (a refusal, a field to fix) keeps it.
      var pane = document.getElementById("approval-detail");
      typed = !!(pane && pane.dataset.typed === "1");
    }
  });
  document.addEventListener("DOMContentLoaded", followPane);
  document.addEventListener("htmx:afterSettle", followPane);
  document.addEventListener("htmx:wsAfterMessage", followPane);
  window.setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
  document.addEventListener("htmx:wsAfterMessage", tick);
})();
