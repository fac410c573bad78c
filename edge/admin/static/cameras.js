/* Cameras: "Test connection" grabs one frame from the typed source (POST /api/cameras/test) and shows
 * it, or says exactly why not. Text goes in by textContent only. */
(function () {
  "use strict";

  var r = window.reflex;

  function showTest(result, answer) {
    result.replaceChildren();
    if (answer.ok) {
      result.appendChild(r.el("img", { "src": answer.jpeg, "alt": "A frame from the source",
        "class": "test-frame", "width": String(answer.width), "height": String(answer.height) }));
      result.appendChild(r.el("p", { "class": "ok" }, "Connected: " + answer.width + " × " + answer.height));
    } else {
      result.appendChild(r.el("p", { "class": "error" }, answer.error || "the source gave no picture"));
    }
  }

  r.onReady(function () {
    var form = document.getElementById("camera-form");
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
