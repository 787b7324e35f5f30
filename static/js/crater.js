// Crater's only script: htmx sends the CSRF token in a header (the token lives in a meta tag).
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) { event.detail.headers["X-CSRFToken"] = meta.content; }
});
// Closing the user menu when clicking elsewhere.
document.addEventListener("click", function (event) {
  document.querySelectorAll("details.usermenu[open]").forEach(function (d) {
    if (!d.contains(event.target)) { d.removeAttribute("open"); }
  });
});
// Status changes announced to screen readers. Polled regions are swapped whole (outerHTML), so a
// live region inside them would be a new element each time and say nothing, or everything. Their
// items carry data-announce (e.g. "Job 12 (train): Running") and an id; after each swap the items
// whose words changed are read out from the one persistent live region, #live-announcer.
(function () {
  var seen = {};
  function scan(record) {
    var changed = [];
    document.querySelectorAll("[data-announce][id]").forEach(function (el) {
      var words = el.getAttribute("data-announce");
      if (record && seen[el.id] !== undefined && seen[el.id] !== words) { changed.push(words); }
      seen[el.id] = words;
    });
    return changed;
  }
  document.addEventListener("DOMContentLoaded", function () { scan(false); });
  document.addEventListener("htmx:afterSettle", function () {
    var changed = scan(true);
    var region = document.getElementById("live-announcer");
    if (changed.length && region) { region.textContent = changed.slice(0, 5).join(". "); }
  });
})();
