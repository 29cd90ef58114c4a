/* werkhub pages: send state changes to the JSON API with the CSRF header; no libraries.
   The one fetch helper of every page: window.werkhub = {call, show, done} (orgs.js and
   federations.js use it; load them after this file, in the page's "scripts" block). */
(function () {
  "use strict";
  var meta = function (name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute("content") : "";
  };
  var API = meta("werkhub-api");
  var message = document.getElementById("message");

  function show(text, ok) {
    if (!message) { return; }
    message.textContent = text;
    message.className = "message " + (ok ? "ok" : "error");
    if (message.scrollIntoView) { message.scrollIntoView({ block: "nearest" }); }
  }

  function call(method, path, body) {
    var opts = {
      method: method,
      credentials: "same-origin",
      headers: { "X-Werkhub-Csrf": meta("werkhub-csrf"), "Accept": "application/json" }
    };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(API + path, opts).then(function (reply) {
      return reply.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
        if (!reply.ok) {
          var detail = (data && data.detail) || reply.statusText;
          if (Array.isArray(detail)) {  // pydantic's list of problems: "field: what"
            detail = detail.map(function (d) { return (d.loc || []).slice(-1)[0] + ": " + d.msg; }).join("; ");
          }
          if (data && data.earliest_free && data.earliest_free.start) {
            detail += " (earliest free: " + new Date(data.earliest_free.start).toLocaleString() + ")";
          }
          throw new Error(detail);
        }
        return data;
      });
    });
  }

  function done(text) {
    sessionStorage.setItem("werkhub-message", text);
    window.location.reload();
  }

  window.werkhub = { call: call, show: show, done: done };

  var saved = sessionStorage.getItem("werkhub-message");
  if (saved) { show(saved, true); sessionStorage.removeItem("werkhub-message"); }

  var hour = 3600 * 1000;
  function endpointPath(el) { return "/endpoints/" + encodeURIComponent(el.dataset.name); }
  function owner(el) { return "?owner=" + encodeURIComponent(el.dataset.owner); }
  var actions = {
    extend: function (id, el) {
      var end = new Date(new Date(el.dataset.end).getTime() + hour);
      return call("PATCH", "/bookings/" + id, { end: end.toISOString() })
        .then(function () { return "Booking " + id + " extended by one hour."; });
    },
    shorten: function (id, el) {
      var end = new Date(new Date(el.dataset.end).getTime() - hour);
      return call("PATCH", "/bookings/" + id, { end: end.toISOString() })
        .then(function () { return "Booking " + id + " shortened by one hour."; });
    },
    cancel: function (id) {
      return call("DELETE", "/bookings/" + id).then(function () { return "Booking " + id + " cancelled."; });
    },
    release: function (id) {
      return call("POST", "/bookings/" + id + "/release").then(function () { return "Booking " + id + " released."; });
    },
    unwait: function (id) {
      return call("DELETE", "/waitlist/" + id).then(function () { return "Left the waitlist."; });
    },
    "job-run": function (id) {
      return call("POST", "/jobs/" + id + "/run").then(function () { return "The job is queued to run now."; });
    },
    "job-pause": function (id) {
      return call("POST", "/jobs/" + id + "/pause").then(function () { return "Job paused."; });
    },
    "job-resume": function (id) {
      return call("POST", "/jobs/" + id + "/resume").then(function () { return "Job resumed."; });
    },
    "notice-read": function (id) {
      return call("POST", "/notifications/read", { ids: [parseInt(id, 10)] })
        .then(function () { return "Notice dismissed."; });
    },
    "token-revoke": function (id, el) {
      return call("DELETE", endpointPath(el) + "/tokens/" + id + owner(el))
        .then(function () { return "Token " + id + " of " + el.dataset.name + " revoked."; });
    },
    "endpoint-delete": function (id, el) {
      if (!window.confirm("Delete the endpoint " + el.dataset.name + "? Its URL stops answering.")) {
        return Promise.reject(new Error("Nothing deleted."));
      }
      return call("DELETE", endpointPath(el) + owner(el))
        .then(function () { return "Endpoint " + el.dataset.name + " deleted."; });
    },
    "notices-read": function () {
      return call("POST", "/notifications/read", { all: true })
        .then(function (data) { return data.marked + " notice(s) marked as read."; });
    }
  };

  document.addEventListener("click", function (event) {
    var el = event.target.closest("[data-action]");
    if (el && actions[el.dataset.action]) {
      event.preventDefault();
      el.disabled = true;
      actions[el.dataset.action](el.dataset.id, el).then(done, function (err) {
        el.disabled = false;
        show(err.message, false);
      });
      return;
    }
    var cell = event.target.closest("td[data-start]");
    var form = document.getElementById("book-form");
    if (cell && form) {
      form.elements.start.value = cell.dataset.start;
      form.elements.gpu_type.value = cell.closest("table").dataset.type;
      form.elements.now.checked = false;
      form.elements.start.focus();
    }
  });

  // model endpoints: create a token (shown once, here, never stored by the page)
  document.querySelectorAll("form.token-form").forEach(function (tokenForm) {
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var f = tokenForm.elements;
      var body = { note: f.note.value, expires_in_days: parseInt(f.days.value, 10) || 90 };
      call("POST", endpointPath(tokenForm) + "/tokens" + owner(tokenForm), body).then(function (t) {
        var shown = tokenForm.nextElementSibling;
        shown.textContent = "";
        shown.appendChild(document.createTextNode("Token " + t.id + " (shown once, copy it now): "));
        var code = document.createElement("code");
        code.textContent = t.token;
        shown.appendChild(code);
        shown.hidden = false;
        f.note.value = "";
        show("Token " + t.id + " created; reload the page to see it in the list.", true);
      }, function (err) { show(err.message, false); });
    });
  });

  // model endpoints, federation runs: fetch the live part again every few seconds, until
  // it is gone (404) or says it will not change any more (an element with data-live-done)
  document.querySelectorAll("[data-live]").forEach(function (box) {
    var every = (parseFloat(box.dataset.refresh) || 5) * 1000;
    function again() {
      if (document.hidden) { window.setTimeout(again, every); return; }
      fetch(box.dataset.live, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (reply) {
          if (reply.status === 404) { return null; }  // deleted: stop asking
          return reply.ok ? reply.text() : "";
        })
        .then(function (html) {
          if (html === null) { return; }
          if (html) { box.innerHTML = html; }
          if (box.querySelector("[data-live-done]")) { return; }
          window.setTimeout(again, every);
        }, function () { window.setTimeout(again, every * 3); });
    }
    window.setTimeout(again, every);
  });

  var form = document.getElementById("book-form");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var f = form.elements;
      var minutes = Math.round(parseFloat(f.hours.value) * 60);
      var body = { gpu_type: f.gpu_type.value, count: parseInt(f.count.value, 10) };
      if (f.now.checked) {
        body.start = "now";
        body.duration_minutes = minutes;
      } else {
        if (!f.start.value) { show("Choose a start time.", false); return; }
        var start = new Date(f.start.value);
        body.start = start.toISOString();
        body.end = new Date(start.getTime() + minutes * 60000).toISOString();
        if (f.waitlist.checked) {
          body.waitlist = true;
          body.latest_start = new Date(start.getTime() + 24 * hour).toISOString();
        }
      }
      call("POST", "/bookings", body).then(function (b) {
        if (b && b.latest_start) { done("The GPUs are taken: you are on the waitlist."); return; }
        done("Booked " + b.count + " x " + b.gpu_type + " (booking " + b.id + ").");
      }, function (err) { show(err.message, false); });
    });
  }
})();
