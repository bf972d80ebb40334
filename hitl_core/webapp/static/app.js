// Progressive enhancement only: every page works without it.
// Rewrites <time datetime> elements (rendered in UTC by the server) into the reader's own time zone.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short"
  });
  document.querySelectorAll("time[datetime]").forEach(function (node) {
    var moment = new Date(node.getAttribute("datetime"));
    if (!isNaN(moment.getTime())) {
      node.setAttribute("title", node.textContent);
      node.textContent = format.format(moment);
    }
  });
  // A decision link's token has done its job once the page is open: keep it out of the address bar
  // and the history (the form carries it).
  if (window.history && window.location.search.indexOf("token=") !== -1) {
    window.history.replaceState(null, "", window.location.pathname);
  }
})();
