"""Researcher-written Markdown turned into the HTML a participant sees."""
import markdown

_ALLOWED_EXTENSIONS = ["extra", "sane_lists"]


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

DEFAULT_DEBRIEF = """\
Thank you for taking part! Your answers help us find out which explanations of neural networks people
understand best.
"""
