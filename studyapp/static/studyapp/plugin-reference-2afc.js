/*
 * jsPsych 8 plugin "reference-2afc": the reference two-alternative forced-choice trial (Borowski et al.
 * 2021), the trial plugin of paradigm `reference_2afc`.
 *
 * Screen: the 9 least activating reference images in a 3 x 3 grid on the left, the 9 most
 * activating in a 3 x 3 grid on the right, query images A and B in the centre, the question, and the
 * answer buttons under each query (studyTrialKit draws them and runs the response machinery).
 *
 * Either reference list may be empty (max-only and no-reference conditions): an empty side keeps
 * its space so the queries stay centred; with no references at all the queries stand alone.
 *
 * Loaded as a classic script after jspsych.js and trial-kit.js; defines the global
 * `jsPsychReference2afc` and registers it for paradigm `reference_2afc`.
 */
var jsPsychReference2afc = (function (jspsych, kit) {
  "use strict";

  var PT = jspsych.ParameterType;
  var esc = kit.escapeAttr;

  var info = {
    name: "reference-2afc",
    version: "2.0.0",
    parameters: kit.extend(kit.COMMON_PARAMETERS, {
      /** URLs of the least activating reference images (shown left); may be empty. */
      references_min: { type: PT.IMAGE, array: true, default: [] },
      /** URLs of the most activating reference images (shown right); may be empty. */
      references_max: { type: PT.IMAGE, array: true, default: [] },
      /** URL of query image A (left of centre). */
      query_a: { type: PT.IMAGE, default: undefined },
      /** URL of query image B (right of centre). */
      query_b: { type: PT.IMAGE, default: undefined },
      /** Label above the left grid. */
      label_min: { type: PT.STRING, default: "Least activating" },
      /** Label above the right grid. */
      label_max: { type: PT.STRING, default: "Most activating" },
    }),
    data: kit.extend(kit.COMMON_DATA, {
      query_a: { type: PT.IMAGE },
      query_b: { type: PT.IMAGE },
    }),
  };

  function refGrid(urls, side, label) {
    if (!urls || urls.length === 0) {
      return '<section class="r2afc-refs r2afc-refs-' + side + ' r2afc-refs-empty" aria-hidden="true"></section>';
    }
    var imgs = urls
      .map(function (u, i) {
        return (
          '<div class="r2afc-cell"><img class="r2afc-ref" src="' + esc(u) + '" alt="' +
          esc(label) + " example " + (i + 1) + '" draggable="false"></div>'
        );
      })
      .join("");
    return (
      '<section class="r2afc-refs r2afc-refs-' + side + '" id="r2afc-refs-' + side + '" aria-labelledby="r2afc-label-' + side + '">' +
      '<h2 class="r2afc-label" id="r2afc-label-' + side + '">' + esc(label) + "</h2>" +
      '<div class="r2afc-grid">' + imgs + "</div></section>"
    );
  }

  function queryBlock(side, url, trial) {
    var letter = side.toUpperCase();
    return (
      '<div class="r2afc-query r2afc-query-' + side + '" id="r2afc-query-' + side + '">' +
      '<h2 class="r2afc-query-label">' + letter + "</h2>" +
      '<div class="r2afc-query-frame"><img class="r2afc-query-img" src="' + esc(url) +
      '" alt="Centre image ' + letter + '" draggable="false"></div>' +
      kit.answerButtons(side, trial, "image " + letter) +
      "</div>"
    );
  }

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
      var refsMin = trial.references_min || [];
      var refsMax = trial.references_max || [];
      var hasRefs = refsMin.length > 0 || refsMax.length > 0;
      var stage =
        '<div class="r2afc-stage">' +
        (hasRefs ? refGrid(refsMin, "min", trial.label_min) : "") +
        '<section class="r2afc-centre" id="r2afc-centre" aria-label="Centre images">' +
        '<div class="r2afc-queries">' + queryBlock("a", trial.query_a, trial) + queryBlock("b", trial.query_b, trial) +
        "</div></section>" +
        (hasRefs ? refGrid(refsMax, "max", trial.label_max) : "") +
        "</div>";
      display_element.innerHTML = kit.screenHtml({
        id: "r2afc",
        className: "r2afc " + (hasRefs ? "r2afc-with-refs" : "r2afc-no-refs"),
        paradigm: "reference_2afc",
        trial: trial,
        prompt: trial.prompt === null || trial.prompt === undefined
          ? defaultPrompt(refsMin.length > 0, refsMax.length > 0) : trial.prompt,
        stage: stage,
      });
      kit.run(this.jsPsych, display_element, trial, "r2afc", { query_a: trial.query_a, query_b: trial.query_b });
    }
  }
  Reference2afcPlugin.info = info;
  /** Texts around the trials that follow the task (app.js shows them). */
  Reference2afcPlugin.task = {
    reminder: "Remember: choose the centre image that looks more like the <strong>right-hand</strong> (most activating) examples.",
    strategy_question: "Which strategy did you use to choose between the two centre images?",
  };

  kit.register("reference_2afc", Reference2afcPlugin);
  return Reference2afcPlugin;
})(jsPsychModule, studyTrialKit);
