"""How simulated participants answer: planted accuracies, confidence, response and reading times."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

TRIAL_BATCH = 10  # as the front end: trials per GET trials request


def parse_accuracy(text):
    """'neuron=0.7,pca=0.8' → {'neuron': 0.7, 'pca': 0.8}; a bare number sets the key '*'."""
    spec = {}
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.rpartition("=")
        key = key.strip() if sep else "*"
        p = float(value)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"accuracy for {key!r} must be in [0, 1], not {p}")
        spec[key] = p
    return spec


@dataclass
class Behaviour:
    """How a simulated participant answers and misbehaves. Rates are per participant."""

    accuracy: dict = field(default_factory=dict)  # condition name or basis (or '*') → P(correct), main trials
    default_accuracy: float = 0.75
    catch_accuracy: float = 0.97
    practice_accuracy: float = 0.9
    reload_rate: float = 0.1  # reload the page once, mid-study, and resend the last answer
    double_submit_rate: float = 0.05  # send one answer twice at once (a double click, a retried POST)
    return_rate: float = 0.05  # stop before the end: decline consent, or abandon mid-way
    decline_share: float = 0.25  # of those who return, the share who decline consent
    reading_ms_median: float = 35_000.0
    reading_sigma: float = 0.35
    rt_ms_median: float = 2_600.0
    rt_sigma: float = 0.45
    think_ms: float = 0.0  # real pause before each answer (mean of an exponential); 0 = as fast as possible
    fetch_images: bool = False  # GET each image once, as the browser's preload does
    trial_batch: int = TRIAL_BATCH

    def accuracy_for(self, judgement):
        values = {self.accuracy[c] for c in judgement.conditions if c in self.accuracy}
        if len(values) == 1:
            return values.pop()
        if judgement.basis in self.accuracy:
            return self.accuracy[judgement.basis]
        return self.accuracy.get("*", self.default_accuracy)

    def confidence(self, rng, correct):
        weights = (0.15, 0.35, 0.5) if correct else (0.5, 0.35, 0.15)
        return rng.choices((1, 2, 3), weights=weights)[0]

    def rt_ms(self, rng, correct, confidence):
        median = self.rt_ms_median * (0.9 if correct else 1.15) * (1.15 - 0.1 * confidence)
        return round(max(250.0, rng.lognormvariate(math.log(median), self.rt_sigma)), 1)

    def reading_ms(self, rng):
        return round(rng.lognormvariate(math.log(self.reading_ms_median), self.reading_sigma), 1)
