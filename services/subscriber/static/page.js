// The settings pages' progressive enhancement: live import progress and copy buttons. Every form works
// without this file; it is served by mailsync itself (CSP script-src 'self', no inline script).
(function () {
  "use strict";

  function followImport() {
    var box = document.getElementById("import-progress");
    if (!box || box.getAttribute("data-running") !== "yes") return;
    var bar = document.getElementById("import-bar");
    var words = document.getElementById("import-words");
    var url = "/settings/email/import/" + encodeURIComponent(box.getAttribute("data-job"));
    function tick() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (p) {
          if (!p) { window.setTimeout(tick, 5000); return; }
          bar.max = p.max; bar.value = p.value; bar.textContent = String(p.value);
          words.textContent = p.words;
          if (p.running) { window.setTimeout(tick, 1500); }
          else { window.location.reload(); }  // the estimate's confirm button, or the final counts
        })
        .catch(function () { window.setTimeout(tick, 5000); });
    }
    window.setTimeout(tick, 1000);
  }

  function copyButtons() {
    var buttons = document.querySelectorAll("button[data-copy]");
    var said = document.getElementById("copied");
    Array.prototype.forEach.call(buttons, function (button) {
      button.hidden = false;  // without this script there is nothing to press: the text is selectable
      button.addEventListener("click", function () {
        var field = document.getElementById(button.getAttribute("data-copy"));
        field.select();
        var done = function () { if (said) said.textContent = "Copied."; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(field.value).then(done, function () {
            document.execCommand("copy"); done();
          });
        } else {
          document.execCommand("copy"); done();
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { followImport(); copyButtons(); });
})();
