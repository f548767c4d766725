// Evidence drill-down. Without JavaScript every evidence row simply stays visible.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  function setOpen(row, open) {
    var ev = document.getElementById("ev-" + row);
    var btn = document.querySelector('button.toggle[data-row="' + row + '"]');
    if (!ev || !btn) { return; }
    ev.classList.toggle("open", open);
    btn.setAttribute("aria-expanded", open ? "true" : "false");
  }
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) { return; }
    var btn = target.closest("button.toggle");
    if (btn) {
      setOpen(btn.getAttribute("data-row"), btn.getAttribute("aria-expanded") !== "true");
      return;
    }
    var link = target.closest("a.plink");
    if (link) { setOpen(link.getAttribute("data-row"), true); }
  });
})();
