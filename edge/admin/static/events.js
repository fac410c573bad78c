/* Events pages: a snapshot is written a moment after its event's first alert, so a thumbnail or the
 * detail picture that is not there yet is tried again for a while instead of staying broken; one
 * that never comes is shown as an empty grey box. */
(function () {
  "use strict";

  var r = window.reflex;
  var RETRY_MS = 2000;
  var TRIES = 15;

  function retrying(img) {
    var tries = 0;
    var base = img.getAttribute("src");
    var note = img.closest(".event-picture") ? img.closest(".event-picture").querySelector(".snapshot-missing") : null;

    function failed() {
      img.classList.add("missing");
      if (note) { note.classList.remove("hidden"); }
      if (++tries > TRIES) { return; }
      window.setTimeout(function () {
        img.setAttribute("src", base + (base.indexOf("?") >= 0 ? "&" : "?") + "try=" + tries);
      }, RETRY_MS);
    }

    img.addEventListener("error", failed);
    img.addEventListener("load", function () {
      img.classList.remove("missing");
      if (note) { note.classList.add("hidden"); }
    });
    if (img.complete && img.naturalWidth === 0) { failed(); }
  }

  // The list does not move under the reader's eyes: new events (under the same filters) are counted
  // every few seconds in a banner whose link shows them.
  var POLL_MS = 5000;

  function watchForNew(table, banner) {
    var shown = {};
    table.querySelectorAll("tr[data-event]").forEach(function (tr) {
      shown[tr.getAttribute("data-event")] = true;
    });
    function poll() {
      r.api("GET", "/api/events" + window.location.search).then(function (answer) {
        var fresh = (answer.events || []).filter(function (ev) { return !shown[ev.id]; }).length;
        if (fresh > 0) {
          r.setText(banner.querySelector(".count"), fresh === 1 ? "1 new event" : fresh + " new events");
          banner.classList.remove("hidden");
        }
      }, function () { /* the next poll tries again */ }).then(function () {
        window.setTimeout(poll, POLL_MS);
      });
    }
    window.setTimeout(poll, POLL_MS);
  }

  r.onReady(function () {
    document.querySelectorAll("img.snapshot, img#event-snapshot").forEach(retrying);
    var table = document.getElementById("events");
    var banner = document.getElementById("events-new");
    if (table && banner) { watchForNew(table, banner); }
  });
})();
