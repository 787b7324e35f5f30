// A running job's log that follows itself: the <pre id="log-text" data-follow="URL"> of the log
// fragment (on the job page, or the logs page) reads the streamed log (fetch, text/plain) and
// appends it, keeping at most data-max-lines lines in the page. A stream lasts a few minutes on
// the server's side; it is asked again while the job runs (X-Crater-Log: follow) and stops when
// the log has ended (kept). "Pause" stops following, "Follow" goes on. Without JavaScript the
// page shows the last lines and its "Show / refresh" button.
(function () {
  "use strict";

  function follow(pre) {
    if (!pre || !pre.dataset.follow || pre.dataset.followStarted) { return; }
    pre.dataset.followStarted = "1";
    var button = document.getElementById("log-pause");
    var status = document.getElementById("log-follow-state");
    var max = parseInt(pre.dataset.maxLines || "5000", 10);
    var paused = false;
    var controller = null;

    function say(state) {
      pre.dataset.state = state;
      if (status) { status.textContent = status.dataset[state] || ""; }
      if (button) {
        button.hidden = state === "ended";
        button.textContent = paused ? button.dataset.resume : button.dataset.pause;
      }
    }

    function append(text) {
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      var lines = (pre.textContent + text).split("\n");
      pre.textContent = lines.length > max ? lines.slice(lines.length - max).join("\n") : lines.join("\n");
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    }

    function connect() {
      if (paused || !document.body.contains(pre)) { return; }
      controller = new AbortController();
      fetch(pre.dataset.follow, {signal: controller.signal, credentials: "same-origin"}).then(function (response) {
        if (!response.ok || response.headers.get("X-Crater-Log") !== "follow" || !response.body) {
          say("ended");
          return null;
        }
        say("following");
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) { window.setTimeout(connect, 1000); return null; }
            append(decoder.decode(chunk.value, {stream: true}));
            return pump();
          });
        }
        return pump();
      }).catch(function (error) {
        if (error && error.name === "AbortError") { return; }
        window.setTimeout(connect, 3000);  // the network or the server hiccuped: again, a little later
      });
    }

    if (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        paused = !paused;
        if (paused) {
          if (controller) { controller.abort(); }
          say("paused");
        } else {
          connect();
        }
      });
    }
    connect();
  }

  function start() { follow(document.getElementById("log-text")); }
  document.addEventListener("htmx:afterSettle", start);
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
