// A select of layers or bases grouped by network or stimulus job (class studyapp-grouped) shows only
// the group of what its row has chosen in the select named by data-group-from, so a researcher picks
// among the layers that exist for that network or job. An inline row added later is handled too.
(function () {
  "use strict";

  function source(select) {
    var own = select.name.split("-").pop();
    var name = select.name.slice(0, select.name.length - own.length) + select.dataset.groupFrom;
    return select.form ? select.form.querySelector('select[name="' + name + '"]') : null;
  }

  function filter(select) {
    var from = source(select);
    if (!from) return;
    var chosen = from.selectedIndex >= 0 ? from.options[from.selectedIndex].text : "";
    var groups = select.querySelectorAll("optgroup");
    var keep = false;
    for (var i = 0; i < groups.length; i++) {
      var match = groups[i].label === chosen;
      groups[i].hidden = !match;
      groups[i].disabled = !match;
      if (match && select.selectedOptions.length && select.selectedOptions[0].parentNode === groups[i]) keep = true;
    }
    if (!keep && select.value) {
      var first = select.querySelector("optgroup:not([disabled]) option");
      select.value = first ? first.value : "";
    }
  }

  function bind(select) {
    if (select.dataset.bound) return;
    select.dataset.bound = "1";
    var from = source(select);
    if (from) from.addEventListener("change", function () { filter(select); });
    filter(select);
  }

  function bindAll() {
    Array.prototype.forEach.call(document.querySelectorAll("select.studyapp-grouped"), function (s) {
      if (!/__prefix__/.test(s.name)) bind(s);
    });
  }

  document.addEventListener("DOMContentLoaded", bindAll);
  document.addEventListener("formset:added", bindAll);
})();
