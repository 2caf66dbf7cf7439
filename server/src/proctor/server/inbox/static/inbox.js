// The pending page stays current: on each server-sent event it fetches the list again
// (server-rendered, escaped HTML) and swaps it in. No build step, no framework.
"use strict";
(function () {
  var box = document.querySelector("[data-live]");
  if (!box || !window.EventSource) { return; }
  var badge = document.getElementById("live");
  var source = new EventSource("/events");
  var refreshing = false, again = false;
  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(box.getAttribute("data-live"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { box.innerHTML = html; })
      .catch(function () { /* the next event tries again */ })
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }
  source.addEventListener("open", function () { if (badge) { badge.hidden = false; } refresh(); });
  source.addEventListener("error", function () { if (badge) { badge.hidden = true; } });
  source.addEventListener("approvals", refresh);
})();
