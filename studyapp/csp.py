"""The Content-Security-Policy of the participant's pages (landing, messages, the jsPsych experiment).

Everything the experiment needs comes from this origin: its scripts (jsPsych and the plugins are files
under /static/, the page's configuration a JSON data block, never run), styles, the stimulus images and
the JSON API. jsPsych and its plugins write `style="…"` attributes into the HTML they render, hence
`style-src-attr 'unsafe-inline'`; jspsych.css embeds its font as a data: URL. No inline script or
stylesheet is allowed, so an injected `<script>` does not run. The admin keeps Django's own headers:
its pages are not the participant's.
"""
from django.conf import settings

DEFAULT_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self'",
    "connect-src 'self'",
    "font-src 'self' data:",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
])


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = request.resolver_match
        policy = getattr(settings, "PARTICIPANT_CSP", DEFAULT_POLICY)
        if (policy and match is not None and match.namespace == "studyapp"
                and response.get("Content-Type", "").startswith("text/html")):
            response.setdefault("Content-Security-Policy", policy)
        return response
