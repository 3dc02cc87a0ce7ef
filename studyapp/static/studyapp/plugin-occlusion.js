/*
 * jsPsych 8 plugin "occlusion-2afc": the trial plugin of paradigm `occlusion_2afc`, the causal task of
 * Zimmermann et al. (2021): one image shown twice, each copy with one square occluder; which occlusion
 * changes the unit's response more?
 *
 * What the server sends decides nothing here: both copies are content-addressed PNGs of the same
 * image, the sides were drawn per participant (studyapp.trials), and which occlusion changes the unit
 * more (and by how much) stays on the server, which scores the "a"/"b" answer. The references are shown
 * as in the reference 2AFC (least activating left, most activating right; either may be empty).
 *
 * Screen: the reference grids, occluded images A and B in the centre, the question, and the answer
 * buttons under each image (studyTrialKit draws them and runs the response machinery).
 *
 * Loaded as a classic script after jspsych.js and trial-kit.js; defines the global
 * `jsPsychOcclusion2afc` and registers it for paradigm `occlusion_2afc`.
 */
var jsPsychOcclusion2afc = (function (jspsych, kit) {
  "use strict";

  var esc = kit.escapeAttr;

  var info = {
    name: "occlusion-2afc",
    version: "1.0.0",
    // query_a and query_b are the two occluded copies of one image
    parameters: kit.extend(kit.COMMON_PARAMETERS, kit.PAIR_PARAMETERS),
    data: kit.extend(kit.COMMON_DATA, kit.PAIR_DATA),
  };

  var PROMPT = "Which occlusion changes the unit\u2019s response more?";

  function occluded(side, url, trial) {
    var letter = side.toUpperCase();
    return (
      '<div class="r2afc-query r2afc-query-' + side + ' occl-query" id="r2afc-query-' + side + '">' +
      '<h2 class="r2afc-query-label">Occlusion ' + letter + "</h2>" +
      '<div class="r2afc-query-frame"><img class="r2afc-query-img occl-img" src="' + esc(url) +
      '" alt="The image with occlusion ' + letter + '" draggable="false"></div>' +
      kit.answerButtons(side, trial, "occlusion " + letter) +
      "</div>"
    );
  }

  class Occlusion2afcPlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      if (!trial.query_a || !trial.query_b) {
        throw new Error("occlusion-2afc: query_a and query_b must be image URLs");
      }
      var stage = kit.pairStage(trial, "Occluded images", occluded);
      display_element.innerHTML = kit.screenHtml({
        id: "occl",
        className: "r2afc occl " + (stage.hasRefs ? "r2afc-with-refs" : "r2afc-no-refs"),
        paradigm: "occlusion_2afc",
        trial: trial,
        prompt: trial.prompt === null || trial.prompt === undefined ? PROMPT : trial.prompt,
        stage: stage.html,
      });
      kit.run(this.jsPsych, display_element, trial, "occl", { query_a: trial.query_a, query_b: trial.query_b });
    }
  }
  Occlusion2afcPlugin.info = info;
  Occlusion2afcPlugin.task = {
    reminder: "Remember: choose the occlusion that changes the unit\u2019s response <strong>more</strong>: the one that " +
      "hides more of what the most activating examples share.",
    strategy_question: "Which strategy did you use to choose between the two occlusions?",
  };

  kit.register("occlusion_2afc", Occlusion2afcPlugin);
  return Occlusion2afcPlugin;
})(jsPsychModule, studyTrialKit);
