/*
 * jsPsych 8 plugin "reference-2afc": the reference two-alternative forced-choice trial.
 *
 * Screen: the 9 least activating reference images in a 3 x 3 grid on the left, the 9 most
 * activating in a 3 x 3 grid on the right, query images A and B in the centre, a question, and the
 * answer buttons under each query. With confidence on, each query has three buttons; they form one
 * six-point scale from "A, very sure" (far left) to "B, very sure" (far right):
 *
 *     A: [Very sure 1] [Sure 2] [Unsure 3]      B: [Unsure 8] [Sure 9] [Very sure 0]
 *
 * With confidence off each query has one button ("Choose A" key 1 or Left arrow, "Choose B" key 0
 * or Right arrow). Buttons and keys are locked for `response_lock_ms` after the screen appears.
 *
 * The screen is revealed only once every image has decoded (or after `image_timeout_ms`), and the
 * response time is measured with performance.now() from that moment.
 *
 * Either reference list may be empty (max-only and no-reference conditions): an empty side keeps
 * its space so the queries stay centred; with no references at all the queries stand alone.
 *
 * Loaded as a classic script after jspsych.js; defines the global `jsPsychReference2afc`.
 */
var jsPsychReference2afc = (function (jspsych) {
  "use strict";

  var PT = jspsych.ParameterType;

  var info = {
    name: "reference-2afc",
    version: "1.0.0",
    parameters: {
      /** URLs of the least activating reference images (shown left); may be empty. */
      references_min: { type: PT.IMAGE, array: true, default: [] },
      /** URLs of the most activating reference images (shown right); may be empty. */
      references_max: { type: PT.IMAGE, array: true, default: [] },
      /** URL of query image A (left of centre). */
      query_a: { type: PT.IMAGE, default: undefined },
      /** URL of query image B (right of centre). */
      query_b: { type: PT.IMAGE, default: undefined },
      /** Ordered-strip paradigm (Dey et al. 2020): strip A's image URLs, left to right. When both
       *  strips are given they replace the references and the queries. */
      strip_a: { type: PT.IMAGE, array: true, default: [] },
      /** Strip B's image URLs, left to right. */
      strip_b: { type: PT.IMAGE, array: true, default: [] },
      /** Milliseconds after the screen appears during which buttons and keys do nothing. */
      response_lock_ms: { type: PT.INT, default: 1500 },
      /** Ask for confidence (three buttons per query) or not (one button per query). */
      confidence: { type: PT.BOOL, default: true },
      /** The question above the images (HTML). null: a default that fits the references shown. */
      prompt: { type: PT.HTML_STRING, default: null },
      /** A small label above the question, e.g. "Practice"; null for none. */
      badge: { type: PT.STRING, default: null },
      /** Label above the left grid. */
      label_min: { type: PT.STRING, default: "Least activating" },
      /** Label above the right grid. */
      label_max: { type: PT.STRING, default: "Most activating" },
      /** Show the keyboard shortcuts on the buttons and under them. */
      show_key_hints: { type: PT.BOOL, default: true },
      /** Server id of the trial, copied into the data. */
      trial_id: { type: PT.INT, default: null },
      /** Reveal the screen after this long even if some images have not loaded. */
      image_timeout_ms: { type: PT.INT, default: 15000 },
    },
    data: {
      /** "a" or "b". */
      choice: { type: PT.STRING },
      /** 3 = very sure, 2 = sure, 1 = unsure; null when confidence is off. */
      confidence: { type: PT.INT },
      /** Response time in ms (performance.now() difference, not rounded) from the screen appearing. */
      rt_ms: { type: PT.FLOAT },
      /** "button" or "key". */
      response_source: { type: PT.STRING },
      /** The key pressed, when response_source is "key". */
      key: { type: PT.STRING },
      /** ISO 8601 time of the response from the browser clock. */
      client_time: { type: PT.STRING },
      /** The trial id parameter. */
      trial_id: { type: PT.INT },
      query_a: { type: PT.IMAGE },
      query_b: { type: PT.IMAGE },
      /** Number of images that failed to load (the screen was shown anyway). */
      images_failed: { type: PT.INT },
    },
  };

  // [choice, confidence, label, keys]; in screen order within each group.
  var CONFIDENCE_BUTTONS = {
    a: [
      ["a", 3, "Very sure", ["1"]],
      ["a", 2, "Sure", ["2"]],
      ["a", 1, "Unsure", ["3"]],
    ],
    b: [
      ["b", 1, "Unsure", ["8"]],
      ["b", 2, "Sure", ["9"]],
      ["b", 3, "Very sure", ["0"]],
    ],
  };
  var PLAIN_BUTTONS = {
    a: [["a", null, "Choose A", ["1", "arrowleft"]]],
    b: [["b", null, "Choose B", ["0", "arrowright"]]],
  };
  var KEY_NAMES = { arrowleft: "\u2190", arrowright: "\u2192" };

  function escapeAttr(s) {
    return String(s)
      .replace(/&/g, "&amp;")
      .replace(/"/g, "&quot;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;");
  }

  function refGrid(urls, side, label) {
    if (!urls || urls.length === 0) {
      return '<section class="r2afc-refs r2afc-refs-' + side + ' r2afc-refs-empty" aria-hidden="true"></section>';
    }
    var imgs = urls
      .map(function (u, i) {
        return (
          '<div class="r2afc-cell"><img class="r2afc-ref" src="' + escapeAttr(u) + '" alt="' +
          escapeAttr(label) + " example " + (i + 1) + '" draggable="false"></div>'
        );
      })
      .join("");
    return (
      '<section class="r2afc-refs r2afc-refs-' + side + '" id="r2afc-refs-' + side + '">' +
      '<h2 class="r2afc-label">' + escapeAttr(label) + "</h2>" +
      '<div class="r2afc-grid">' + imgs + "</div></section>"
    );
  }

  function buttonHtml(spec, showKeys) {
    var choice = spec[0], conf = spec[1], label = spec[2], keys = spec[3];
    var hint = showKeys
      ? '<span class="r2afc-key">' + keys.map(function (k) { return KEY_NAMES[k] || k; }).join(" / ") + "</span>"
      : "";
    return (
      '<button type="button" class="r2afc-btn jspsych-btn" disabled data-choice="' + choice + '"' +
      (conf === null ? "" : ' data-confidence="' + conf + '"') +
      ' data-keys="' + keys.join(" ") + '" aria-label="' + escapeAttr(label + " it is " + choice.toUpperCase()) + '">' +
      '<span class="r2afc-btn-label">' + escapeAttr(label) + "</span>" + hint + "</button>"
    );
  }

  function queryBlock(side, url, buttons, showKeys) {
    var letter = side.toUpperCase();
    return (
      '<div class="r2afc-query r2afc-query-' + side + '" id="r2afc-query-' + side + '">' +
      '<h2 class="r2afc-query-label">' + letter + "</h2>" +
      '<div class="r2afc-query-frame"><img class="r2afc-query-img" src="' + escapeAttr(url) +
      '" alt="Query image ' + letter + '" draggable="false"></div>' +
      '<div class="r2afc-buttons r2afc-buttons-' + side + '" role="group" aria-label="Answer ' + letter + '">' +
      buttons.map(function (b) { return buttonHtml(b, showKeys); }).join("") +
      "</div></div>"
    );
  }

  function stripBlock(side, urls, buttons, showKeys) {
    var letter = side.toUpperCase();
    var imgs = urls
      .map(function (u, i) {
        return '<img class="r2afc-strip-img" src="' + escapeAttr(u) + '" alt="Row ' + letter + " image " + (i + 1) +
          '" draggable="false">';
      })
      .join("");
    return (
      '<div class="r2afc-strip r2afc-strip-' + side + '" id="r2afc-strip-' + side + '">' +
      '<h2 class="r2afc-query-label">' + letter + "</h2>" +
      '<div class="r2afc-strip-row">' + imgs + "</div>" +
      '<div class="r2afc-buttons r2afc-buttons-' + side + '" role="group" aria-label="Answer ' + letter + '">' +
      buttons.map(function (b) { return buttonHtml(b, showKeys); }).join("") +
      "</div></div>"
    );
  }

  var STRIP_PROMPT = "Which row changes <em>gradually and steadily</em> from left to right?";

  function defaultPrompt(hasMin, hasMax) {
    if (hasMax) return "Which centre image matches the right-hand examples better?";
    if (hasMin) return "Which centre image matches the left-hand examples <em>less</em>?";
    return "Which image do you think activates the unit more strongly?";
  }

  class Reference2afcPlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      var self = this;
      var refsMin = trial.references_min || [];
      var refsMax = trial.references_max || [];
      var hasMin = refsMin.length > 0, hasMax = refsMax.length > 0;
      var buttons = trial.confidence ? CONFIDENCE_BUTTONS : PLAIN_BUTTONS;
      var isStrip = (trial.strip_a || []).length > 0 && (trial.strip_b || []).length > 0;
      var prompt = trial.prompt === null || trial.prompt === undefined
        ? (isStrip ? STRIP_PROMPT : defaultPrompt(hasMin, hasMax)) : trial.prompt;

      var keyHelp = "";
      if (trial.show_key_hints) {
        keyHelp = trial.confidence
          ? "Keys: <kbd>1</kbd> <kbd>2</kbd> <kbd>3</kbd> = A very sure / sure / unsure &nbsp;\u00b7&nbsp; " +
            "<kbd>8</kbd> <kbd>9</kbd> <kbd>0</kbd> = B unsure / sure / very sure"
          : "Keys: <kbd>1</kbd> or <kbd>\u2190</kbd> = A &nbsp;\u00b7&nbsp; <kbd>0</kbd> or <kbd>\u2192</kbd> = B";
      }

      var layoutClass = isStrip ? "r2afc-strips" : hasMin || hasMax ? "r2afc-with-refs" : "r2afc-no-refs";
      var stage = isStrip
        ? '<section class="r2afc-strip-stage" id="r2afc-centre">' +
          stripBlock("a", trial.strip_a, buttons.a, trial.show_key_hints) +
          stripBlock("b", trial.strip_b, buttons.b, trial.show_key_hints) +
          "</section>"
        : (hasMin || hasMax ? refGrid(refsMin, "min", trial.label_min) : "") +
          '<section class="r2afc-centre" id="r2afc-centre">' +
          '<div class="r2afc-queries">' +
          queryBlock("a", trial.query_a, buttons.a, trial.show_key_hints) +
          queryBlock("b", trial.query_b, buttons.b, trial.show_key_hints) +
          "</div>" +
          "</section>" +
          (hasMin || hasMax ? refGrid(refsMax, "max", trial.label_max) : "");
      display_element.innerHTML =
        '<div class="r2afc ' + layoutClass + '" id="r2afc" data-state="loading"' +
        (trial.trial_id === null || trial.trial_id === undefined ? "" : ' data-trial-id="' + escapeAttr(trial.trial_id) + '"') +
        ' style="visibility:hidden">' +
        (trial.badge ? '<p class="r2afc-badge" id="r2afc-badge">' + escapeAttr(trial.badge) + "</p>" : "") +
        '<p class="r2afc-prompt" id="r2afc-prompt">' + prompt + "</p>" +
        '<div class="r2afc-stage">' + stage + "</div>" +
        (keyHelp ? '<p class="r2afc-keyhelp" id="r2afc-keyhelp">' + keyHelp + "</p>" : "") +
        "</div>";

      var root = display_element.querySelector("#r2afc");
      var buttonEls = Array.prototype.slice.call(display_element.querySelectorAll(".r2afc-btn"));
      var keyMap = {};
      buttonEls.forEach(function (b) {
        b.getAttribute("data-keys").split(" ").forEach(function (k) { keyMap[k] = b; });
      });

      var t0 = null;
      var unlocked = false;
      var done = false;
      var keyListener = null;
      var imagesFailed = 0;

      function respond(btn, source, key) {
        if (done || !unlocked || t0 === null) return;
        done = true;
        var rt = performance.now() - t0;
        btn.classList.add("r2afc-chosen");
        buttonEls.forEach(function (b) { b.disabled = true; });
        if (keyListener) self.jsPsych.pluginAPI.cancelKeyboardResponse(keyListener);
        var conf = btn.getAttribute("data-confidence");
        self.jsPsych.finishTrial({
          choice: btn.getAttribute("data-choice"),
          confidence: conf === null ? null : parseInt(conf, 10),
          rt_ms: rt,
          response_source: source,
          key: key || null,
          client_time: new Date().toISOString(),
          trial_id: trial.trial_id,
          query_a: trial.query_a,
          query_b: trial.query_b,
          images_failed: imagesFailed,
        });
      }

      buttonEls.forEach(function (b) {
        b.addEventListener("click", function () { respond(b, "button", null); });
      });

      function unlock() {
        unlocked = true;
        root.setAttribute("data-state", "ready");
        buttonEls.forEach(function (b) { b.disabled = false; });
      }

      function reveal() {
        if (t0 !== null) return;
        window.requestAnimationFrame(function () {
          root.style.visibility = "visible";
          root.setAttribute("data-state", "locked");
          t0 = performance.now();
          keyListener = self.jsPsych.pluginAPI.getKeyboardResponse({
            callback_function: function (info) {
              var b = keyMap[info.key];
              if (b) respond(b, "key", info.key);
            },
            valid_responses: Object.keys(keyMap),
            rt_method: "performance",
            persist: true,
            allow_held_key: false,
          });
          if (trial.response_lock_ms > 0) {
            self.jsPsych.pluginAPI.setTimeout(unlock, trial.response_lock_ms);
          } else {
            unlock();
          }
        });
      }

      var imgs = Array.prototype.slice.call(root.querySelectorAll("img"));
      var waits = imgs.map(function (img) {
        var p = img.decode ? img.decode() : new Promise(function (res, rej) {
          if (img.complete && img.naturalWidth) return res();
          img.onload = res;
          img.onerror = rej;
        });
        return p.catch(function () {
          // decode() also rejects for images that did load but are not decodable yet in some
          // browsers; count only real failures.
          if (!(img.complete && img.naturalWidth)) {
            imagesFailed += 1;
            img.classList.add("r2afc-img-failed");
          }
        });
      });
      Promise.all(waits).then(reveal);
      this.jsPsych.pluginAPI.setTimeout(reveal, trial.image_timeout_ms);
    }
  }
  Reference2afcPlugin.info = info;

  return Reference2afcPlugin;
})(jsPsychModule);
