/* Ask page: post the question, then follow its answers over server-sent events without reloading.
 *
 * Each ask becomes an <article> at the top of #ask-answers with one <li data-kind="..."> per answer
 * ("ack" first: "Please wait a moment."; then "answer", "result", "error", or "commentary" lines
 * that keep coming). The stream sends `id:` numbers, so a reconnecting EventSource (and this code)
 * never shows an answer twice; it sends `event: end` after the final answer and the source is
 * closed then. Question and answers are set by textContent only: nothing is parsed as HTML. */
(function () {
  "use strict";

  var r = window.reflex;

  function clock(epoch) {
    var t = r.fmtTime(epoch || Date.now() / 1000);
    return t.slice(11);
  }

  function follow(id, list) {
    var seen = {};
    var source = new EventSource("/api/asks/" + encodeURIComponent(id) + "/stream");
    source.addEventListener("message", function (event) {
      if (event.lastEventId && seen[event.lastEventId]) { return; }
      seen[event.lastEventId] = true;
      var answer;
      try {
        answer = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      var kind = String(answer.kind || "answer");
      list.appendChild(r.el("li", { "data-kind": kind, "class": "answer kind-" + kind },
        r.el("span", { "class": "when muted" }, clock(answer.queued_at)), " ",
        r.el("span", { "class": "text" }, answer.text || "")));
    });
    source.addEventListener("end", function () { source.close(); });
    return source;
  }

  r.onReady(function () {
    var form = document.getElementById("ask-form");
    var answers = document.getElementById("ask-answers");
    var empty = document.getElementById("ask-empty");
    var error = document.getElementById("ask-error");
    var button = document.getElementById("ask-submit");
    if (!form || !answers) { return; }

    form.elements.text.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        button.click();
      }
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = form.elements.text.value.trim();
      var camera = form.elements.camera.value || null;
      r.setText(error, "");
      if (!text) {
        r.setText(error, "Type an instruction or a question first.");
        return;
      }
      button.disabled = true;
      r.api("POST", "/api/asks", { text: text, camera: camera }).then(function (made) {
        var list = r.el("ul", { "class": "ask-list" });
        var item = r.el("article", { "class": "ask-item", "data-ask": made.id },
          r.el("p", { "class": "ask-question" }, r.el("strong", null, "You asked: "), text,
            camera ? r.el("span", { "class": "muted" }, " (" + camera + ")") : null),
          list);
        answers.insertBefore(item, answers.firstChild);
        if (empty) { empty.classList.add("hidden"); }
        form.elements.text.value = "";
        follow(made.id, list);
      }, function (failure) {
        r.setText(error, failure.message);
      }).then(function () {
        button.disabled = false;
      });
    });
  });
})();
