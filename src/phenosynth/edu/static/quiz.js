// phenosynth quiz page: measure the response time in the browser (from when the image is shown to the answer) and
// show the time left; the server keeps its own clock and enforces the time limit.
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  if (!form) { return; }
  var image = document.querySelector(".quiz-image");
  var shown = performance.now();
  if (image && !image.complete) {
    image.addEventListener("load", function () { shown = performance.now(); });
  }
  var sent = false;
  form.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }  // one submit per question (the server ignores repeats too)
    sent = true;
    form.elements["response_ms"].value = String(Math.max(0, Math.round(performance.now() - shown)));
  });
  var left = document.getElementById("time-left");
  if (left) {
    var end = Date.now() + 1000 * Number(left.dataset.seconds);
    var tick = function () {
      var s = Math.max(0, Math.round((end - Date.now()) / 1000));
      left.textContent = s + " s left";
      if (s > 0) { setTimeout(tick, 1000); } else { left.textContent = "time is up"; }
    };
    tick();
  }
}());
