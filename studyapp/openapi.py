"""The OpenAPI 3 description of the participant API (docs/contracts.md, section 3), served at
/api/openapi.json for client authors and for schema-driven fuzzing."""

ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}

STUDY = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "paradigm": {"type": "string", "enum": ["reference_2afc", "ordered_strip", "occlusion_2afc"]},
        "consent_html": {"type": "string"},
        "instructions_html": {"type": "string"},
        "debrief_html": {"type": "string"},
        "response_lock_ms": {"type": "integer", "minimum": 0},
        "confidence": {"type": "boolean"},
        "practice_feedback": {"type": "boolean"},
        "fullscreen": {"type": "boolean"},
        "min_width": {"type": "integer"},
        "min_height": {"type": "integer"},
    },
}

PHASE = {"type": "string", "enum": ["consent", "instructions", "practice", "main", "questionnaire", "done", "ended",
                                   "screened_out"]}

COMPLETION = {
    "type": ["object", "null"],
    "properties": {"url": {"type": "string"}, "code": {"type": "string"}},
}

SESSION = {
    "type": "object",
    "required": ["phase", "study", "progress", "completion"],
    "properties": {
        "phase": PHASE,
        "study": STUDY,
        "progress": {
            "type": "object",
            "properties": {"answered": {"type": "integer"}, "total": {"type": "integer"}},
        },
        "completion": COMPLETION,
        # studyapp.screening: the checks the page runs, what the chinrest measured, where a screen-out goes
        "screening": {
            "type": "object",
            "properties": {
                "desktop_only": {"type": "boolean"},
                "mobile_agent": {"type": "boolean"},
                "supported_browsers": {"type": "array", "items": {"type": "string"}},
                "virtual_chinrest": {"type": "boolean"},
                "image_visual_angle_deg": {"type": ["number", "null"]},
                "screen_out": {"type": "boolean"},
            },
        },
        "calibration": {
            "type": ["object", "null"],
            "properties": {"px_per_cm": {"type": "number"}, "viewing_distance_cm": {"type": "number"}},
        },
        "screen_out": {
            "type": ["object", "null"],
            "properties": {"url": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]},
                           "reason": {"type": "string"}},
        },
    },
}

URL_LIST = {"type": "array", "items": {"type": "string"}}

TRIAL = {
    "type": "object",
    "required": ["id", "position", "block", "paradigm"],
    "properties": {
        "id": {"type": "integer"},
        "position": {"type": "integer"},
        "block": {"type": "string", "enum": ["practice", "main"]},
        "attempt": {"type": ["integer", "null"]},
        "paradigm": {"type": "string", "enum": ["reference_2afc", "ordered_strip", "occlusion_2afc"]},
        "references_min": URL_LIST,
        "references_max": URL_LIST,
        "query_a": {"type": "string"},
        "query_b": {"type": "string"},
        "strip_a": URL_LIST,
        "strip_b": URL_LIST,
    },
}

RESPONSE_IN = {
    "type": "object",
    "required": ["trial", "idempotency_key", "choice", "rt_ms"],
    "properties": {
        "trial": {"type": "integer"},
        "idempotency_key": {"type": "string", "minLength": 8, "maxLength": 64},
        "choice": {"type": "string", "enum": ["a", "b"]},
        "confidence": {"type": ["integer", "null"], "minimum": 1, "maximum": 3},
        "rt_ms": {"type": "number", "minimum": 0},
        "client_time": {"type": ["string", "null"], "format": "date-time"},
        # Since the previous answer, as jsPsych's interaction data counts them; null: not reported.
        "focus_losses": {"type": ["integer", "null"], "minimum": 0, "maximum": 10000},
        "fullscreen_exits": {"type": ["integer", "null"], "minimum": 0, "maximum": 10000},
        "webdriver": {"type": ["boolean", "null"]},
    },
}

RESPONSE_OUT = {
    "type": "object",
    "required": ["stored", "phase", "remaining", "practice_repeat"],
    "properties": {
        "stored": {"type": "boolean"},
        "correct": {"type": "boolean", "description": "practice trials with feedback only"},
        "phase": PHASE,
        "remaining": {"type": "integer"},
        "practice_repeat": {"type": "boolean"},
    },
}


def _json(schema):
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes):
    # Every route takes a participant token and is rate limited (studyapp/ratelimit.py).
    return {str(code): {"description": "refused", **_json(ERROR)} for code in (*codes, 429)}


