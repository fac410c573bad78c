/* Dashboard: reload every camera's live picture each second, the numbers and the mode every 2 s,
 * without reloading the page (a mode switched by the schedule, MQTT or an instruction shows at once). Pictures are drawn on the server (boxes included); this only swaps the <img>
 * source once the previous picture has loaded, so a slow link never piles up requests. All text is
 * set with textContent (reflex.setText): nothing from the server is parsed as HTML. */
(function () {
  "use strict";

  var IMAGE_EVERY_MS = 1000;
  var STATUS_EVERY_MS = 2000;
  var r = window.reflex;

  function liveUrl(name) {
    return "/api/cameras/" + encodeURIComponent(name) + "/live.jpg";
  }

  function cardOf(name) {
    return document.getElementById("camera-" + name);
  }

  function watchImage(card) {
    var img = card.querySelector("img.live");
    var missing = card.querySelector(".live-missing");
    if (!img || img.dataset.watched) { return; }
    img.dataset.watched = "1";
    img.dataset.busy = "1";
    img.addEventListener("load", function () {
      delete img.dataset.busy;
      img.classList.remove("hidden");
      if (missing) { missing.classList.add("hidden"); }
    });
    img.addEventListener("error", function () {
      delete img.dataset.busy;
      img.classList.add("hidden");
      if (missing) { missing.classList.remove("hidden"); }
    });
    if (img.complete) {  // loaded (or failed) before this script ran
      delete img.dataset.busy;
      if (img.naturalWidth === 0) {
        img.classList.add("hidden");
        if (missing) { missing.classList.remove("hidden"); }
      }
    }
  }

  function refreshImages() {
    if (document.hidden) { return; }
    document.querySelectorAll(".camera-card[data-camera]").forEach(function (card) {
      var img = card.querySelector("img.live");
      var name = card.getAttribute("data-camera");
      if (!img || !name || img.dataset.busy) { return; }
      img.dataset.busy = "1";
      img.src = liveUrl(name) + "?t=" + Date.now();
    });
  }

  function fixed(value, digits) {
    return typeof value === "number" ? value.toFixed(digits) : "0";
  }

  function addCard(name) {
    var template = document.getElementById("camera-card-template");
    var list = document.getElementById("camera-cards");
    if (!template || !list) { return null; }
    var card = template.content.firstElementChild.cloneNode(true);
    card.id = "camera-" + name;
    card.setAttribute("data-camera", name);
    card.setAttribute("data-live", liveUrl(name));
    r.setText(card.querySelector(".camera-name"), name);
    var img = card.querySelector("img.live");
    img.setAttribute("alt", "Live view of " + name);
    card.querySelector("a.mjpeg").setAttribute("href", "/cameras/" + encodeURIComponent(name) + "/live.mjpeg");
    var empty = document.getElementById("no-cameras");
    if (empty) { empty.remove(); }
    list.appendChild(card);
    watchImage(card);
    img.src = liveUrl(name) + "?t=" + Date.now();
    return card;
  }

  function fillCard(card, cam) {
    var online = card.querySelector(".online");
    r.setText(online, cam.online ? "online" : "offline");
    online.classList.toggle("ok", !!cam.online);
    online.classList.toggle("error", !cam.online);
    r.setText(card.querySelector(".reason"), cam.online ? "" : (cam.reason || ""));
    r.setText(card.querySelector(".fps"), fixed(cam.fps, 1));
    r.setText(card.querySelector(".skip"), Math.round((cam.gate_skip_ratio || 0) * 100) + " %");
    r.setText(card.querySelector(".infer"),
      typeof cam.inference_ms === "number" ? cam.inference_ms.toFixed(1) + " ms" : "—");
    r.setText(card.querySelector(".active"), cam.active_events || 0);
    r.setText(card.querySelector(".switches"),
      (cam.detect ? "on" : "off") + " / " + (cam.alerts ? "on" : "off"));
    card.querySelectorAll("button.switch-toggle").forEach(function (button) {
      showSwitch(button, !!cam[button.getAttribute("data-switch")]);
    });
  }

  var SWITCH_LABELS = { detect: "Detection", alerts: "Alerts" };

  function showSwitch(button, on) {
    button.setAttribute("aria-pressed", on ? "true" : "false");
    r.setText(button, SWITCH_LABELS[button.getAttribute("data-switch")] + ": " + (on ? "on" : "off"));
  }

  // Detection and alerts switches (admins only: the buttons are not rendered for a viewer). The
  // change goes through the control surface like MQTT's …/detect/set; the card shows what it answered.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.switch-toggle") : null;
    if (!button) { return; }
    var card = button.closest(".camera-card");
    var error = card.querySelector(".switch-error");
    var want = button.getAttribute("aria-pressed") !== "true";
    var url = "/api/cameras/" + encodeURIComponent(card.getAttribute("data-camera")) + "/switches/" +
      encodeURIComponent(button.getAttribute("data-switch"));
    button.disabled = true;
    r.api("PUT", url, { on: want }).then(function (answer) {
      showSwitch(button, answer.on);
      r.setText(error, "");
    }, function (failure) {
      r.setText(error, failure.message);
    }).then(function () { button.disabled = false; });
  });

  function fillPush(push) {
    var list = document.getElementById("push-state");
    if (!list) { return; }
    var names = Object.keys(push || {});
    list.replaceChildren();
    if (!names.length) {
      list.appendChild(r.el("li", { "class": "muted" }, "none configured"));
      return;
    }
    names.forEach(function (name) {
      var p = push[name];
      list.appendChild(r.el("li", { "data-push": name }, r.el("strong", null, name),
        " (" + p.kind + "): ", r.el("span", { "class": "pending" }, String(p.pending)), " waiting",
        p.confirmed_only ? " · confirmed alerts only" : ""));
    });
  }

  function fill(status) {
    var seen = {};
    Object.keys(status.cameras || {}).forEach(function (name) {
      seen[name] = true;
      var card = cardOf(name) || addCard(name);
      if (card) { fillCard(card, status.cameras[name]); }
    });
    document.querySelectorAll(".camera-card[data-camera]").forEach(function (card) {
      var name = card.getAttribute("data-camera");
      if (name && !seen[name]) { card.remove(); }
    });
    var outbox = status.outbox || {};
    r.setText(document.getElementById("outbox-depth"), outbox.depth);
    r.setText(document.getElementById("outbox-held"), outbox.held);
    r.setText(document.getElementById("outbox-shed"), outbox.shed);
    r.setText(document.getElementById("outbox-dropped"), outbox.dropped);
    var broker = status.broker || {};
    r.setText(document.getElementById("broker-state"),
      !broker.configured ? "not configured" : (broker.connected ? "connected" : "disconnected"));
    r.setText(document.getElementById("broker-url"), broker.url || "—");
    fillPush(status.push);
    var blue = status.blueloop || {};
    r.setText(document.getElementById("blueloop-state"), blue.broker_connected ? "over the broker" : "when the broker is back");
    r.setText(document.getElementById("blueloop-answered"), blue.last_answer_at ? r.fmtTime(blue.last_answer_at) : "none yet");
    r.setText(document.getElementById("blueloop-jobs"), blue.open_jobs);
    r.setText(document.getElementById("uptime"), uptime(status.uptime_s || 0));
    r.setText(document.getElementById("version"), status.version);
  }

  function uptime(seconds) {
    var s = Math.floor(seconds);
    if (s >= 86400) { return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h"; }
    if (s >= 3600) { return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min"; }
    if (s >= 60) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return s + " s";
  }

  function clock(epoch) {  // like the server's `clock` filter: the time today, else date and time
    var text = r.fmtTime(epoch);
    return text.slice(0, 10) === r.fmtTime(Date.now() / 1000).slice(0, 10) ? text.slice(11) : text;
  }

  function fillMode(state) {  // the summary is the server's (edge.modes.ModeState); the time is said here
    var text = state.summary;
    if (state.set_at) { text += " Set " + clock(state.set_at) + " by " + state.set_by + "."; }
    r.setText(document.getElementById("mode-name"), state.mode);
    r.setText(document.getElementById("mode-rules"), text);
    var select = document.getElementById("mode-select");
    if (select && document.activeElement !== select) { select.value = state.mode; }
  }

  function refreshMode() {
    if (!document.getElementById("mode-name")) { return; }
    r.api("GET", "/api/mode").then(fillMode, function () { /* said by the status refresh */ });
  }

  function refreshStatus() {
    r.api("GET", "/api/status").then(function (status) {
      fill(status);
      r.setText(document.getElementById("refreshed-at"), r.fmtTime(Date.now() / 1000).slice(11));
      r.setText(document.getElementById("refresh-error"), "");
    }, function (error) {
      r.setText(document.getElementById("refresh-error"), "(refresh failed: " + error.message + ")");
    });
  }

  r.onReady(function () {
    document.querySelectorAll(".camera-card[data-camera]").forEach(watchImage);
    window.setInterval(refreshImages, IMAGE_EVERY_MS);
    window.setInterval(refreshStatus, STATUS_EVERY_MS);
    window.setInterval(refreshMode, STATUS_EVERY_MS);
  });
})();
