"""Researcher-written Markdown turned into the HTML a participant sees."""
from functools import lru_cache

import markdown

_ALLOWED_EXTENSIONS = ["extra", "sane_lists"]


# Every participant of a study is sent the same few texts (consent, instructions, debrief, a block's
# instructions) with every session payload, three times an arrival: rendering them (Python-Markdown
# builds its whole parser per call) was a fifth of an arrival's web CPU. The HTML is a function of the
# text alone and a string cannot be changed, so it is kept per text; a researcher's edit is a new text.
@lru_cache(maxsize=256)
def render_markdown(text):
    # Researchers are trusted admin users, but raw HTML in a consent form is still escaped: the text is
    # shown to the public and a pasted snippet should not be able to run script.
    escaped = (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return markdown.markdown(escaped, extensions=_ALLOWED_EXTENSIONS)


DEFAULT_CONSENT = """\
**Consent to take part**

This study is about how people understand what parts of an artificial neural network respond to.
You will look at sets of images and choose between two images. There are no risks beyond those of
everyday computer use.

- Taking part is voluntary; you may stop at any time by closing this page.
- Your answers and response times are stored under a pseudonym. Your recruitment id is kept only as a
  keyed hash, to prevent repeat participation.
- The anonymised data may be published for research.

Do you agree to take part?
"""

DEFAULT_INSTRUCTIONS = """\
**What you will do**

Each screen shows a set of images on the **left** that an artificial neuron responds to *least*, a set
on the **right** that it responds to *most*, and two images in the **centre**.

Choose the centre image that fits the **right-hand** images better, and say how sure you are with the
buttons under it. The buttons unlock after a moment, so please look at all the images first.

You will start with a few practice screens that tell you whether you were right. Please read these
instructions carefully; then press *Continue*.
"""

DEFAULT_STRIP_INSTRUCTIONS = """\
**What you will do**

Each screen shows two rows of images, **row A** and **row B**. Both rows hold the same images. In one
row they are sorted by how strongly an artificial neuron responds to them, from *least* on the left to
*most* on the right; in the other row they are in a random order.

Choose the row whose images change **gradually and steadily** from left to right, and say how sure you
are with the buttons beside it. The buttons unlock after a moment, so please look at all the images
first.

You will start with a few practice screens that tell you whether you were right. Please read these
instructions carefully; then press *Continue*.
"""

DEFAULT_OCCLUSION_INSTRUCTIONS = """\
**What you will do**

Each screen shows a set of images on the **left** that an artificial neuron responds to *least*, a set
on the **right** that it responds to *most*, and in the **centre** one image shown twice. In each copy a
different square patch of the image is covered up (an *occlusion*).

Choose the occlusion that **changes the neuron's response more**, and say how sure you are with the
buttons under it. Covering what the neuron responds to changes its response most. The buttons unlock
after a moment, so please look at all the images first.

You will start with a few practice screens that tell you whether you were right. Please read these
instructions carefully; then press *Continue*.
"""

# The default instructions of each paradigm (studyapp.trials.PARADIGMS). A study's own instructions field
# starts as the reference 2AFC's text (the model's default), which would describe the wrong task to a
# participant of another paradigm.
PARADIGM_INSTRUCTIONS = {
    "reference_2afc": DEFAULT_INSTRUCTIONS,
    "ordered_strip": DEFAULT_STRIP_INSTRUCTIONS,
    "occlusion_2afc": DEFAULT_OCCLUSION_INSTRUCTIONS,
}


def _same_text(a, b):
    # The admin's textarea turns line ends into CRLF and may trim the end: compare what a reader sees.
    return " ".join(a.split()) == " ".join(b.split())


def instructions_for(text, paradigm):
    """The instructions a participant of `paradigm` reads: the researcher's own text when they wrote one,
    the paradigm's default when the study's field is empty or still holds one of the paradigms' defaults."""
    if paradigm not in PARADIGM_INSTRUCTIONS:
        raise ValueError(f"no default instructions for paradigm {paradigm!r}; "
                         f"expected one of {tuple(PARADIGM_INSTRUCTIONS)}")
    own = text or ""
    if own.strip() and not any(_same_text(own, default) for default in PARADIGM_INSTRUCTIONS.values()):
        return own
    return PARADIGM_INSTRUCTIONS[paradigm]


DEFAULT_DEBRIEF = """\
Thank you for taking part! Your answers help us find out which explanations of neural networks people
understand best.
"""
