/* Video calculator: recomputes as the inputs change.
 *
 * The page is a plain GET form rendered on the server (it works without JavaScript). Here every change
 * calls GET /api/video-calculator with the form's query, updates the results in place (text and attributes;
 * lists are rebuilt) and keeps the address bar's query in step (history.replaceState), so the URL stays
 * shareable. Suggestion links, size presets and nearest lengths set the inputs instead of navigating.
 * Server strings only ever go through textContent. Shared helpers: UI (common.js).
 */
(function () {
  "use strict";

  var root = document.getElementById("calc");
  var form = document.getElementById("calc-form");
  if (!root || !form) return;

  var DEBOUNCE_MS = 150;
  var apiUrl = root.dataset.api;
  var pageUrl = root.dataset.page;
  var MODELS = JSON.parse(document.getElementById("calc-models").textContent || "{}");
  var results = document.getElementById("results");
  var errorBox = document.getElementById("calc-error");

  var field = UI.field, setText = UI.setText, setHidden = UI.setHidden, setData = UI.setData;
  function $(id) {
    return document.getElementById(id);
  }
  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") el.textContent = v;
      else if (k === "className") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    });
    (children || []).forEach(function (c) {
      if (c) el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return el;
  }

  // --- the form as a query string ----------------------------------------------------------------------
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

  // radio groups: the checked value (or `fallback`), and checking one
  function radioValue(name, fallback) {
    var checked = form.querySelector('input[name="' + name + '"]:checked');
    return checked ? checked.value : fallback;
  }
  function checkRadio(name, value) {
    var radio = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (radio) radio.checked = true;
  }
  function by() {
    return radioValue("by", "seconds");
  }
  function setBy(value) {
    checkRadio("by", value);
    inputs.seconds.classList.toggle("derived", value !== "seconds");
    inputs.frames.classList.toggle("derived", value !== "frames");
  }
  function precision() {
    return radioValue("precision", "");
  }
  function setPrecision(value) {
    checkRadio("precision", value);
  }
  function val(el) {
    return el && !el.disabled ? String(el.value).trim() : "";
  }

  // The same order as the server's canonical query (Inputs.query), so URLs look alike.
  function pairs() {
    var out = [
      ["model", val(inputs.model)],
      ["width", val(inputs.width)],
      ["height", val(inputs.height)],
    ];
    if (by() === "frames") out.push(["frames", val(inputs.frames)]);
    else out.push(["seconds", val(inputs.seconds)]);
    out.push(["fps", val(inputs.fps)], ["audio", val(inputs.audio)]);
    out.push(["gpu", val(inputs.gpu)], ["precision", precision()], ["steps", val(inputs.steps)]);
    if (inputs.lora && inputs.lora.checked) out.push(["lora", "1"]);
    return out.filter(function (p) {
      return p[1] !== "";
    });
  }
  function queryString() {
    return pairs()
      .map(function (p) {
        return encodeURIComponent(p[0]) + "=" + encodeURIComponent(p[1]);
      })
      .join("&");
  }

  // --- setting inputs (suggestions, chips) -------------------------------------------------------------
  function apply(params) {
    Object.keys(params).forEach(function (key) {
      var v = params[key];
      v = v === null || v === undefined ? "" : String(v);
      if (key === "lora") inputs.lora.checked = v === "1" || v === "true";
      else if (key === "precision") setPrecision(v);
      else if (inputs[key]) inputs[key].value = v;
      if (key === "frames" || key === "seconds") setBy(key);
      if (key === "model") modelChanged(false);
    });
    recompute(0);
  }

  function modelChanged(resetPrecision) {
    var m = MODELS[inputs.model.value];
    if (!m) return;
    inputs.fps.placeholder = m.fps + " (model default)";
    inputs.steps.placeholder = String(inputs.lora.checked ? 4 : m.steps);
    var s2v = m.kind === "s2v";
    setHidden($("audio-field"), !s2v);
    inputs.audio.disabled = !s2v;
    setText($("multiple-hint"), "multiples of " + m.multiple);
    if (resetPrecision) setPrecision(m.default_precision);
    renderSizeChips(m.sizes);
  }

  function renderSizeChips(sizes) {
    var box = $("size-presets");
    if (!box) return;
    var w = Number(inputs.width.value);
    var hh = Number(inputs.height.value);
    box.replaceChildren.apply(
      box,
      sizes.map(function (s) {
        return h("a", {
          className: "chip" + (s[0] === w && s[1] === hh ? " on" : ""),
          href: "?" + queryWith({ width: s[0], height: s[1] }),
          "data-width": s[0],
          "data-height": s[1],
          text: s[0] + "\u00d7" + s[1],
        });
      })
    );
  }

  function queryWith(changes) {
    var map = {};
    var order = [];
    pairs().forEach(function (p) {
      map[p[0]] = p[1];
      order.push(p[0]);
    });
    Object.keys(changes).forEach(function (k) {
      if (k === "frames") delete map.seconds;
      if (k === "seconds") delete map.frames;
      if (!(k in map)) order.push(k);
      map[k] = String(changes[k]);
    });
    return order
      .filter(function (k, i) {
        return k in map && map[k] !== "" && order.indexOf(k) === i;
      })
      .map(function (k) {
        return encodeURIComponent(k) + "=" + encodeURIComponent(map[k]);
      })
      .join("&");
  }

  // --- rendering ---------------------------------------------------------------------------------------
  function suggestionLink(s) {
    var a = h("a", { className: "suggest", href: "?" + s.query, text: s.label });
    a.dataset.params = JSON.stringify(s.params);
    return a;
  }
  function renderMessages(list, items, kind) {
    list.replaceChildren.apply(
      list,
      items.map(function (m) {
        var li = h("li", { className: "msg msg-" + kind, "data-field": m.field }, [
          h("span", { className: "msg-text", text: m.message }),
        ]);
        if (m.suggestions && m.suggestions.length) {
          li.appendChild(h("span", { className: "suggests" }, m.suggestions.map(suggestionLink)));
        }
        return li;
      })
    );
  }
  function renderList(ul, items) {
    if (!ul) return;
    ul.replaceChildren.apply(
      ul,
      items.map(function (t) {
        return h("li", { text: t });
      })
    );
  }
  function renderEstimate(box, e) {
    setText(field(box, "anchor"), e.anchor);
    setText(field(box, "method"), e.method);
    renderList(field(box, "assumptions"), e.assumptions || []);
    renderList(field(box, "published"), e.published || []);
    setHidden(field(box, "published-head"), !(e.published && e.published.length));
  }

  function renderFiles(f, t) {
    setText(field($("files"), "files_summary"), t.files_summary);
    var body = $("files-body");
    body.replaceChildren.apply(
      body,
      f.files.map(function (r) {
        var role = h("td", { className: "f-role" }, [r.role]);
        if (r.note) role.appendChild(h("div", { className: "f-note", text: r.note }));
        var name = h("td", { className: "f-name" }, [h("span", { className: "mono", title: r.dest, text: r.filename })]);
        if (r.id) name.appendChild(h("div", { className: "f-id", text: "manifest id " + r.id }));
        return h("tr", { "data-status": r.status, "data-id": r.id || "" }, [
          role,
          name,
          h("td", { className: "f-size", text: r.size_text }),
          h("td", { className: "f-status" }, [h("span", { className: "fstatus", "data-status": r.status, text: r.status })]),
        ]);
      })
    );
    var actions = $("files-actions");
    actions.querySelectorAll("form").forEach(function (el) {
      el.remove();
    });
    var first = actions.firstChild;
    f.presets.forEach(function (p) {
      var formEl = h("form", { method: "post", action: p.url, className: "act" }, [
        h("input", { type: "hidden", name: "csrf_token", value: UI.csrf }),
        h("button", {
          type: "submit",
          className: "btn btn-primary btn-sm",
          "data-testid": "start-preset",
          title: p.description || "",
          text: "Download " + p.name,
        }),
      ]);
      actions.insertBefore(formEl, first);
    });
    setHidden($("files-hint"), !f.not_in_manifests);
  }

  function render(d) {
    var t = d.text;
    var summary = $("summary");
    setData(summary, "valid", d.valid ? "yes" : "no");
    setData(summary, "offload", d.vram.offload);
    ["title", "verdict", "frames_sub", "duration_sub", "latent_sub", "tokens_sub", "vram_sub", "time_sub"].forEach(
      function (k) {
        setText(field(summary, k), t[k]);
      }
    );
    setText(field(summary, "frames"), String(d.frames));
    setText(field(summary, "duration"), t.duration);
    setText(field(summary, "latent_frames"), String(d.latent_frames));
    setText(field(summary, "tokens"), t.tokens);
    setText(field(summary, "vram"), t.vram);
    var timeStat = field(summary, "time_short");
    setText(timeStat, t.time_short);
    if (timeStat) timeStat.title = t.time;

    renderMessages($("problems"), d.problems, "problem");
    renderMessages($("warnings"), d.warnings, "warning");
    setHidden($("msgs"), !d.problems.length && !d.warnings.length);

    var comfy = $("comfy");
    ["length", "size", "latent", "sampling", "chunks"].forEach(function (k) {
      setText(field(comfy, k), t[k]);
    });
    setHidden($("chunks-row"), !d.chunks);
    var nearest = $("nearest");
    nearest.replaceChildren.apply(
      nearest,
      d.links.nearest.map(function (n) {
        var a = h("a", { className: "chip" + (n.frames === d.frames ? " on" : ""), href: "?" + n.query, text: n.label });
        a.dataset.params = JSON.stringify({ frames: n.frames });
        return a;
      })
    );
    renderList($("notes"), d.notes);

    var est = $("estimates");
    setText(field(est, "estimates_on"), t.estimates_on);
    var vbox = $("est-vram");
    setData(vbox, "offload", d.vram.offload);
    setText(field(vbox, "vram"), t.vram);
    setText(field(vbox, "gauge"), t.gauge);
    UI.setProgress(vbox.querySelector("progress"), t.gauge_pct);
    renderEstimate(vbox, d.vram);
    var tbox = $("est-time");
    setText(field(tbox, "time"), t.time);
    setText(field(tbox, "time_detail"), t.time_detail);
    renderEstimate(tbox, d.time);

    renderFiles(d.files, t);

    setShare(d.query);
    var swap = $("swap");
    if (swap) swap.setAttribute("href", "?" + d.links.swap);

    // The length field that is not driving shows what it works out to.
    if (by() === "seconds" && document.activeElement !== inputs.frames) inputs.frames.value = String(d.frames);
    if (by() === "frames" && document.activeElement !== inputs.seconds) {
      inputs.seconds.value = String(Math.round(d.duration_s * 10000) / 10000);
    }
    renderSizeChips(d.model.sizes);
  }

  // The shareable link as this browser reaches the page (behind RunPod's proxy the server cannot know it).
  function setShare(query) {
    var share = $("share-url");
    var value = location.origin + pageUrl + "?" + query;
    if (share && share.value !== value) share.value = value;
  }

  // --- computing ---------------------------------------------------------------------------------------
  var timer = null;
  var seq = 0;

  function showError(message) {
    setText(errorBox, message);
    setHidden(errorBox, false);
    results.classList.add("stale");
  }
  function clearError() {
    setHidden(errorBox, true);
    results.classList.remove("stale");
  }

  function compute() {
    var q = queryString();
    var mine = ++seq;
    root.classList.add("busy");
    UI.request("GET", apiUrl + "?" + q)
      .then(function (res) {
        if (mine !== seq) return; // a newer computation is on its way
        if (res.ok) {
          render(res.body);
          clearError();
          history.replaceState(null, "", pageUrl + "?" + res.body.query);
        } else if (res.status === 401) {
          showError("Your session ended: reload the page to log in again.");
        } else {
          showError(res.body.error || "The server answered HTTP " + res.status + ".");
          history.replaceState(null, "", pageUrl + "?" + q);
        }
      })
      .catch(function (e) {
        if (mine === seq) showError(UI.unreachable(e));
      })
      .then(function () {
        if (mine === seq) root.classList.remove("busy");
      });
  }

  function recompute(delay) {
    clearTimeout(timer);
    timer = setTimeout(compute, delay === undefined ? DEBOUNCE_MS : delay);
  }

  form.addEventListener("input", function (ev) {
    var el = ev.target;
    if (el === inputs.seconds) setBy("seconds");
    if (el === inputs.frames) setBy("frames");
    if (el.name === "by") setBy(el.value);
    if (el === inputs.model) modelChanged(true);
    if (el === inputs.lora) modelChanged(false);
    recompute();
  });
  form.addEventListener("change", function (ev) {
    // <select>s fire "input" in modern browsers too; "change" catches the rest (and is harmless twice).
    if (ev.target.tagName === "SELECT" || ev.target.type === "radio" || ev.target.type === "checkbox") recompute();
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    recompute(0);
  });

  // Suggestions, size presets, nearest lengths and the swap link set the inputs in place.
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
  if (root.dataset.query) setShare(root.dataset.query);
  setHidden($("live"), false);
  setBy(by());
})();
