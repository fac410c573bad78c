/* Cameras: "Test connection" grabs one frame from the typed source (POST /api/cameras/test) and shows
 * it, or says exactly why not; the line editor draws the camera's lines (tripwires) on its picture.
 * Text goes in by textContent only.
 *
 * Line editor: "New line" starts a line named as typed; each tap or click on img#line-snapshot adds a
 * point at its position relative to the picture (0-1 both ways), a double-click (or "Finish line")
 * ends it (at least 2 points). svg#line-svg, whose viewBox is the picture's own size, draws every line
 * with its arrows: walking from the first point to the last, "in" points to the right-hand side (image
 * coordinates, y down), "out" to the left; the arrows a line does not alert on are faded. Each line in
 * the list below has its direction, its labels (comma-separated) and Remove. The hidden input "lines"
 * holds them all as the JSON object the form posts (CameraConfig.lines). Read-only (data-readonly): the
 * lines are only drawn. */
(function () {
  "use strict";

  var r = window.reflex;

  function showTest(result, answer) {
    result.replaceChildren();
    if (answer.ok) {
      result.appendChild(r.el("img", { "src": answer.jpeg, "alt": "A frame from the source",
        "class": "test-frame", "width": String(answer.width), "height": String(answer.height) }));
      result.appendChild(r.el("p", { "class": "ok" }, "Connected: " + answer.width + " × " + answer.height));
      var editor = document.getElementById("line-editor");
      if (editor && editor.showFrame && !editor.hasAttribute("data-readonly")) { editor.showFrame(answer.jpeg); }
    } else {
      result.appendChild(r.el("p", { "class": "error" }, answer.error || "the source gave no picture"));
    }
  }

  var SVG = "http://www.w3.org/2000/svg";
  var SAME_POINT = 0.01;
  var DIRECTIONS = ["both", "in", "out"];
  var NAME = /^[a-z0-9][a-z0-9_-]*$/;

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, String(attrs[key])); });
    if (text) { node.textContent = text; }
    return node;
  }

  function readLines(text) {
    var out = {};
    try {
      var value = JSON.parse(text || "{}");
      if (!value || typeof value !== "object" || Array.isArray(value)) { return out; }
      Object.keys(value).forEach(function (name) {
        var line = value[name] || {};
        out[name] = { points: r.readPoints(Array.isArray(line.points) ? line.points : []),
          direction: DIRECTIONS.indexOf(line.direction) >= 0 ? line.direction : "both",
          labels: Array.isArray(line.labels) && line.labels.length ? line.labels.map(String) : ["person"] };
      });
    } catch (e) { /* an unreadable field: no lines shown, the server keeps what it has */ }
    return out;
  }

  /* The point half-way along a polyline (in pixels) and the unit normal to its right there. */
  function middle(px) {
    var lengths = [], total = 0;
    for (var i = 1; i < px.length; i++) {
      var l = Math.hypot(px[i][0] - px[i - 1][0], px[i][1] - px[i - 1][1]);
      lengths.push(l);
      total += l;
    }
    var half = total / 2;
    for (var j = 0; j < lengths.length; j++) {
      if (half <= lengths[j] || j === lengths.length - 1) {
        var a = px[j], b = px[j + 1], t = lengths[j] ? half / lengths[j] : 0.5;
        var dx = (b[0] - a[0]) / (lengths[j] || 1), dy = (b[1] - a[1]) / (lengths[j] || 1);
        return { x: a[0] + (b[0] - a[0]) * t, y: a[1] + (b[1] - a[1]) * t, nx: -dy, ny: dx };
      }
      half -= lengths[j];
    }
    return null;
  }

  function arrow(group, m, sign, size, word, faded) {
    var ex = m.x + sign * m.nx * size, ey = m.y + sign * m.ny * size;
    var hx = sign * m.nx * size * 0.35, hy = sign * m.ny * size * 0.35;
    var d = "M" + m.x + " " + m.y + " L" + ex + " " + ey +
      " M" + (ex - hx - hy * 0.8) + " " + (ey - hy + hx * 0.8) + " L" + ex + " " + ey +
      " L" + (ex - hx + hy * 0.8) + " " + (ey - hy - hx * 0.8);
    var cls = "line-arrow line-" + word + (faded ? " faded" : "");
    group.appendChild(svg("path", { "class": cls, d: d }));
    group.appendChild(svg("text", { "class": "line-word " + cls, x: ex + sign * m.nx * size * 0.45,
      y: ey + sign * m.ny * size * 0.45, "font-size": size * 0.5, "text-anchor": "middle",
      "dominant-baseline": "middle" }, word));
  }

  function lineEditor(editor, form) {
    var readonly = editor.hasAttribute("data-readonly");
    var img = document.getElementById("line-snapshot");
    var frame = editor.querySelector(".line-frame");
    var drawing = document.getElementById("line-svg");
    var input = editor.querySelector("input[name=lines]");
    var list = document.getElementById("line-list");
    var status = document.getElementById("line-status");
    var nameInput = document.getElementById("line-name");
    var missing = editor.querySelector(".line-missing");
    var lines = readLines(input.value);
    var current = null;  // the line being drawn: {name, points}

    function size() {
      return { w: img.naturalWidth || 640, h: img.naturalHeight || 360 };
    }

    function say(text) { if (status) { r.setText(status, text); } }

    function save() {
      if (readonly) { return; }
      input.value = JSON.stringify(lines);
    }

    function drawLine(name, points, direction, isCurrent) {
      var s = size(), unit = Math.min(s.w, s.h);
      var px = points.map(function (p) { return [p[0] * s.w, p[1] * s.h]; });
      var group = svg("g", { "class": "line" + (isCurrent ? " drawing" : ""), "data-line": name });
      group.appendChild(svg("polyline", { "class": "line-shape", points: px.map(function (p) {
        return p[0] + "," + p[1]; }).join(" ") }));
      px.forEach(function (p, i) {
        group.appendChild(svg("circle", { "class": i === 0 ? "line-dot first" : "line-dot", cx: p[0], cy: p[1],
          r: unit * 0.012 }));
      });
      if (px.length >= 2) {
        var m = middle(px);
        if (m) {
          arrow(group, m, 1, unit * 0.09, "in", direction === "out");
          arrow(group, m, -1, unit * 0.09, "out", direction === "in");
        }
      }
      if (px.length) {
        group.appendChild(svg("text", { "class": "line-name", x: px[0][0] + unit * 0.02, y: px[0][1] - unit * 0.02,
          "font-size": unit * 0.045 }, name));
      }
      drawing.appendChild(group);
    }

    function draw() {
      var s = size();
      drawing.setAttribute("viewBox", "0 0 " + s.w + " " + s.h);
      drawing.replaceChildren();
      Object.keys(lines).forEach(function (name) {
        drawLine(name, lines[name].points, lines[name].direction, false);
      });
      if (current) { drawLine(current.name, current.points, "both", true); }
    }

    function item(name) {
      var line = lines[name];
      var li = r.el("li", { "class": "line-item", "data-line": name });
      li.appendChild(r.el("strong", { "class": "line-item-name" }, name));
      li.appendChild(r.el("span", { "class": "muted" }, line.points.length + " points"));
      if (readonly) {
        li.appendChild(r.el("span", null, line.direction + " · " + line.labels.join(", ")));
        return li;
      }
      var direction = r.el("select", { "class": "line-direction", "aria-label": "Direction of " + name });
      DIRECTIONS.forEach(function (d) {
        direction.appendChild(r.el("option", { value: d, selected: d === line.direction }, d));
      });
      direction.addEventListener("change", function () {
        line.direction = direction.value;
        save();
        draw();
      });
      var labels = r.el("input", { "class": "line-labels", value: line.labels.join(", "), list: "line-labels",
        "aria-label": "Labels counted on " + name, autocapitalize: "none", autocomplete: "off" });
      labels.addEventListener("change", function () {
        var values = labels.value.split(",").map(function (v) { return v.trim(); }).filter(Boolean);
        line.labels = values.length ? values : ["person"];
        labels.value = line.labels.join(", ");
        save();
      });
      var remove = r.el("button", { type: "button", "class": "danger small line-remove" }, "Remove");
      remove.addEventListener("click", function () {
        delete lines[name];
        save();
        render();
        say("Line " + name + " removed (saved with the camera).");
      });
      li.appendChild(r.el("label", { "class": "inline" }, "Direction ", direction));
      li.appendChild(r.el("label", { "class": "inline grow" }, "Labels ", labels));
      li.appendChild(remove);
      return li;
    }

    function render() {
      list.replaceChildren();
      var names = Object.keys(lines);
      names.forEach(function (name) { list.appendChild(item(name)); });
      if (!names.length) { list.appendChild(r.el("li", { "class": "muted" }, "No lines.")); }
      draw();
    }

    function finish() {
      if (!current) { return; }
      if (current.points.length < 2) {
        say("A line needs at least 2 points: click the picture.");
        return;
      }
      lines[current.name] = { points: current.points, direction: "both", labels: ["person"] };
      say("Line " + current.name + " added: set its direction and labels, then save the camera.");
      current = null;
      save();
      render();
    }

    img.addEventListener("load", draw);
    var picture = r.snapshotPicture(img, missing);
    editor.showFrame = picture.show;  // "Test connection" has a picture of the typed source

    if (!readonly) {
      document.getElementById("line-new").addEventListener("click", function () {
        var name = nameInput.value.trim();
        if (!NAME.test(name)) {
          say("Name the line first: lower-case letters, digits, '-' and '_' (e.g. side-gate).");
          nameInput.focus();
          return;
        }
        if (lines[name]) { say("There is a line named " + name + " already."); return; }
        current = { name: name, points: [] };
        nameInput.value = "";
        say("Drawing " + name + ": click its points on the picture; double-click or Finish line to end it.");
        draw();
      });
      document.getElementById("line-undo").addEventListener("click", function () {
        if (current) { current.points.pop(); draw(); }
      });
      document.getElementById("line-finish").addEventListener("click", finish);
      nameInput.addEventListener("keydown", function (event) {
        if (event.key === "Enter") { event.preventDefault(); document.getElementById("line-new").click(); }
      });
      r.onPictureTap(frame, img, function (point) {
        if (!current) { say("Press New line first (after naming it)."); return; }
        var last = current.points[current.points.length - 1];
        if (last && Math.abs(last[0] - point[0]) < SAME_POINT && Math.abs(last[1] - point[1]) < SAME_POINT) {
          return;
        }
        current.points.push(point);
        say("Drawing " + current.name + ": " + current.points.length + " point" +
          (current.points.length === 1 ? "" : "s") + "; double-click or Finish line to end it.");
        draw();
      });
      frame.addEventListener("dblclick", function (event) {
        event.preventDefault();
        finish();
      });
      if (form) {
        form.addEventListener("submit", function () {
          if (current && current.points.length >= 2) { finish(); }  // a line left open is kept
        });
      }
    }
    render();
  }

  r.onReady(function () {
    var form = document.getElementById("camera-form");
    var editor = document.getElementById("line-editor");
    if (editor) { lineEditor(editor, editor.hasAttribute("data-readonly") ? null : form); }
    var button = document.getElementById("camera-test");
    var result = document.getElementById("camera-test-result");
    if (form && button && result) {
      button.addEventListener("click", function () {
        var source = form.elements.source.value.trim();
        if (!source) {
          showTest(result, { ok: false, error: "type a source first" });
          return;
        }
        button.disabled = true;
        result.replaceChildren(r.el("p", { "class": "muted" }, "Connecting…"));
        r.api("POST", "/api/cameras/test", { source: source, camera: form.elements.name.value })
          .then(function (answer) { showTest(result, answer); },
            function (error) { showTest(result, { ok: false, error: error.message }); })
          .then(function () { button.disabled = false; });
      });
    }
  });
})();
