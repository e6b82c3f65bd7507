// Progressive enhancement of the subscription form: send the browser's IANA time zone, so bulletins
// scheduled in local time arrive at the same hour of the subscriber's own day. Without it the default applies.
(function () {
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var fields = document.querySelectorAll("input[name=timezone]");
    for (var i = 0; i < fields.length; i++) if (zone && !fields[i].value) fields[i].value = zone;
  } catch (e) { /* an old browser: the default zone applies */ }
})();
