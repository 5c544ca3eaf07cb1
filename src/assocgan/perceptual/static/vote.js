// The voting page without page loads: a vote is sent as JSON and the answer holds the next group's HTML.
// Number keys pick a version. Without this script the page is a plain form and works the same.
(function () {
  "use strict";
  var busy = false;

  function form() {
    return document.querySelector("form.vote");
  }

  function flash(text) {
    var main = document.querySelector("main");
    var p = main.querySelector(".flash");
    if (!p) {
      p = document.createElement("p");
      p.className = "flash";
      p.setAttribute("role", "alert");
      main.insertBefore(p, main.querySelector("h1"));
    }
    p.textContent = text;
  }

  function show(html) {
    var box = document.createElement("template");
    box.innerHTML = html.trim();
    document.querySelector("main").replaceWith(box.content.firstElementChild);
    bind();
  }

  function send(f, choice) {
    if (busy) return;
    busy = true;
    f.classList.add("busy");
    fetch(f.action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify({ group: Number(f.elements.group.value), choice: Number(choice) }),
    })
      .then(function (r) {
        return r.json().then(function (data) {
          if (data.html) show(data.html); // the next group, also after "already voted" (from another window)
          if (!r.ok) flash(data.error || "not recorded");
        });
      })
      .catch(function (err) {
        f.classList.remove("busy");
        flash("Not sent (" + err.message + "); try again.");
      })
      .then(function () {
        busy = false;
      });
  }

  function bind() {
    var f = form();
    if (!f) return;
    f.addEventListener("submit", function (ev) {
      if (!ev.submitter || !ev.submitter.value) return; // an older browser: the plain form does it
      ev.preventDefault();
      send(f, ev.submitter.value);
    });
  }

  document.addEventListener("keydown", function (ev) {
    var f = form();
    if (!f || ev.altKey || ev.ctrlKey || ev.metaKey || !/^[1-9]$/.test(ev.key)) return;
    var b = f.querySelector('button.choice[value="' + ev.key + '"]');
    if (b) {
      ev.preventDefault();
      b.click();
    }
  });

  document.documentElement.classList.add("js");
  bind();
})();
