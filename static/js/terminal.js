// The job terminal: xterm.js in #terminal, talking to the portal's websocket (data-ws: its path,
// same origin). Keys go as {"i": text}, the size as {"r": [cols, rows]}; the shell's output
// comes back as text. No token ever travels in the URL: the session cookie signs the request.
(function () {
  "use strict";
  function start() {
    var box = document.getElementById("terminal");
    if (!box || !window.Terminal) { return; }
    var term = new window.Terminal({cursorBlink: true, convertEol: false, scrollback: 5000,
                                    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"});
    var fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
    if (fit) { term.loadAddon(fit); }
    term.open(box);
    if (fit) { fit.fit(); }
    term.write(box.dataset.connecting + "\r\n");
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + window.location.host + box.dataset.ws);
    var opened = false;
    function send(obj) { if (ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(obj)); } }
    function size() { send({r: [term.cols, term.rows]}); }
    ws.onopen = function () { opened = true; size(); term.focus(); box.dataset.state = "open"; };
    ws.onmessage = function (event) { term.write(event.data); };
    ws.onclose = function () {
      term.write("\r\n[" + (opened ? box.dataset.closed : box.dataset.failed) + "]\r\n");
      box.dataset.state = "closed";
    };
    term.onData(function (data) { send({i: data}); });
    window.addEventListener("resize", function () { if (fit) { fit.fit(); } size(); });
    window.craterTerminal = term;  // for the browser tests: what the screen shows
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
