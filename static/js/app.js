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
  // every 2 s (or their data-poll-every). A partial pushed once the socket is back carries
  // no polling attributes, so the push itself ends the polling.
  function startPolling(root) {
    var nodes = root.querySelectorAll("[data-poll-url]");
    Array.prototype.forEach.call(nodes, function (el) {
      if (el.hasAttribute("hx-trigger")) {
        return;
      }
      el.setAttribute("hx-get", el.getAttribute("data-poll-url"));
      el.setAttribute("hx-trigger", "every " + (el.getAttribute("data-poll-every") || "2s"));
      el.setAttribute("hx-swap", "outerHTML");
      if (window.htmx) {
        window.htmx.process(el);
      }
    });
  }
  // The socket's element remembers that it is down: the answer to an action (or any other
  // swap) replaces a live partial with one that carries no polling attributes, and while
  // the socket is down that partial must poll again, or the page would stand still until
  // the ws extension's next reconnect (up to a minute away).
  function socketDown(evt) {
    evt.target.setAttribute("data-socket-down", "");
    startPolling(evt.target);
  }
  function pollWhereDown() {
    var roots = document.querySelectorAll("[data-socket-down]");
    Array.prototype.forEach.call(roots, startPolling);
  }
  document.addEventListener("htmx:wsClose", socketDown);
  document.addEventListener("htmx:wsError", socketDown);
  document.addEventListener("htmx:wsOpen", function (evt) {
    evt.target.removeAttribute("data-socket-down");
  });

  // A push lost on the way (the channel layer is best effort, as the doorbell is) would
  // leave a live part showing an old state until the next change, which for a finished run
  // never comes. So a live part that has heard nothing for a while (a minute, or the body's
  // data-quiet-refresh-ms) while its socket is up fetches itself once, as it is now.
  var heard = {};
  function hear(el) {
    if (el && el.id) {
      heard[el.id] = Date.now();
    }
  }
  // After any swap: the swapped part has heard from the server, and one that came without
  // polling attributes polls again while its socket is down.
  function afterSwap(evt) {
    hear(evt.detail.target);
    pollWhereDown();
  }
  document.addEventListener("htmx:afterSettle", afterSwap);
  document.addEventListener("htmx:oobAfterSwap", afterSwap);
  function withoutPoll(url) {
    var u = new URL(url, window.location.href);
    u.searchParams.delete("poll");
    return u.pathname + u.search;
  }
  function refreshQuiet() {
    if (document.hidden || !window.htmx) {
      return;
    }
    var quiet = Number(document.body.getAttribute("data-quiet-refresh-ms")) || 60000;
    var now = Date.now();
    var parts = document.querySelectorAll("[data-poll-url]");
    Array.prototype.forEach.call(parts, function (el) {
      if (!el.id || el.hasAttribute("hx-trigger") || el.closest("[data-socket-down]")) {
        return; // polling already, or nothing to name it by
      }
      if (!(el.id in heard)) {
        heard[el.id] = now; // first seen now: the page was just rendered
        return;
      }
      if (now - heard[el.id] >= quiet) {
        heard[el.id] = now;
        window.htmx.ajax("GET", withoutPoll(el.getAttribute("data-poll-url")), {
          target: "#" + CSS.escape(el.id),
          swap: "outerHTML",
        });
      }
    });
  }
  window.setInterval(refreshQuiet, 1000);
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

  // Live fragments never go back in time. A run's live partial carries its version (last
  // event id, then last update); the push of a newer state can overtake the response to an
  // action (or a poll) that was rendered earlier, so an older fragment is not swapped in.
  // Out-of-band parts of the same response (the toasts) are still swapped.
  function parseVersion(el) {
    var text = el && el.getAttribute && el.getAttribute("data-version");
    if (!text) {
      return null;
    }
    var parts = text.split("-");
    return [Number(parts[0]) || 0, Number(parts[1]) || 0];
  }
  function isOlder(incoming, current) {
    var a = parseVersion(incoming);
    var b = parseVersion(current);
    if (!a || !b) {
      return false;
    }
    return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  }
  function incomingFor(container, target) {
    if (!container || !target.id) {
      return null;
    }
    if (container.id === target.id) {
      return container;
    }
    return container.querySelector ? container.querySelector("#" + CSS.escape(target.id)) : null;
  }
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var target = evt.detail.target;
    if (!evt.detail.shouldSwap || !target || !target.hasAttribute("data-version")) {
      return;
    }
    var doc = new DOMParser().parseFromString(evt.detail.serverResponse || "", "text/html");
    var incoming = incomingFor(doc, target);
    if (isOlder(incoming, target)) {
      evt.detail.swapOverride = "none";
      return;
    }
    announceChange(incoming, target);
  });
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var target = evt.detail.target;
    if (!target || !target.hasAttribute || !target.hasAttribute("data-version")) {
      return;
    }
    var incoming = incomingFor(evt.detail.fragment, target);
    if (isOlder(incoming, target)) {
      evt.detail.shouldSwap = false;
      return;
    }
    announceChange(incoming, target);
  });

  // Toasts made here (from what a push shows) look like the server's.
  function showToast(text, level) {
    var area = document.getElementById("toasts");
    if (!area) {
      return;
    }
    var toast = document.createElement("div");
    toast.className = "toast toast-" + (level || "info");
    var span = document.createElement("span");
    span.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "\u00d7";
    toast.appendChild(span);
    toast.appendChild(close);
    area.appendChild(toast);
    armToasts(area);
  }

  // When a push shows that another person paused, resumed, cancelled (...) the run on
  // screen, say who: the state changed and a newer action of a person came with it. The
  // viewer's own actions are answered by their own toasts. A render reads the run, then its
  // events: one made as a person acted may bring the action with the state from before it,
  // and the next the state. So an action that came without a change of state is held for
  // the next fragment, and told if that one brings the change.
  var heldBase = {};
  function me() {
    var who = document.querySelector(".account .who");
    return who ? who.textContent.trim() : "";
  }
  function announceChange(incoming, current) {
    if (!incoming || !current.hasAttribute("data-state")) {
      return;
    }
    var held = heldBase[current.id];
    delete heldBase[current.id];
    var base = held || {
      state: current.getAttribute("data-state"),
      at: Number(current.getAttribute("data-changed-at")),
    };
    var after = incoming.getAttribute("data-state");
    var moved = Boolean(after) && after !== base.state;
    var newer = Number(incoming.getAttribute("data-changed-at")) > base.at;
    if (newer && !moved && !held) {
      heldBase[current.id] = base;
      return;
    }
    var match = /^(user|api):(.+)$/.exec(incoming.getAttribute("data-changed-by") || "");
    if (!newer || !moved || !match || match[2] === me()) {
      return;
    }
    showToast(
      "This run is now " + (incoming.getAttribute("data-state-label") || after) +
        " (by " + match[2] + ").",
      "info"
    );
  }

  // Bulk selection (the runs list, the approvals inbox). Pushes re-render the rows, so the
  // selection is kept here and put back after every swap; what is sent is what is ticked on
  // screen.
  function bulkSelection(spec) {
    var selected = {};
    function boxes() {
      return document.querySelectorAll(spec.boxes);
    }
    function restore() {
      var all = document.getElementById(spec.all);
      var kept = {};
      var ticked = 0;
      var shown = boxes();
      Array.prototype.forEach.call(shown, function (box) {
        box.checked = selected[box.value] === true;
        if (box.checked) {
          kept[box.value] = true;
          ticked += 1;
        }
      });
      selected = kept;
      if (all) {
        all.checked = shown.length > 0 && ticked === shown.length;
        all.indeterminate = ticked > 0 && ticked < shown.length;
      }
      var count = document.getElementById(spec.count);
      if (count) {
        count.textContent =
          ticked === 1 ? "1 " + spec.one + " selected:" : ticked + " " + spec.many + " selected:";
      }
    }
    document.addEventListener("change", function (evt) {
      var box = evt.target;
      if (!(box instanceof HTMLInputElement)) {
        return;
      }
      if (box.id === spec.all) {
        Array.prototype.forEach.call(boxes(), function (b) {
          selected[b.value] = box.checked;
        });
        restore();
      } else if (box.matches(spec.boxes)) {
        selected[box.value] = box.checked;
        restore();
      }
    });
    document.addEventListener("htmx:afterRequest", function (evt) {
      // A bulk action that went through clears the selection.
      if (evt.detail.elt && evt.detail.elt.id === spec.form && evt.detail.successful) {
        selected = {};
        restore();
      }
    });
    document.addEventListener("htmx:afterSettle", restore);
    document.addEventListener("htmx:oobAfterSwap", restore);
    document.addEventListener("htmx:wsAfterMessage", restore);
    document.addEventListener("DOMContentLoaded", function () {
      // The browser may have kept boxes ticked across a reload or a visit back.
      Array.prototype.forEach.call(boxes(), function (b) {
        selected[b.value] = b.checked;
      });
      restore();
    });
  }
  bulkSelection({
    form: "bulk-form", boxes: "input.row-select", all: "select-all", count: "bulk-count",
    one: "run", many: "runs"
  });
  bulkSelection({
    form: "inbox-bulk", boxes: "input.approval-select", all: "inbox-select-all",
    count: "inbox-bulk-count", one: "request", many: "requests"
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
