/* agentops console behaviour. A static file because the CSP allows no inline script. */
(function () {
  "use strict";

  var csrf = document.querySelector('meta[name="csrf-token"]');

  // Partials pushed over the WebSocket are rendered without a request, so their forms carry
  // no CSRF field: every htmx request sends the page's token as a header instead.
  document.addEventListener("htmx:configRequest", function (evt) {
    if (csrf && csrf.content) {
      evt.detail.headers["X-CSRFToken"] = csrf.content;
    }
  });

  // When the live socket cannot connect (or drops), the live partials poll their own URL
  // every 2 s. A partial pushed once the socket is back carries no polling attributes, so
  // the push itself ends the polling.
  function startPolling(root) {
    var nodes = root.querySelectorAll("[data-poll-url]");
    Array.prototype.forEach.call(nodes, function (el) {
      if (el.hasAttribute("hx-trigger")) {
        return;
      }
      el.setAttribute("hx-get", el.getAttribute("data-poll-url"));
      el.setAttribute("hx-trigger", "every 2s");
      el.setAttribute("hx-swap", "outerHTML");
      if (window.htmx) {
        window.htmx.process(el);
      }
    });
  }
  document.addEventListener("htmx:wsClose", function (evt) {
    startPolling(evt.target);
  });
  document.addEventListener("htmx:wsError", function (evt) {
    startPolling(evt.target);
  });
  if (!("WebSocket" in window)) {
    document.addEventListener("DOMContentLoaded", function () {
      startPolling(document);
    });
  }

  // Toasts: dismissable, and successes fade out on their own.
  function armToasts(root) {
    var toasts = root.querySelectorAll(".toast:not([data-armed])");
    Array.prototype.forEach.call(toasts, function (toast) {
      toast.setAttribute("data-armed", "");
      if (!toast.classList.contains("toast-error")) {
        window.setTimeout(function () {
          toast.remove();
        }, 8000);
      }
    });
  }
  document.addEventListener("click", function (evt) {
    var target = evt.target;
    if (!(target instanceof Element)) {
      return;
    }
    var close = target.closest(".toast-close");
    if (close) {
      close.closest(".toast").remove();
      return;
    }
    // "Keep it running" closes the inline confirmation; without JS it is a plain link.
    var dismiss = target.closest("[data-dismiss]");
    if (dismiss) {
      var box = document.getElementById(dismiss.getAttribute("data-dismiss"));
      if (box && box.closest("#main") && !document.querySelector(".confirm-page")) {
        evt.preventDefault();
        box.innerHTML = "";
      }
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    armToasts(document);
  });
  document.addEventListener("htmx:afterSettle", function () {
    armToasts(document);
  });
  document.addEventListener("htmx:oobAfterSwap", function () {
    armToasts(document);
  });

  // Countdowns ("next retry in 12 s") tick between pushes.
  function describe(seconds) {
    if (seconds <= 0) {
      return "due now";
    }
    if (seconds < 90) {
      return "in " + seconds + " s";
    }
    if (seconds < 5400) {
      return "in " + Math.round(seconds / 60) + " min";
    }
    return "in " + Math.round(seconds / 3600) + " h";
  }
  window.setInterval(function () {
    var now = Date.now();
    var nodes = document.querySelectorAll("time[data-countdown]");
    Array.prototype.forEach.call(nodes, function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) {
        el.textContent = describe(Math.round((at - now) / 1000));
      }
    });
  }, 1000);
})();
