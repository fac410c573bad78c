/* Rules page: the zone editor and "From a sentence".
 *
 * Zone editor: a tap or click on img#zone-snapshot adds a corner at its position relative to the
 * picture as displayed (0-1 both ways, so it fits the camera at any resolution and any screen
 * width); svg#zone-svg (viewBox 0 0 1 1, stretched over the picture) draws the polygon; Undo drops
 * the last corner, Clear all of them; the hidden input "zone" holds the JSON list of [x, y] that the
 * form posts. Pointer events, so a mouse, a pen and a finger all work: a corner is added when the
 * pointer comes up where it went down (a finger that scrolls the page adds nothing).
 *
 * Line: select#rule-line offers the lines of the chosen camera (each option's data-cameras; "every
 * camera": the lines every camera has). A rule with a line watches its crossings instead of a zone: the
 * zone editor is hidden and its field not posted, and the direction applies.
 *
 * From a sentence: Preview asks the server what the router makes of the sentence (nothing changes);
 * Save adds the rule it showed. Everything from the server is shown by textContent. */
(function () {
  "use strict";

  var r = window.reflex;

  function snapshotUrl(camera) {
    return "/api/cameras/" + encodeURIComponent(camera) + "/snapshot.jpg?t=" + Date.now();
  }

  function zoneEditor(editor) {
    var img = document.getElementById("zone-snapshot");
    var frame = editor.querySelector(".zone-frame");
    var shape = editor.querySelector("#zone-svg polygon");
    var dots = editor.querySelector("#zone-svg path.zone-dots");
    var input = editor.querySelector("input[name=zone]");
    var count = document.getElementById("zone-count");
    var missing = editor.querySelector(".zone-missing");
    var cameraSelect = document.getElementById("rule-camera");
    var cameras = (editor.getAttribute("data-cameras") || "").split(",").filter(Boolean);
    var points = r.readPoints(input.value);

    function draw() {
      shape.setAttribute("points", points.map(function (p) { return p[0] + "," + p[1]; }).join(" "));
      dots.setAttribute("d", points.map(function (p) { return "M" + p[0] + " " + p[1] + " h0"; }).join(" "));
      shape.classList.toggle("open", points.length < 3);
      input.value = points.length ? JSON.stringify(points) : "";
      r.setText(count, !points.length ? "No zone: the whole picture." :
        points.length + (points.length === 1 ? " corner" : " corners") +
        (points.length < 3 ? " (a zone needs at least 3)" : ""));
    }

    var picture = r.snapshotPicture(img, missing);

    function load(camera) {
      picture.load(camera ? snapshotUrl(camera) : "");
    }

    if (cameraSelect) {
      cameraSelect.addEventListener("change", function () {
        var chosen = cameraSelect.value.split(",")[0] || cameras[0] || "";
        load(chosen);
      });
    }

    r.onPictureTap(frame, img, function (point) {
      points.push(point);
      draw();
    });

    document.getElementById("zone-undo").addEventListener("click", function () {
      points.pop();
      draw();
    });
    document.getElementById("zone-clear").addEventListener("click", function () {
      points = [];
      draw();
    });
    draw();
  }

  var DEFAULTS = { min_score: 0.5, min_area: 0, dwell_s: 0, cooldown_s: 0, repeat_s: 0, verify: false,
    source: "any" };

  function field(list, name, value) {
    if (value === null || value === undefined || value === "" || DEFAULTS[name] === value ||
        (Array.isArray(value) && !value.length)) { return; }
    var text = typeof value === "object" ? JSON.stringify(value) : String(value);
    list.appendChild(r.el("dt", null, name));
    list.appendChild(r.el("dd", { "class": "mono" }, text));
  }

  function sentence() {
    var input = document.getElementById("rule-sentence");
    var camera = document.getElementById("rule-sentence-camera");
    var previewButton = document.getElementById("rule-preview");
    var saveButton = document.getElementById("rule-preview-save");
    var result = document.getElementById("rule-preview-result");
    if (!input || !previewButton || !saveButton || !result) { return; }
    var previewed = null;

    function body() {
      return { text: input.value.trim(), camera: camera && camera.value ? camera.value : null };
    }

    function show(answer) {
      result.replaceChildren();
      var rule = answer.rule_config || answer.rule;
      var isRule = answer.kind === "rule" && !!rule;
      var savable = isRule && !answer.problem;
      result.appendChild(r.el("p", { "class": savable ? "ok preview-summary" : "preview-summary" },
        answer.summary || ""));
      if (isRule) {
        var list = r.el("dl", { "class": "kv preview-rule" });
        Object.keys(rule).forEach(function (key) { field(list, key, rule[key]); });
        result.appendChild(list);
        if (answer.problem) {
          result.appendChild(r.el("p", { "class": "error preview-problem" }, "Cannot be saved: " + answer.problem));
        }
      } else {
        result.appendChild(r.el("p", { "class": "muted" },
          "That is not a rule" + (answer.kind ? " (it reads as a " + answer.kind + ")" : "") +
          ": try “alert me if …”. Questions go on the Ask page."));
      }
      saveButton.classList.toggle("hidden", !savable);
    }

    function fail(error) {
      result.replaceChildren(r.el("p", { "class": "error" }, error.message));
      saveButton.classList.add("hidden");
    }

    previewButton.addEventListener("click", function () {
      previewed = body();
      if (!previewed.text) { fail(new Error("type a sentence first")); return; }
      previewButton.disabled = true;
      r.api("POST", "/api/rules/preview", previewed).then(show, fail).then(function () {
        previewButton.disabled = false;
      });
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); previewButton.click(); }
    });
    input.addEventListener("input", function () { saveButton.classList.add("hidden"); });
    saveButton.addEventListener("click", function () {
      if (!previewed) { return; }
      saveButton.disabled = true;
      r.api("POST", "/api/rules/from-text", previewed).then(function () {
        window.location.assign("/rules");
      }, function (error) {
        fail(error);
        saveButton.disabled = false;
      });
    });
  }

  function lineChoice(editor) {
    var select = document.getElementById("rule-line");
    var direction = document.getElementById("rule-direction");
    var cameraSelect = document.getElementById("rule-camera");
    if (!select || !direction) { return; }
    var all = (editor && editor.getAttribute("data-cameras") || "").split(",").filter(Boolean);
    var zoneInput = editor ? editor.querySelector("input[name=zone]") : null;

    function offered(option) {
      var has = (option.getAttribute("data-cameras") || "").split(",");
      var chosen = cameraSelect && cameraSelect.value ? cameraSelect.value.split(",") : all;
      return chosen.every(function (c) { return has.indexOf(c) >= 0; });
    }

    function update() {
      Array.prototype.forEach.call(select.options, function (option) {
        if (!option.value) { return; }
        var ok = offered(option);
        option.hidden = !ok;
        option.disabled = !ok;
        if (!ok && option.selected) { select.value = ""; }
      });
      var line = !!select.value;
      direction.disabled = !line;
      if (editor) { editor.classList.toggle("hidden", line); }
      if (zoneInput) { zoneInput.disabled = line; }
    }

    select.addEventListener("change", update);
    if (cameraSelect) { cameraSelect.addEventListener("change", update); }
    update();
  }

  r.onReady(function () {
    var editor = document.getElementById("zone-editor");
    if (editor) { zoneEditor(editor); }
    lineChoice(editor);
    sentence();
  });
})();
