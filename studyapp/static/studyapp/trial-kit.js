/*
 * What every paradigm's trial plugin shares, and the registry through which the participant front end
 * (app.js) finds the plugin for a trial's paradigm.
 *
 * A paradigm joins the front end by one plugin file, loaded after this one and before app.js, that
 * ends with `studyTrialKit.register("<paradigm as the API names it>", ThePlugin)`. app.js then:
 *   - passes each trial's payload fields to the plugin parameters of the same name (so a plugin names
 *     its parameters after the fields of docs/contracts.md's trial object);
 *   - preloads every field whose plugin parameter has type IMAGE;
 *   - reads the plugin's static `task` ({reminder, strategy_question}: HTML and text shown around the
 *     trials).
 * Every paradigm answers in the same shape (choice "a"/"b" with an optional confidence 1-3), which is
 * what the responses endpoint stores and scores; the kit draws those buttons and runs the response
 * machinery, so the plugins differ only in what they show.
 *
 * The shared behaviour: the screen is revealed only once every image has decoded (or after
 * `image_timeout_ms`), the response time is measured with performance.now() from that moment, and
 * buttons and keys are locked for `response_lock_ms`. With confidence on each side has three buttons
 * forming one six-point scale from "A, very sure" (far left) to "B, very sure" (far right):
 *
 *     A: [Very sure 1] [Sure 2] [Unsure 3]      B: [Unsure 8] [Sure 9] [Very sure 0]
 *
 * With confidence off each side has one button ("Choose A" key 1 or Left arrow, "Choose B" key 0 or
 * Right arrow).
 *
 * Loaded as a classic script after jspsych.js; defines the global `studyTrialKit`.
 */
