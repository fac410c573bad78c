/* Reflex Edge admin page: shared helpers, loaded on every page before the page's own script.
 *
 * The CSP allows scripts from this appliance only and no inline script, so every page script is a
 * file in static/ included through {% block scripts %} in templates/base.html.
 *
 * Helpers (globals on window.reflex and as plain functions):
 *   api(method, url, body)  -> Promise of the parsed JSON answer. Sends JSON (when body is given),
 *                              the session cookie and the X-CSRFToken header (read from
 *                              <meta name="csrf-token">). A non-2xx answer rejects with an Error
 *                              whose .message is the server's one-line {"error": "..."} and whose
 *                              .status is the HTTP status. A 401 sends the browser to /login.
 *   csrfToken()             -> the page's CSRF token (for a FormData you post yourself).
 *   el(tag, attrs, ...children) -> a new element; attrs sets attributes ("class", "data-x", ...) and
 *                              children are nodes or strings (strings become text nodes: data is
 *                              never parsed as HTML). Never put data into innerHTML.
 *   setText(node, text)     -> node.textContent = text (null/undefined -> "").
 *   onReady(fn)             -> run fn once the DOM is parsed.
 *   fmtTime(epochSeconds)   -> local date and time, e.g. "2024-05-01 14:03:07".
 *   fmtAgo(epochSeconds)    -> "5 s ago", "3 min ago", ...
 *   onPictureTap(frame, img, fn) -> calls fn([x, y], event) for a tap or click on img (inside frame),
 *                              x and y relative to the picture as displayed (0-1 both ways, rounded),
 *                              so a drawing fits the camera at any resolution and screen width.
 *                              Pointer events: a mouse, a pen and a finger all work, and a pointer
 *                              that moved between down and up (a finger scrolling the page) is no tap.
 *   readPoints(value)       -> a list of [x, y] (each in 0-1) from a JSON text or an already parsed
 *                              list; anything malformed is left out.
 *   BLANK_PICTURE           -> a grey placeholder picture (data: URL) while a snapshot is missing.
 *   snapshotPicture(img, missing) -> keeps img showing a camera snapshot that may not exist yet (a
 *                              camera just started has no keyframe): while it fails, a blank picture
 *                              and the `missing` note, retried every 2 s. Returns {load(url), show(src)}:
 *                              load a camera's snapshot URL ("" for none), or show a picture as it is.
 *
 * Progressive enhancement in this file for every page:
 *   <button data-api-post="/api/..." data-result="#some-id"> posts (no body) with api() and writes
 *   the answer's "result" (or the error) into the element data-result names.
 */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function api(method, url, body) {
    var headers = { "Accept": "application/json", "X-CSRFToken": csrfToken() };
    var init = { method: method || "GET", headers: headers, credentials: "same-origin" };
    if (body !== undefined && body !== null) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      var parsed = type.indexOf("application/json") >= 0 ? response.json() : response.text();
      return parsed.then(function (data) {
        if (response.ok) {
          return data;
        }
        if (response.status === 401) {
          window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
        }
        var message = data && data.error ? data.error : "HTTP " + response.status;
        var error = new Error(message);
        error.status = response.status;
        error.data = data;
        throw error;
      });
    });
  }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) {
          return;
        }
        node.setAttribute(key, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) {
        continue;
      }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(node, text) {
    if (node) {
      node.textContent = text === null || text === undefined ? "" : String(text);
    }
  }

  function onReady(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn);
    } else {
      fn();
    }
  }

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function fmtTime(epoch) {
    if (epoch === null || epoch === undefined) {
      return "";
    }
    var d = new Date(epoch * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function fmtAgo(epoch) {
    if (epoch === null || epoch === undefined) {
      return "";
    }
    var s = Math.max(0, Math.round(Date.now() / 1000 - epoch));
    if (s < 90) { return s + " s ago"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    if (s < 172800) { return Math.round(s / 3600) + " h ago"; }
    return Math.round(s / 86400) + " days ago";
  }

  // On a phone a table's rows become stacked cards (app.css), each cell labelled by its column
  // header: the header's text is copied into the cell's data-label, also for rows added later.
  function labelCells(table) {
    var heads = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
      return th.textContent.trim();
    });
    table.querySelectorAll("tbody tr").forEach(function (tr) {
      Array.prototype.forEach.call(tr.children, function (cell, i) {
        if (heads[i] && !cell.hasAttribute("data-label") && !cell.hasAttribute("colspan")) {
          cell.setAttribute("data-label", heads[i]);
        }
      });
    });
  }

  onReady(function () {
    document.querySelectorAll(".table-wrap table").forEach(function (table) {
      labelCells(table);
      new MutationObserver(function () { labelCells(table); })
        .observe(table, { childList: true, subtree: true });
    });
  });

  onReady(function () {
    document.querySelectorAll("button[data-api-post]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.querySelector(button.getAttribute("data-result"));
        button.disabled = true;
        setText(target, "…");
        if (target) { target.className = target.className.replace(/\b(ok|error)\b/g, "").trim(); }
        api("POST", button.getAttribute("data-api-post")).then(function (answer) {
          setText(target, answer && answer.result !== undefined ? answer.result : "done");
          if (target) { target.classList.add("ok"); }
        }, function (error) {
          setText(target, error.message);
          if (target) { target.classList.add("error"); }
        }).then(function () {
          button.disabled = false;
        });
      });
    });
  });

  var TAP_SLOP_PX = 10;

  function relative(v) {
    return Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
  }

  function readPoints(value) {
    var list = value;
    if (typeof value === "string" || value === undefined || value === null) {
      try { list = JSON.parse(value || "[]"); } catch (e) { return []; }
    }
    if (!Array.isArray(list)) { return []; }
    return list.filter(function (p) {
      return Array.isArray(p) && p.length === 2 && isFinite(p[0]) && isFinite(p[1]);
    }).map(function (p) { return [relative(+p[0]), relative(+p[1])]; });
  }

  function onPictureTap(frame, img, fn) {
    var down = null;
    frame.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) { return; }
      down = { x: event.clientX, y: event.clientY, id: event.pointerId };
    });
    frame.addEventListener("pointercancel", function () { down = null; });
    frame.addEventListener("pointerup", function (event) {
      if (!down || down.id !== event.pointerId) { return; }
      var moved = Math.abs(event.clientX - down.x) + Math.abs(event.clientY - down.y);
      down = null;
      if (moved > TAP_SLOP_PX) { return; }
      var rect = img.getBoundingClientRect();
      if (!rect.width || !rect.height) { return; }
      var x = (event.clientX - rect.left) / rect.width;
      var y = (event.clientY - rect.top) / rect.height;
      if (x < 0 || x > 1 || y < 0 || y > 1) { return; }
      event.preventDefault();
      fn([relative(x), relative(y)], event);
    });
    img.addEventListener("dragstart", function (event) { event.preventDefault(); });
  }

  var BLANK_PICTURE = "data:image/svg+xml," + encodeURIComponent(
    '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="360">' +
    '<rect width="640" height="360" fill="#c9ced8"/></svg>');

  var SNAPSHOT_RETRY_MS = 2000;

  function snapshotPicture(img, missing) {
    var wanted = img.getAttribute("src") || "";
    var retry = null;

    function stopRetry() {
      if (retry) { window.clearInterval(retry); retry = null; }
    }

    function showBlank() {
      if (img.getAttribute("src") !== BLANK_PICTURE) { img.setAttribute("src", BLANK_PICTURE); }
      missing.classList.remove("hidden");
      if (wanted && !retry) {
        retry = window.setInterval(function () {
          var probe = new Image();
          probe.onload = function () {
            stopRetry();
            missing.classList.add("hidden");
            img.setAttribute("src", probe.src);
          };
          probe.src = wanted.split("?")[0] + "?t=" + Date.now();
        }, SNAPSHOT_RETRY_MS);
      }
    }

    function show(src) {
      stopRetry();
      wanted = "";
      missing.classList.add("hidden");
      img.setAttribute("src", src);
    }

    function load(url) {
      stopRetry();
      wanted = url || "";
      if (!wanted) { showBlank(); return; }
      missing.classList.add("hidden");
      img.setAttribute("src", wanted);
    }

    img.addEventListener("error", function () {
      if (img.getAttribute("src") !== BLANK_PICTURE) { showBlank(); }
    });
    if (!wanted || (img.complete && img.naturalWidth === 0)) { showBlank(); }
    return { load: load, show: show };
  }

  var reflex = { api: api, csrfToken: csrfToken, el: el, setText: setText, onReady: onReady,
    fmtTime: fmtTime, fmtAgo: fmtAgo, onPictureTap: onPictureTap, readPoints: readPoints,
    BLANK_PICTURE: BLANK_PICTURE, snapshotPicture: snapshotPicture };
  window.reflex = reflex;
  Object.keys(reflex).forEach(function (name) { window[name] = reflex[name]; });
})();
