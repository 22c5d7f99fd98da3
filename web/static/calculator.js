/* Video calculator: the form's side of the live page.
 *
 * The page is a plain GET form rendered on the server (it works without JavaScript). With JavaScript, htmx (the
 * form's hx-* attributes) asks GET /video-calculator/results as the inputs change and swaps in the results the
 * server renders, with the size chips and hints; the server also keeps the address bar's query in step
 * (HX-Replace-Url), so the URL stays shareable. This script keeps the form's own fields in step: the length in
 * seconds or frames, a model's defaults, suggestion links that set the inputs instead of navigating, the other
 * length field and the shareable link after each update, and the message when no results come back.
 * Shared helpers: UI (common.js).
 */
(function () {
  "use strict";

  var root = document.getElementById("calc");
  var form = document.getElementById("calc-form");
  if (!root || !form || !window.htmx) return; // without htmx the page stays a plain form

  var MODELS = JSON.parse(document.getElementById("calc-models").textContent || "{}");
  var setText = UI.setText, setHidden = UI.setHidden;
  function $(id) {
    return document.getElementById(id);
  }
  var inputs = {
    model: $("f-model"),
    width: $("f-width"),
    height: $("f-height"),
    seconds: $("f-seconds"),
    frames: $("f-frames"),
    fps: $("f-fps"),
    audio: $("f-audio"),
    gpu: $("f-gpu"),
    steps: $("f-steps"),
    lora: $("f-lora"),
  };

  function checkRadio(name, value) {
    var radio = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (radio) radio.checked = true;
  }
  function by() {
    var checked = form.querySelector('input[name="by"]:checked');
    return checked ? checked.value : "seconds";
  }
  // The length is given in seconds or in frames; the other field shows what it works out to.
  function setBy(value) {
    checkRadio("by", value);
    inputs.seconds.classList.toggle("derived", value !== "seconds");
    inputs.frames.classList.toggle("derived", value !== "frames");
  }

  // A model's defaults, set before its results come back (the request reads the form after its delay).
  function modelChanged(resetPrecision) {
    var m = MODELS[inputs.model.value];
    if (!m) return;
    inputs.fps.placeholder = m.fps + " (model default)";
    inputs.steps.placeholder = String(inputs.lora.checked ? 4 : m.steps);
    var s2v = m.kind === "s2v";
    setHidden($("audio-field"), !s2v);
    inputs.audio.disabled = !s2v;
    if (resetPrecision) checkRadio("precision", m.default_precision);
  }

  // Suggestions, size presets, nearest lengths and the swap link set the inputs, then the results follow at once.
  function apply(params) {
    Object.keys(params).forEach(function (key) {
      var v = params[key];
      v = v === null || v === undefined ? "" : String(v);
      if (key === "lora") inputs.lora.checked = v === "1" || v === "true";
      else if (key === "precision") checkRadio("precision", v);
      else if (inputs[key]) inputs[key].value = v;
      if (key === "frames" || key === "seconds") setBy(key);
      if (key === "model") modelChanged(false);
    });
    htmx.trigger(form, "recalc");
  }

  form.addEventListener("input", function (ev) {
    var el = ev.target;
    if (el === inputs.seconds) setBy("seconds");
    if (el === inputs.frames) setBy("frames");
    if (el.name === "by") setBy(el.value);
    if (el === inputs.model) modelChanged(true);
    if (el === inputs.lora) modelChanged(false);
  });

  root.addEventListener("click", function (ev) {
    var a = ev.target.closest ? ev.target.closest("a") : null;
    if (!a || !root.contains(a) || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
    if (a.dataset.params) {
      ev.preventDefault();
      apply(JSON.parse(a.dataset.params));
    } else if (a.dataset.width) {
      ev.preventDefault();
      apply({ width: a.dataset.width, height: a.dataset.height });
    } else if (a.id === "swap") {
      ev.preventDefault();
      apply({ width: inputs.height.value, height: inputs.width.value });
    }
  });

  // The shareable link as this browser reaches the page (behind RunPod's proxy the server cannot know it).
  function setShare(query) {
    var share = $("share-url");
    var value = location.origin + root.dataset.page + "?" + query;
    if (share && share.value !== value) share.value = value;
  }

  // After each swap: new results (the message hidden) or only a message (malformed input: the last results stay,
  // marked stale). The length field that is not driving shows what the length works out to.
  function sync() {
    var body = $("results-body");
    $("results").classList.toggle("stale", !$("calc-error").hidden);
    if (!body) return;
    if (by() === "seconds" && document.activeElement !== inputs.frames) inputs.frames.value = body.dataset.frames;
    if (by() === "frames" && document.activeElement !== inputs.seconds) inputs.seconds.value = body.dataset.seconds;
    setShare(body.dataset.query);
  }
  function showError(message) {
    var box = $("calc-error");
    setText(box, message);
    setHidden(box, false);
    $("results").classList.add("stale");
  }
  document.body.addEventListener("htmx:afterSwap", function (ev) {
    if (ev.target.id === "results-body" || ev.target.id === "calc-error") sync();
  });
  document.body.addEventListener("htmx:beforeSwap", function (ev) {
    // Redirected to the login page instead of results: the session ended.
    var xhr = ev.detail.xhr;
    if (xhr.status === 200 && new URL(xhr.responseURL, location.href).pathname !== form.getAttribute("hx-get")) {
      ev.detail.shouldSwap = false;
      showError("Your session ended: reload the page to log in again.");
    }
  });
  document.body.addEventListener("htmx:responseError", function (ev) {
    showError("The server answered HTTP " + ev.detail.xhr.status + ".");
  });
  document.body.addEventListener("htmx:sendError", function () {
    showError(UI.unreachable("Failed to fetch"));
  });

  var copy = $("copy-share");
  if (copy && navigator.clipboard) {
    copy.hidden = false;
    copy.addEventListener("click", function () {
      navigator.clipboard.writeText($("share-url").value).then(
        function () {
          setText(copy, "Copied");
          setTimeout(function () {
            setText(copy, "Copy");
          }, 1500);
        },
        function () {
          $("share-url").select();
        }
      );
    });
  }
  $("share-url").addEventListener("focus", function (ev) {
    ev.target.select();
  });

  // Live from here on: the button is only needed without JavaScript.
  setHidden($("calc-submit"), true);
  setShare($("results-body").dataset.query);
  setHidden($("live"), false);
  setBy(by());
})();
