/*
 * jsPsych 8 plugin "ordered-strip": the trial plugin of paradigm `ordered_strip`, Dey et al.'s task
 * (2020): two rows of the same unit's images, one ordered by the unit's activation (weakest left,
 * strongest right) and one a shuffled copy of it; which row is the unit's ordering?
 *
 * What the server sends decides nothing here: both rows hold the same images under content-addressed
 * names, the shuffled row is never monotone in either direction (studyapp.trials), and which row is
 * ordered stays on the server, which scores the "a"/"b" answer. The rows are drawn in the order sent.
 *
 * Screen: row A above row B, each image in a frame of the same size, the answer buttons beside each
 * row (studyTrialKit draws them and runs the response machinery, as for every paradigm).
 *
 * Loaded as a classic script after jspsych.js and trial-kit.js; defines the global
 * `jsPsychOrderedStrip` and registers it for paradigm `ordered_strip`.
 */
var jsPsychOrderedStrip = (function (jspsych, kit) {
  "use strict";

  var PT = jspsych.ParameterType;
  var esc = kit.escapeAttr;

  var info = {
    name: "ordered-strip",
    version: "1.0.0",
    parameters: kit.extend(kit.COMMON_PARAMETERS, {
      /** Row A's image URLs, left to right. */
      strip_a: { type: PT.IMAGE, array: true, default: undefined },
      /** Row B's image URLs, left to right. */
      strip_b: { type: PT.IMAGE, array: true, default: undefined },
    }),
    data: kit.COMMON_DATA,
  };

  var PROMPT = "Which row changes <em>gradually and steadily</em> from left to right?";

  function row(side, urls, trial) {
    var letter = side.toUpperCase();
    var imgs = urls
      .map(function (u, i) {
        return '<img class="r2afc-strip-img" src="' + esc(u) + '" alt="Row ' + letter + ", image " + (i + 1) +
          '" draggable="false">';
      })
      .join("");
    return (
      '<div class="r2afc-strip r2afc-strip-' + side + '" id="r2afc-strip-' + side + '" role="group" aria-labelledby="ostrip-label-' + side + '">' +
      '<h2 class="r2afc-query-label" id="ostrip-label-' + side + '">Row ' + letter + "</h2>" +
      '<div class="r2afc-strip-row">' + imgs + "</div>" +
      kit.answerButtons(side, trial, "row " + letter) +
      "</div>"
    );
  }

  class OrderedStripPlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      var a = trial.strip_a || [], b = trial.strip_b || [];
      if (a.length < 2 || b.length < 2) {
        throw new Error("ordered-strip: strip_a and strip_b must each hold at least two image URLs");
      }
      display_element.innerHTML = kit.screenHtml({
        id: "ostrip",
        className: "r2afc r2afc-strips ostrip",
        paradigm: "ordered_strip",
        trial: trial,
        prompt: trial.prompt === null || trial.prompt === undefined ? PROMPT : trial.prompt,
        stage: '<div class="r2afc-stage"><section class="r2afc-strip-stage" id="r2afc-centre" aria-label="Rows">' +
          row("a", a, trial) + row("b", b, trial) + "</section></div>",
      });
      kit.run(this.jsPsych, display_element, trial, "ostrip", {});
    }
  }
  OrderedStripPlugin.info = info;
  OrderedStripPlugin.task = {
    reminder: "Remember: choose the row whose images change <strong>gradually and steadily</strong> from left to right.",
    strategy_question: "Which strategy did you use to choose between the two rows?",
  };

  kit.register("ordered_strip", OrderedStripPlugin);
  return OrderedStripPlugin;
})(jsPsychModule, studyTrialKit);