def _body(schema):
    return {"required": True, **_json(schema)}


TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the participant's secret, from the link /p/<token>/"}


def schema():
    session_ok = {"200": {"description": "the session", **_json(SESSION)}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Participant API",
            "version": "1",
            "description": "What the participant's browser talks to. Nothing sent before an answer says "
                           "which query is correct.",
        },
        "paths": {
            "/api/p/{token}/session": {
                "parameters": [TOKEN],
                "get": {"operationId": "session", "responses": {**session_ok, **_errors(404)}},
            },
            "/api/p/{token}/consent": {
                "parameters": [TOKEN],
                "post": {
                    "operationId": "consent",
                    "requestBody": _body({"type": "object", "required": ["consent"],
                                          "properties": {"consent": {"type": "boolean"}}}),
                    "responses": {**session_ok, **_errors(400, 403, 404, 409, 410, 415)},
                },
            },
            "/api/p/{token}/instructions": {
                "parameters": [TOKEN],
                "post": {
                    "operationId": "instructions",
                    "requestBody": _body({"type": "object", "required": ["reading_ms"],
                                          "properties": {"reading_ms": {"type": "number", "minimum": 0}}}),
                    "responses": {**session_ok, **_errors(400, 403, 404, 409, 410, 415)},
                },
            },
            "/api/p/{token}/trials": {
                "parameters": [TOKEN],
                "get": {
                    "operationId": "trials",
                    "parameters": [{"name": "limit", "in": "query", "required": False,
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}}],
                    "responses": {
                        "200": {"description": "the first unanswered trials", **_json({
                            "type": "object", "required": ["phase", "trials", "remaining"],
                            "properties": {"phase": PHASE, "trials": {"type": "array", "items": TRIAL},
                                           "remaining": {"type": "integer"}},
                        })},
                        **_errors(400, 404),
                    },
                },
            },
            "/api/p/{token}/responses": {
                "parameters": [TOKEN],
                "post": {
                    "operationId": "respond",
                    "requestBody": _body(RESPONSE_IN),
                    "responses": {
                        "201": {"description": "stored", **_json(RESPONSE_OUT)},
                        "200": {"description": "already stored: the first answer is kept", **_json(RESPONSE_OUT)},
                        **_errors(400, 403, 404, 409, 410, 415),
                    },
                },
            },
            "/api/p/{token}/screen-out": {
                "parameters": [TOKEN],
                "post": {
                    "operationId": "screen_out",
                    "requestBody": _body({"type": "object", "required": ["reason"], "properties": {"reason": {
                        "type": "string", "enum": ["window_too_small", "mobile_device", "unsupported_browser",
                                                   "chinrest_failed"]}}}),
                    "responses": {
                        "200": {"description": "screened out: the session says where to go", **_json(SESSION)},
                        **_errors(400, 404, 409, 415),
                    },
                },
            },
            "/api/p/{token}/calibration": {
                "parameters": [TOKEN],
                "post": {
                    "operationId": "calibration",
                    "requestBody": _body({"type": "object", "required": ["px_per_cm", "viewing_distance_cm"],
                                          "properties": {
                                              "px_per_cm": {"type": "number", "minimum": 5, "maximum": 500},
                                              "viewing_distance_cm": {"type": "number", "minimum": 5,
                                                                      "maximum": 500},
                                              "image_px": {"type": ["number", "null"], "minimum": 1,
                                                           "maximum": 10000}}}),
                    "responses": {
                        "200": {"description": "stored (the participant may be screened out)", **_json(SESSION)},
                        **_errors(400, 404, 409, 410, 415),
                    },
                },
            },
            "/api/p/{token}/questionnaire": {
                "parameters": [TOKEN],
                "post": {
                    "operationId": "questionnaire",
                    "requestBody": _body({"type": "object", "required": ["answers"],
                                          "properties": {"answers": {
                                              "type": "object", "maxProperties": 20,
                                              "additionalProperties": {"type": ["string", "number", "boolean", "null"],
                                                                       "maxLength": 2000}}}}),
                    "responses": {
                        "200": {"description": "done", **_json({
                            "type": "object", "properties": {"phase": PHASE, "completion": COMPLETION}})},
                        **_errors(400, 403, 404, 409, 410, 415),
                    },
                },
            },
        },
    }
