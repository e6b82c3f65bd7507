// Sizes each email preview frame to its content, so the page scrolls once instead of a scroll
// inside a scroll. The frame is sandboxed without scripts but same-origin, so this page may measure it.
// Without JavaScript the frame keeps the height the stylesheet gives it and scrolls on its own.
(function () {
  "use strict";
  function fit(frame) {
    var doc = frame.contentDocument;
    if (!doc || !doc.documentElement) { return; }
    frame.style.height = "0px"; // measure the content, not the frame's previous height
    var height = Math.max(doc.documentElement.scrollHeight, doc.body ? doc.body.scrollHeight : 0);
    frame.style.height = height + "px";
    frame.classList.add("fitted");
  }
  function fitAll() {
    document.querySelectorAll("iframe.preview-frame").forEach(fit);
  }
  document.querySelectorAll("iframe.preview-frame").forEach(function (frame) {
    frame.addEventListener("load", function () { fit(frame); });
    fit(frame);
  });
  window.addEventListener("resize", fitAll);
})();
