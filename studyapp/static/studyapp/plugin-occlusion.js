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

  var PT = jspsych.ParameterType;
  var esc = kit.escapeAttr;

  var info = {
    name: "occlusion-2afc",
    version: "1.0.0",
    parameters: kit.extend(kit.COMMON_PARAMETERS, {
      /** URLs of the least activating reference images (shown left); may be empty. */
      references_min: { type: PT.IMAGE, array: true, default: [] },
      /** URLs of the most activating reference images (shown right); may be empty. */
      references_max: { type: PT.IMAGE, array: true, default: [] },
      /** URL of the image with occlusion A. */
      query_a: { type: PT.IMAGE, default: undefined },
      /** URL of the image with occlusion B. */
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

  var PROMPT = "Which occlusion changes the unit\u2019s response more?";

  function refGrid(urls, side, label) {
    if (!urls || urls.length === 0) {
      return '<section class="r2afc-refs r2afc-refs-' + side + ' r2afc-refs-empty" aria-hidden="true"></section>';
    }
    var imgs = urls
      .map(function (u, i) {
        return '<div class="r2afc-cell"><img class="r2afc-ref" src="' + esc(u) + '" alt="' + esc(label) +
          " example " + (i + 1) + '" draggable="false"></div>';
      })
      .join("");
    return (
      '<section class="r2afc-refs r2afc-refs-' + side + '" id="r2afc-refs-' + side + '" aria-labelledby="r2afc-label-' +
      side + '">' + '<h2 class="r2afc-label" id="r2afc-label-' + side + '">' + esc(label) + "</h2>" +
      '<div class="r2afc-grid">' + imgs + "</div></section>"
    );
  }

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
      var refsMin = trial.references_min || [];
      var refsMax = trial.references_max || [];
      var hasRefs = refsMin.length > 0 || refsMax.length > 0;
      var stage =
        '<div class="r2afc-stage">' +
        (hasRefs ? refGrid(refsMin, "min", trial.label_min) : "") +
        '<section class="r2afc-centre" id="r2afc-centre" aria-label="Occluded images">' +
        '<div class="r2afc-queries">' + occluded("a", trial.query_a, trial) + occluded("b", trial.query_b, trial) +
        "</div></section>" +
        (hasRefs ? refGrid(refsMax, "max", trial.label_max) : "") +
        "</div>";
      display_element.innerHTML = kit.screenHtml({
        id: "occl",
        className: "r2afc occl " + (hasRefs ? "r2afc-with-refs" : "r2afc-no-refs"),
        paradigm: "occlusion_2afc",
        trial: trial,
        prompt: trial.prompt === null || trial.prompt === undefined ? PROMPT : trial.prompt,
        stage: stage,
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
