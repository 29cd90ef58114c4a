/* werkhub federation pages: the forms whose JSON body is not flat (orgs.js sends the flat
   ones: accept, decline, invite, revoke, leave, stop). Create a federation (the app as
   {template} or {folder}, secure aggregation as null/true/false, the invited organisations
   as a list, the run configuration as JSON) and start a run (rounds, run configuration).
   Requests go through werkhub.js's helper (window.werkhub.call) with the CSRF header. */
(function () {
  "use strict";
  var call = window.werkhub.call;
  var show = window.werkhub.show;
  var SECAGG = { "": null, on: true, off: false };

  function runConfig(field) {
    var text = field.value.trim();
    if (!text) { return undefined; }
    var parsed;
    try { parsed = JSON.parse(text); } catch (e) {
      throw new Error("Run configuration: not JSON (" + e.message + ").");
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new Error('Run configuration: give a JSON object, e.g. {"local-epochs": 2}.');
    }
    return parsed;
  }

  function createBody(f) {
    var app = f.app_kind.value === "folder" ? { folder: f.folder.value.trim() } : { template: f.template.value };
    var body = {
      name: f.name.value.trim(),
      app: app,
      strategy: f.strategy.value,
      rounds: parseInt(f.rounds.value, 10),
      min_parties: parseInt(f.min_parties.value, 10),
      secure_aggregation: SECAGG[f.secure_aggregation.value],
      invite: f.invite.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean)
    };
    var config = runConfig(f.run_config);
    if (config !== undefined) { body.run_config = config; }
    return body;
  }

  function runBody(f) {
    var body = {};
    if (f.rounds.value.trim()) { body.rounds = parseInt(f.rounds.value, 10); }
    var config = runConfig(f.run_config);
    if (config !== undefined) { body.run_config = config; }
    return body;
  }

  var create = document.getElementById("fed-create");
  if (create) {
    // the app comes from one of the templates or from a folder in the home: show that field
    var f = create.elements;
    f.app_kind.addEventListener("change", function () {
      var folder = f.app_kind.value === "folder";
      f.template.parentNode.hidden = folder;
      f.folder.parentNode.hidden = !folder;
      f.folder.required = folder;
    });
    create.addEventListener("submit", function (event) {
      event.preventDefault();
      var body;
      try { body = createBody(create.elements); } catch (err) { show(err.message, false); return; }
      call("POST", "/federations", body).then(function (fed) {
        sessionStorage.setItem("werkhub-message", "Federation " + fed.name + " created.");
        var api = document.querySelector('meta[name="werkhub-api"]').getAttribute("content");
        window.location.assign(api.replace(/\/api$/, "") + "/federations/" + fed.id);
      }, function (err) { show(err.message, false); });
    });
  }

  document.querySelectorAll("form[data-fed-run]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body;
      try { body = runBody(form.elements); } catch (err) { show(err.message, false); return; }
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      call("POST", form.getAttribute("data-fed-run"), body).then(function (run) {
        window.werkhub.done("Run " + run.id + " started.");
      }, function (err) { button.disabled = false; show(err.message, false); });
    });
  });
}());
