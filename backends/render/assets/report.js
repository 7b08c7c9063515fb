// The static report's script (inlined into every index.html by backends/render/report.py).
// Finds every section, parses its embedded spec and draws it; data-rendered becomes "ok" or "error".
// Then wires the links: a source view's "link" selection parameter picks a precomputed variant of
// the target view (drawn on first use, then kept), or the nearest precomputed position.
// Link keys, labels and hints come from the link-kinds table the page embeds (grammar/link_kinds.py),
// the same one the dashboard uses.
(function () {
  "use strict";
  var options = {renderer: "svg", actions: {export: true, source: false, compiled: false, editor: false}};
  var views = {}, pending = [];
  var images = null;
  function fail(section, target, err) {
    target.setAttribute("data-rendered", "error");
    var p = document.createElement("p");
    p.className = "error";
    p.textContent = "This chart could not be drawn: " + err;
    target.replaceChildren(p);
    console.error("interpgram: element " + section.id + ": " + err);
  }
  function embed(section, target, spec) {
    return vegaEmbed(target, spec, options).then(function (res) {
      target.setAttribute("data-rendered", "ok");
      return res.view;
    }, function (err) { fail(section, target, err); return null; });
  }
  document.querySelectorAll("section.element").forEach(function (section) {
    var target = section.querySelector(".chart");
    var spec;
    try {
      spec = JSON.parse(section.querySelector("script.spec").textContent);
    } catch (err) { fail(section, target, err); return; }
    pending.push(embed(section, target, spec).then(function (view) { if (view) views[section.dataset.view] = view; }));
  });
  // ------------------------------------------------------------------ links
  var table = document.getElementById("interpgram-links");
  if (!table) return;
  var links = JSON.parse(table.textContent);
  function restore(x) {  // images shared between variants are stored once: "@img:N" -> data URL
    if (typeof x === "string") return x.lastIndexOf("@img:", 0) === 0 ? images[+x.slice(5)] : x;
    if (Array.isArray(x)) return x.map(restore);
    if (x && typeof x === "object") { var o = {}; Object.keys(x).forEach(function (k) { o[k] = restore(x[k]); }); return o; }
    return x;
  }
  function variantsOf(section) {
    if (!section._variants) {
      var s = section.querySelector("script.variants");
      if (images === null) { var t = document.getElementById("interpgram-images"); images = t ? JSON.parse(t.textContent) : []; }
      section._variants = s ? JSON.parse(s.textContent) : {};
    }
    return section._variants;
  }
  var kinds = (function () { var t = document.getElementById("interpgram-link-kinds"); return t ? JSON.parse(t.textContent) : {kinds: {}, verbs: {}}; })();
  function keyOf(kind, v) {  // a "link" selection's value -> its key ("3,5", "17"): link_kinds.selection_key
    if (!v || typeof v !== "object" || !kinds.kinds[kind]) return null;
    var parts = kinds.kinds[kind].fields.map(function (f) { var x = v[f]; return Array.isArray(x) ? x[0] : x; });
    if (parts.some(function (x) { return x === undefined || x === null; })) return null;
    return parts.join(",");
  }
  function nearest(L, key) {
    if (L.kind !== "position" || !L.keys.length) return null;
    var p = key.split(",").map(Number), best = null, bd = Infinity;
    L.keys.forEach(function (k) {
      var q = k.split(",").map(Number), d = (q[0] - p[0]) * (q[0] - p[0]) + (q[1] - p[1]) * (q[1] - p[1]);
      if (d < bd) { bd = d; best = k; }
    });
    return best;
  }
  function label(L, key) {  // how a selection reads: link_kinds.label
    var t = kinds.kinds[L.kind] ? kinds.kinds[L.kind].label : "{0}", parts = String(key).split(",");
    if (!L.layer) t = t.replace(" of {layer}", "").replace("{layer}:", "");
    var name = L.names && L.names[parts[0]] !== undefined ? L.names[parts[0]] : key;
    return t.replace(/\{(\w+)\}/g, function (m, f) {
      if (f === "layer") return L.layer || "";
      if (f === "name") return name;
      if (f === "number") return String(+parts[0] + 1);
      return parts[+f] !== undefined ? parts[+f] : m;
    });
  }
  function show(L, key) {
    var section = document.getElementById("el-" + L.target);
    if (!section) return;
    var caption = section.querySelector(".selection");
    var variants = variantsOf(section), shown = key, note = "";
    if (!(L.link + "|" + key in variants)) {
      shown = nearest(L, key);
      if (shown === null) {
        caption.textContent = label(L, key) + " is not precomputed in this static report (the " + L.keys.length +
          " it holds are those the source shows); interpgram serve computes any selection live";
        section.dataset.selected = "";
        return;
      }
      note = " (this report precomputes " + L.keys.length + " of " + L.total + " positions; nearest shown: " + label(L, shown) + ")";
    }
    var id = L.link + "|" + shown;
    section.querySelectorAll(".chart").forEach(function (d) { d.hidden = true; });
    var div = null;
    section.querySelectorAll(".chart[data-variant]").forEach(function (d) { if (d.dataset.variant === id) div = d; });
    if (!div) {
      div = document.createElement("div");
      div.className = "chart";
      div.dataset.variant = id;
      div.setAttribute("role", "figure");
      section.appendChild(div);
      embed(section, div, restore(variants[id])).then(function (view) { if (view) wire(L.target, view); });
    }
    div.hidden = false;
    section.dataset.selected = id;
    caption.innerHTML = "";
    var b = document.createElement("b");
    b.textContent = label(L, key);
    caption.append("selected in " + L.source_element + " (" + L.event + "): ", b, note);
  }
  function wire(vid, view) {  // the links whose source is view `vid` (its base chart or a variant of it)
    links.forEach(function (L) {
      if (L.source !== vid) return;
      try {
        view.addSignalListener("link", function (name, value) {
          var key = keyOf(L.kind, value);
          if (key !== null) show(L, key);
        });
      } catch (err) { console.error("interpgram: link " + L.label + ": " + err); }
    });
  }
  Promise.all(pending).then(function () {
    Object.keys(views).forEach(function (vid) { wire(vid, views[vid]); });
    document.body.setAttribute("data-links", "ready");
  });
})();
