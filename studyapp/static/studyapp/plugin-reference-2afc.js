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

  var esc = kit.escapeAttr;

  var info = {
    name: "reference-2afc",
    version: "2.0.0",
    parameters: kit.extend(kit.COMMON_PARAMETERS, kit.PAIR_PARAMETERS),
    data: kit.extend(kit.COMMON_DATA, kit.PAIR_DATA),
  };

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
      var stage = kit.pairStage(trial, "Centre images", queryBlock);
      display_element.innerHTML = kit.screenHtml({
        id: "r2afc",
        className: "r2afc " + (stage.hasRefs ? "r2afc-with-refs" : "r2afc-no-refs"),
        paradigm: "reference_2afc",
        trial: trial,
        prompt: trial.prompt === null || trial.prompt === undefined
          ? defaultPrompt((trial.references_min || []).length > 0, (trial.references_max || []).length > 0)
          : trial.prompt,
        stage: stage.html,
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
