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
