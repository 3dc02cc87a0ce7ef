"""Simulated participants: many people taking a study at once, through the real HTTP interface.

Each simulated participant does what the browser does (docs/contracts.md, section 3): opens the
recruitment link, clicks "Start" (a form POST with the CSRF token from the page and its cookie),
follows the redirect to the experiment page, reads the `study-config` JSON from it, and then talks to
the JSON API: session, consent, instructions, trials in batches, one POST per answer with an
idempotency key, the questionnaire. Along the way some participants reload the page mid-study (the
session and trials are fetched again and the last answer is sent again with the same key, as the
front end's answer queue does after a lost acknowledgement), some double-submit an answer, and some
return: they decline consent, or simply stop answering half-way and never come back.

Answering with a planted accuracy needs to know which query is correct, which the browser is never
told. The simulator therefore has an :class:`AnswerOracle`, built from the *stimulus side* of the
database or the artifact manifest (which image is a maximally or minimally activating exemplar of
which unit), never from the trials' stored answer key: a query that is among a unit's
`references_max`/`queries_max` is the correct one. Image files are content-addressed, so an image is
matched by its file name, whatever URL prefix the server uses. The HTTP side stays what a browser
sees; a bug that stored the wrong answer key would show up as an accuracy off its planted value.

Planted accuracies are keyed by condition name or by basis (a condition name wins; then the unit's
basis; then the key ``*``; then ``default_accuracy``). Main trials are answered correctly with that
probability; catch trials (recognised by the oracle: their queries are reference images) with
``catch_accuracy``; practice trials with ``practice_accuracy``. Confidence goes with being correct
(mostly 3 when right, mostly 1 when wrong), response times are log-normal, a little slower when
wrong, and instruction reading times are log-normal around half a minute.

:func:`simulate` runs N participants on K threads against a base URL within a time bound and returns
a :class:`SimulationResult` with every request's latency, so a load benchmark can use the same code.
Nothing here imports Django except :meth:`AnswerOracle.from_study`.

One module per job: :mod:`.oracle` (which query is correct), :mod:`.behaviour` (how a participant
answers), :mod:`.browser` (cookies, forms and the JSON API), :mod:`.participant` (one participant's
way through a study), :mod:`.records` (requests, outcomes, the summary) and :mod:`.run` (many at once).
"""
from .behaviour import Behaviour, parse_accuracy
from .browser import Browser, StopParticipant
from .oracle import AnswerOracle, Judgement, image_key
from .participant import SimulatedParticipant
from .records import Outcome, Request, SimulationResult, percentile, result_to_json
from .run import simulate

__all__ = ["AnswerOracle", "Behaviour", "Browser", "Judgement", "Outcome", "Request", "SimulatedParticipant",
           "SimulationResult", "StopParticipant", "image_key", "parse_accuracy", "percentile", "result_to_json",
           "simulate"]