var studyTrialKit = (function (jspsych) {
  "use strict";

  var PT = jspsych.ParameterType;
  var registry = {};

  // [choice, confidence, label, keys]; in screen order within each side.
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

  /** Parameters every paradigm plugin takes (app.js fills them from the study settings). */
  var COMMON_PARAMETERS = {
    /** Milliseconds after the screen appears during which buttons and keys do nothing. */
    response_lock_ms: { type: PT.INT, default: 1500 },
    /** Ask for confidence (three buttons per side) or not (one button per side). */
    confidence: { type: PT.BOOL, default: true },
    /** The question above the images (HTML). null: the plugin's default. */
    prompt: { type: PT.HTML_STRING, default: null },
    /** A small label above the question, e.g. "Practice"; null for none. */
    badge: { type: PT.STRING, default: null },
    /** Show the keyboard shortcuts on the buttons and under them. */
    show_key_hints: { type: PT.BOOL, default: true },
    /** Server id of the trial, copied into the data. */
    trial_id: { type: PT.INT, default: null },
    /** Reveal the screen after this long even if some images have not loaded. */
    image_timeout_ms: { type: PT.INT, default: 15000 },
  };

  /** Data every paradigm plugin records. */
  var COMMON_DATA = {
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
    /** The trial's server id. */
    trial_id: { type: PT.INT },
    /** Number of images that failed to load (the screen was shown anyway). */
    images_failed: { type: PT.INT },
  };

  /**
   * Parameters of a choice between two images A and B between the reference grids, the screen the
   * reference 2AFC and the occlusion 2AFC share (`pairStage` draws it).
   */
  var PAIR_PARAMETERS = {
    /** URLs of the least activating reference images (shown left); may be empty. */
    references_min: { type: PT.IMAGE, array: true, default: [] },
    /** URLs of the most activating reference images (shown right); may be empty. */
    references_max: { type: PT.IMAGE, array: true, default: [] },
    /** URL of image A (left of centre). */
    query_a: { type: PT.IMAGE, default: undefined },
    /** URL of image B (right of centre). */
    query_b: { type: PT.IMAGE, default: undefined },
    /** Label above the left grid. */
    label_min: { type: PT.STRING, default: "Least activating" },
    /** Label above the right grid. */
    label_max: { type: PT.STRING, default: "Most activating" },
  };

  /** Data a pair trial records beside COMMON_DATA: the two images it showed. */
  var PAIR_DATA = {
    query_a: { type: PT.IMAGE },
    query_b: { type: PT.IMAGE },
  };

  function extend(base, own) {
    var out = {};
    Object.keys(base).forEach(function (k) { out[k] = base[k]; });
    Object.keys(own || {}).forEach(function (k) { out[k] = own[k]; });
    return out;
  }

  function escapeAttr(s) {
    return String(s === null || s === undefined ? "" : s)
      .replace(/&/g, "&amp;")
      .replace(/"/g, "&quot;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;");
  }

  /**
   * One answer button. Its accessible name is its visible text (label, then key) followed by the side
   * it answers for, which sighted users read from the column: a name that starts with what is shown
   * lets speech-input users say what they see (WCAG 2.5.3, "label in name").
   */
  function buttonHtml(spec, showKeys, sideName) {
    var choice = spec[0], conf = spec[1], label = spec[2], keys = spec[3];
    var hint = showKeys
      ? ' <span class="r2afc-key">' + keys.map(function (k) { return KEY_NAMES[k] || k; }).join(" / ") + "</span>"
      : "";
    return (
      '<button type="button" class="r2afc-btn study-answer jspsych-btn" disabled data-choice="' + choice + '"' +
      (conf === null ? "" : ' data-confidence="' + conf + '"') + ' data-keys="' + keys.join(" ") + '">' +
      '<span class="r2afc-btn-label">' + escapeAttr(label) + "</span>" + hint +
      '<span class="study-sr-only">, ' + escapeAttr(sideName) + "</span></button>"
    );
  }

  /** The buttons of one side ("a" or "b"), as a labelled group. */
  function answerButtons(side, trial, sideName) {
    var specs = (trial.confidence ? CONFIDENCE_BUTTONS : PLAIN_BUTTONS)[side];
    return (
      '<div class="r2afc-buttons r2afc-buttons-' + side + '" role="group" aria-label="Answer for ' +
      escapeAttr(sideName) + '">' +
      specs.map(function (b) { return buttonHtml(b, trial.show_key_hints, sideName); }).join("") +
      "</div>"
    );
  }

  function keyHelpHtml(confidence) {
    return confidence
      ? "Keys: <kbd>1</kbd> <kbd>2</kbd> <kbd>3</kbd> = A very sure / sure / unsure &nbsp;\u00b7&nbsp; " +
        "<kbd>8</kbd> <kbd>9</kbd> <kbd>0</kbd> = B unsure / sure / very sure"
      : "Keys: <kbd>1</kbd> or <kbd>\u2190</kbd> = A &nbsp;\u00b7&nbsp; <kbd>0</kbd> or <kbd>\u2192</kbd> = B";
  }

  /**
   * The frame of a trial screen: the root element (hidden until its images are in), the badge, the
   * question as the page's level-one heading, the paradigm's stage, and the key help.
   */
  function screenHtml(o) {
    var trial = o.trial;
    return (
      '<div class="' + o.className + ' study-trial" id="' + o.id + '" data-paradigm="' + escapeAttr(o.paradigm) +
      '" data-state="loading"' +
      (trial.trial_id === null || trial.trial_id === undefined ? "" : ' data-trial-id="' + escapeAttr(trial.trial_id) + '"') +
      ' style="visibility:hidden">' +
      (trial.badge ? '<p class="r2afc-badge" id="r2afc-badge">' + escapeAttr(trial.badge) + "</p>" : "") +
      '<h1 class="r2afc-prompt" id="r2afc-prompt">' + o.prompt + "</h1>" +
      o.stage +
      (trial.show_key_hints ? '<p class="r2afc-keyhelp" id="r2afc-keyhelp">' + keyHelpHtml(trial.confidence) + "</p>" : "") +
      "</div>"
    );
  }

  /**
   * Runs the answer machinery on a screen drawn with screenHtml(): waits for the images, reveals the
   * screen, unlocks the buttons and keys after the lock, and finishes the jsPsych trial with the
   * common data plus `extraData`.
   */
  function run(jsPsych, display_element, trial, rootId, extraData) {
    var root = display_element.querySelector("#" + rootId);
    var buttonEls = Array.prototype.slice.call(root.querySelectorAll(".study-answer"));
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
      if (keyListener) jsPsych.pluginAPI.cancelKeyboardResponse(keyListener);
      var conf = btn.getAttribute("data-confidence");
      jsPsych.finishTrial(extend({
        choice: btn.getAttribute("data-choice"),
        confidence: conf === null ? null : parseInt(conf, 10),
        rt_ms: rt,
        response_source: source,
        key: key || null,
        client_time: new Date().toISOString(),
        trial_id: trial.trial_id,
        images_failed: imagesFailed,
      }, extraData));
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
        if (t0 !== null) return;
        root.style.visibility = "visible";
        root.setAttribute("data-state", "locked");
        t0 = performance.now();
        keyListener = jsPsych.pluginAPI.getKeyboardResponse({
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
          jsPsych.pluginAPI.setTimeout(unlock, trial.response_lock_ms);
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
    jsPsych.pluginAPI.setTimeout(reveal, trial.image_timeout_ms);
  }

  /** A reference grid ("min" left, "max" right); an empty list keeps its place so the centre stays centred. */
  function referenceGrid(urls, side, label) {
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
      '<section class="r2afc-refs r2afc-refs-' + side + '" id="r2afc-refs-' + side + '" aria-labelledby="r2afc-label-' + side + '">' +
      '<h2 class="r2afc-label" id="r2afc-label-' + side + '">' + escapeAttr(label) + "</h2>" +
      '<div class="r2afc-grid">' + imgs + "</div></section>"
    );
  }

  /**
   * The stage of a pair trial: the least activating references left, the centre (labelled
   * `centreLabel`, holding `queryBlock("a", trial.query_a, trial)` and the same for "b"), the most
   * activating references right; without references the centre stands alone. Returns {html, hasRefs}.
   */
  function pairStage(trial, centreLabel, queryBlock) {
    var refsMin = trial.references_min || [];
    var refsMax = trial.references_max || [];
    var hasRefs = refsMin.length > 0 || refsMax.length > 0;
    var html =
      '<div class="r2afc-stage">' +
      (hasRefs ? referenceGrid(refsMin, "min", trial.label_min) : "") +
      '<section class="r2afc-centre" id="r2afc-centre" aria-label="' + escapeAttr(centreLabel) + '">' +
      '<div class="r2afc-queries">' + queryBlock("a", trial.query_a, trial) + queryBlock("b", trial.query_b, trial) +
      "</div></section>" +
      (hasRefs ? referenceGrid(refsMax, "max", trial.label_max) : "") +
      "</div>";
    return { html: html, hasRefs: hasRefs };
  }

  /** Makes `Plugin` the trial plugin of `paradigm` (the trial payload's `paradigm` value). */
  function register(paradigm, Plugin) {
    if (!Plugin || !Plugin.info || typeof Plugin.prototype.trial !== "function") {
      throw new Error("studyTrialKit.register(" + paradigm + "): not a jsPsych plugin class");
    }
    registry[paradigm] = Plugin;
  }

  return {
    PT: PT,
    COMMON_PARAMETERS: COMMON_PARAMETERS,
    COMMON_DATA: COMMON_DATA,
    PAIR_PARAMETERS: PAIR_PARAMETERS,
    PAIR_DATA: PAIR_DATA,
    extend: extend,
    referenceGrid: referenceGrid,
    pairStage: pairStage,
    escapeAttr: escapeAttr,
    answerButtons: answerButtons,
    keyHelpHtml: keyHelpHtml,
    screenHtml: screenHtml,
    run: run,
    register: register,
    /** The registered plugin of a paradigm, or undefined. */
    plugin: function (paradigm) { return Object.prototype.hasOwnProperty.call(registry, paradigm) ? registry[paradigm] : undefined; },
    /** The registered paradigms' names. */
    paradigms: function () { return Object.keys(registry); },
  };
})(jsPsychModule);
