/* werkhub organisation and federation pages: forms and buttons that call the JSON API with
   the CSRF header. A form carries data-method and data-path ({field} in the path is taken from the
   form's field of that name); its other fields become the JSON body: numbers as numbers,
   check boxes as true/false, data-list fields as lists split at commas, empty fields left
   out (or sent as null with data-null); data-body="map" sends {name: number} of its number
   fields. A button with data-org-call="METHOD /path" calls it. data-confirm asks first;
   data-show names a field of the answer to show once instead of reloading. Requests go
   through werkhub.js's helper (window.werkhub.call). No libraries. */
(function () {
  "use strict";
  // the one fetch helper of the pages (werkhub.js, loaded first)
  var call = window.werkhub.call;
  var show = window.werkhub.show;

  function body(form, used) {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || used.indexOf(el.name) >= 0 || el.type === "submit") { return; }
      if (el.type === "checkbox") { out[el.name] = el.checked; return; }
      var value = el.value.trim();
      if (value === "") {
        if (el.hasAttribute("data-null")) { out[el.name] = null; }
        return;
      }
      if (el.hasAttribute("data-list")) {
        out[el.name] = value.split(",").map(function (v) { return v.trim(); }).filter(Boolean);
      } else if (el.type === "number") {
        out[el.name] = Number(value);
      } else {
        out[el.name] = value;
      }
    });
    return out;
  }

  function finish(el, data, okText) {
    var field = el.getAttribute("data-show");
    if (field && data && data[field]) {
      show(okText + " " + data[field], true);
      return;
    }
    window.werkhub.done(okText);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-path]");
    if (!form) { return; }
    event.preventDefault();
    var used = [];
    var path = form.getAttribute("data-path").replace(/\{(\w+)\}/g, function (_, name) {
      used.push(name);
      return encodeURIComponent(form.elements[name].value.trim());
    });
    var sent = body(form, used);
    if (form.getAttribute("data-body") === "map") {
      Object.keys(sent).forEach(function (k) { if (typeof sent[k] !== "number") { delete sent[k]; } });
    }
    var method = form.getAttribute("data-method") || "POST";
    if (form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) { return; }
    call(method, path, method === "DELETE" ? undefined : sent).then(function (data) {
      finish(form, data, form.getAttribute("data-done") || "Done.");
    }, function (err) { show(err.message, false); });
  });

  document.addEventListener("click", function (event) {
    var el = event.target.closest("[data-org-call]");
    if (!el) { return; }
    event.preventDefault();
    if (el.hasAttribute("data-confirm") && !window.confirm(el.getAttribute("data-confirm"))) { return; }
    var parts = el.getAttribute("data-org-call").split(" ");
    var sent = el.hasAttribute("data-body") ? JSON.parse(el.getAttribute("data-body")) : undefined;
    el.disabled = true;
    call(parts[0], parts[1], sent).then(function (data) {
      finish(el, data, el.getAttribute("data-done") || "Done.");
    }, function (err) { el.disabled = false; show(err.message, false); });
  });
}());
