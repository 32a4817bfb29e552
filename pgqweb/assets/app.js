// pgq dashboard: live updates of the page's #live part (server-sent
// events), ticking every job of a page, and confirmations. No inline
// script anywhere: the Content-Security-Policy forbids it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var conn = document.getElementById("conn");
  function state(s) {
    if (conn) { conn.className = "conn " + s; conn.title = "live updates: " + s; }
    document.body.setAttribute("data-live", s);
  }
  if (live && live.dataset.src && window.EventSource) {
    var src = new EventSource(live.dataset.src);
    state("connecting");
    src.addEventListener("open", function () { state("on"); });
    src.addEventListener("error", function () { state("off"); }); // EventSource reconnects by itself
    src.addEventListener("live", function (e) {
      // Keep what the operator ticked and where the focus is.
      var ticked = {};
      live.querySelectorAll("input[type=checkbox]:checked").forEach(function (c) {
        ticked[(c.id || c.name) + "=" + c.value] = true;
      });
      live.innerHTML = e.data;
      live.querySelectorAll("input[type=checkbox]").forEach(function (c) {
        if (ticked[(c.id || c.name) + "=" + c.value]) { c.checked = true; }
      });
      state("on");
      document.body.setAttribute("data-refreshed", String(Date.now()));
    });
  }
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.id === "select-page") {
      var table = t.closest("table");
      table.querySelectorAll("tbody input[type=checkbox][name=id]").forEach(function (c) { c.checked = t.checked; });
    }
  });
  document.addEventListener("submit", function (e) {
    var b = e.submitter;
    if (b && b.dataset.confirm && !window.confirm(b.dataset.confirm)) { e.preventDefault(); }
  });
})();
