/*
 * Participant front end: drives a jsPsych 8 timeline from the participant JSON API
 * (docs/contracts.md, section 3).
 *
 * The page provides
 *   <script id="study-config" type="application/json">{"token": "...", "api_base": "/api/p/<token>/",
 *      "csrf_token": "..."}</script>
 *   <div id="jspsych-target"></div>
 * and loads, in order: vendor/jspsych/jspsych.js, the vendor plugins, trial-kit.js, the paradigms'
 * trial plugins (plugin-reference-2afc.js, plugin-ordered-strip.js, plugin-occlusion.js) and this file.
 *
 * Paradigms: each trial carries its `paradigm`, and is shown by the plugin registered for it with
 * studyTrialKit.register() (trial-kit.js explains the contract). This file names no paradigm: a new
 * one joins by its plugin file alone, loaded before this one.
 *
 * Structure: one looping jsPsych timeline. Each pass runs an asynchronous "step" (a small plugin
 * whose trial() returns a Promise, which jsPsych 8 awaits) that talks to the server and decides
 * which single screen comes next (state.screen); then exactly one of the conditional screen nodes
 * (consent, instructions, browser check, fullscreen, preload, trial, feedback, notice,
 * questionnaire, done) runs, and its on_finish records what the participant did (state.action)
 * for the next step to send.
 *
 * Answers: each answer is put in a queue the moment it is given. The queue lives in localStorage
 * until the server acknowledges it and is sent strictly in order, one request at a time, with an
 * idempotency key; network errors and 5xx are retried with exponential back-off, or after the
 * server's Retry-After where a 429 or 503 gives one. Each answer also reports, since the previous
 * answer, how often the participant left the window or tab and full screen (as jsPsych's interaction
 * data records them) and whether the browser says it is automated (navigator.webdriver). Practice answers
 * wait for the acknowledgement (it carries the feedback and practice_repeat); main answers do not,
 * unless more than MAX_UNACKED are outstanding. A 409 means the server has moved on: the session is
 * fetched again and the study continues from the server's state. A reload resumes from the server's
 * phase and first unanswered trial (pending answers are sent first).
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ configuration
  var BATCH = 10; // trials per GET trials request
  var LOW_WATER = 4; // fetch the next batch when fewer trials than this are buffered
  var LOOKAHEAD = 3; // trials ahead of the current one whose images are preloaded
  var PRELOAD_CONCURRENCY = 6;
  var MAX_UNACKED = 3; // main answers allowed in flight before the next trial waits
  var FEEDBACK_MS = 1000;
  var BACKOFF_START_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var RETRY_AFTER_MAX_MS = 300000;
  var WAIT_MESSAGE_AFTER_MS = 400;

  var configEl = document.getElementById("study-config");
  var CONFIG = JSON.parse(configEl ? configEl.textContent : "{}");
  var API_BASE = String(CONFIG.api_base || "").replace(/\/?$/, "/");
  var STORAGE_KEY = "studyapp:pending:" + (CONFIG.token || "anonymous");
  var REDIRECT_DELAY_MS = typeof CONFIG.redirect_delay_ms === "number" ? CONFIG.redirect_delay_ms : 5000;

  // ------------------------------------------------------------------ small helpers
  function escapeHtml(s) {
    return String(s === null || s === undefined ? "" : s)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function uuid4() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // randomUUID exists only in secure contexts; getRandomValues exists everywhere.
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  // ------------------------------------------------------------------ connection banner
  var banner = null;
  function setBanner(text) {
    if (!banner) {
      banner = document.createElement("div");
      banner.id = "study-connection";
      banner.setAttribute("role", "status");
      banner.setAttribute("aria-live", "polite");
      document.body.appendChild(banner);
    }
    banner.textContent = text || "";
    banner.hidden = !text;
  }

  // ------------------------------------------------------------------ API client
  function ApiError(status, code, detail) {
    this.name = "ApiError";
    this.status = status;
    this.code = code || "http_" + status;
    this.detail = detail || null;
    this.message = detail || "The server answered with status " + status + ".";
  }
  ApiError.prototype = Object.create(Error.prototype);

  function TransientError(message, retryAfterMs) {
    this.name = "TransientError";
    this.message = message;
    this.retryAfterMs = retryAfterMs; // the server's Retry-After, when it gave one
  }

  /** Retry-After (seconds or an HTTP date) in milliseconds; null when absent or unreadable. */
  function retryAfterMs(resp) {
    var value = resp.headers.get("Retry-After");
    if (!value) return null;
    if (/^\s*\d+\s*$/.test(value)) return parseInt(value, 10) * 1000;
    var at = Date.parse(value);
    return isNaN(at) ? null : Math.max(0, at - Date.now());
  }
  TransientError.prototype = Object.create(Error.prototype);

  function request(method, path, body) {
    var headers = { Accept: "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      if (CONFIG.csrf_token) headers["X-CSRFToken"] = CONFIG.csrf_token;
      init.body = JSON.stringify(body);
    }
    return fetch(API_BASE + path, init).then(
      function (resp) {
        return resp.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          if (resp.status >= 500 || resp.status === 408 || resp.status === 429) {
            var wait = resp.status === 429 || resp.status === 503 ? retryAfterMs(resp) : null;
            throw new TransientError("server status " + resp.status, wait);
          }
          if (!resp.ok) {
            throw new ApiError(resp.status, data && data.error, data && data.detail);
          }
          return { status: resp.status, data: data };
        });
      },
      function (err) {
        throw new TransientError("network: " + (err && err.message));
      }
    );
  }

  /** request() retried with exponential back-off (and jitter) on network errors and 5xx. */
  function requestWithRetry(method, path, body) {
    var attempt = 0;
    function go() {
      return request(method, path, body).then(
        function (res) {
          if (attempt > 0) setBanner(null);
          return res;
        },
        function (err) {
          if (!(err instanceof TransientError)) {
            if (attempt > 0) setBanner(null);
            throw err;
          }
          var delay;
          if (typeof err.retryAfterMs === "number") {
            // The server says when to come back; a little spread keeps the participants it refused
            // together from all returning in the same instant.
            delay = Math.round(Math.min(RETRY_AFTER_MAX_MS, err.retryAfterMs) * (1 + 0.1 * Math.random()));
          } else {
            delay = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * Math.pow(2, attempt));
            delay = Math.round(delay * (0.75 + 0.5 * Math.random()));
          }
          attempt += 1;
          if (attempt >= 2) {
            setBanner(
              "Connection problem. Your answers are kept and will be sent when the connection is back. " +
              "Retrying in " + Math.ceil(delay / 1000) + " s\u2026"
            );
          }
          return sleep(delay).then(go);
        }
      );
    }
    return go();
  }

  // ------------------------------------------------------------------ answer queue
  var queue = {
    items: [], // [{key, block, payload}]
    running: false,
    fatal: null,
    listeners: [],

    load: function () {
      try {
        var raw = window.localStorage.getItem(STORAGE_KEY);
        this.items = raw ? JSON.parse(raw) : [];
        if (!Array.isArray(this.items)) this.items = [];
      } catch (e) {
        this.items = [];
      }
    },
    save: function () {
      try {
        if (this.items.length) window.localStorage.setItem(STORAGE_KEY, JSON.stringify(this.items));
        else window.localStorage.removeItem(STORAGE_KEY);
      } catch (e) {
        /* storage full or disabled: answers are still sent, just not kept across a reload */
      }
    },
    has: function (trialId) {
      return this.items.some(function (it) { return it.payload.trial === trialId; });
    },
    /** Adds an answer; returns a Promise of its acknowledgement (see notify). */
    add: function (item) {
      var self = this;
      var p = new Promise(function (resolve, reject) {
        self.listeners.push({ key: item.key, resolve: resolve, reject: reject });
      });
      this.items.push(item);
      this.save();
      this.kick();
      return p;
    },
    notify: function (key, ack) {
      this.listeners = this.listeners.filter(function (l) {
        if (l.key === key) { l.resolve(ack); return false; }
        return true;
      });
      this.listeners.filter(function (l) { return l.key === null; }).forEach(function (l) {
        l.check();
      });
    },
    kick: function () {
      if (this.running || this.fatal || this.items.length === 0) return;
      this.running = true;
      var self = this;
      var item = this.items[0];
      requestWithRetry("POST", "responses", item.payload).then(
        function (res) {
          self.finishItem(item, res.data || {});
        },
        function (err) {
          if (err instanceof ApiError && [400, 404, 409, 422].indexOf(err.status) >= 0) {
            // 409: the server has moved on (already answered, or not the first unanswered trial);
            // 404/400: this answer can never be stored. Drop it and resynchronise.
            self.finishItem(item, { conflict: true, status: err.status, detail: err.detail });
          } else {
            self.running = false;
            self.fatal = err;
            self.listeners.forEach(function (l) { if (l.reject) l.reject(err); });
            self.listeners = self.listeners.filter(function (l) { return l.key === null; });
            self.listeners.forEach(function (l) { l.check(); });
          }
        }
      );
    },
    finishItem: function (item, ack) {
      if (this.items[0] === item) this.items.shift();
      this.save();
      this.running = false;
      onAck(item, ack);
      this.notify(item.key, ack);
      this.kick();
    },
    /** Resolves when at most `n` answers are outstanding; rejects on a fatal error. */
    waitUntilAtMost: function (n) {
      var self = this;
      return new Promise(function (resolve, reject) {
        var l = { key: null };
        l.check = function () {
          if (self.fatal) { remove(); reject(self.fatal); }
          else if (self.items.length <= n) { remove(); resolve(); }
        };
        function remove() { self.listeners = self.listeners.filter(function (x) { return x !== l; }); }
        self.listeners.push(l);
        self.kick();
        l.check();
      });
    },
    drained: function () { return this.waitUntilAtMost(0); },
    retry: function () {
      this.fatal = null;
      this.kick();
    },
  };

  // ------------------------------------------------------------------ image preloading
  var preloader = {
    cache: new Map(), // url -> Promise (kept small: only the lookahead window)
    waiting: [],
    active: 0,
    load: function (url) {
      if (this.cache.has(url)) return this.cache.get(url);
      var self = this;
      var p = new Promise(function (resolve) {
        self.waiting.push({ url: url, resolve: resolve });
      });
      this.cache.set(url, p);
      this.pump();
      return p;
    },
    pump: function () {
      var self = this;
      while (this.active < PRELOAD_CONCURRENCY && this.waiting.length) {
        var job = this.waiting.shift();
        this.active += 1;
        (function (job) {
          var img = new Image();
          img.decoding = "async";
          var finish = function (ok) {
            self.active -= 1;
            job.resolve(ok);
            self.pump();
          };
          img.onload = function () {
            (img.decode ? img.decode() : Promise.resolve()).then(
              function () { finish(true); },
              function () { finish(true); }
            );
          };
          img.onerror = function () {
            self.cache.delete(job.url); // allow another try later
            finish(false);
          };
          img.src = job.url;
        })(job);
      }
    },
    /** Preloads the images of the given trials; forgets URLs outside this window. */
    window: function (trials) {
      var keep = new Set();
      var self = this;
      var promises = [];
      trials.forEach(function (t) {
        trialImages(t).forEach(function (u) {
          keep.add(u);
          promises.push(self.load(u));
        });
      });
      if (this.cache.size > 400) {
        this.cache.forEach(function (_, url) { if (!keep.has(url)) self.cache.delete(url); });
      }
      return Promise.all(promises);
    },
  };

  /** The images of a trial: its fields that its paradigm's plugin takes as IMAGE parameters. */
  function trialImages(t) {
    var Plugin = studyTrialKit.plugin(t.paradigm);
    if (!Plugin) return [];
    var params = Plugin.info.parameters;
    var urls = [];
    Object.keys(params).forEach(function (name) {
      if (params[name].type !== jsPsychModule.ParameterType.IMAGE || t[name] === undefined || t[name] === null) return;
      urls = urls.concat(Array.isArray(t[name]) ? t[name] : [t[name]]);
    });
    return urls.filter(function (u) { return typeof u === "string" && u; });
  }

  /** The task texts (practice reminder, strategy question) of the participant's paradigm; none when
   *  the page has no plugin for it (the trials then stop with a sentence saying so). */
  function task() {
    var Plugin = studyTrialKit.plugin(study().paradigm);
    return (Plugin && Plugin.task) || {};
  }

  // ------------------------------------------------------------------ state
  var S = {
    session: null,
    phase: null,
    progress: { answered: 0, total: 0 },
    buffer: [], // upcoming trials, in order, not yet shown
    generation: 0, // bumped whenever the buffer is thrown away
    fetching: null, // Promise of an in-flight GET trials
    current: null, // trial shown (or about to be)
    answeredIds: new Set(), // trials answered on this page (acknowledged or not)
    needResync: true,
    browserChecked: false,
    fullscreenAsked: false,
    leftFullscreen: false,
    initialPreloadDone: false,
    preloadImages: [],
    screen: null,
    action: null,
    feedback: null, // {correct: bool}
    notices: [], // [{id, html}] shown one after another
    completion: null,
    screenOutReason: null, // an eligibility check failed: sent to the server, which screens out
    chinrestDone: false,
  };

  // ------------------------------------------------------------------ attention, between two answers
  // A loss is the participant leaving the study: the window losing focus (jsPsych's "blur") or the tab
  // being hidden. Both usually fire together, so a loss is counted once until the study is back.
  var attention = { away: false, focusLosses: 0, fullscreenExits: 0 };
  function attentionLost() {
    if (!attention.away) attention.focusLosses += 1;
    attention.away = true;
  }
  function attentionBack() { attention.away = false; }
  function onInteraction(d) {
    if (d.event === "blur") attentionLost();
    else if (d.event === "focus") attentionBack();
    else if (d.event === "fullscreenexit") attention.fullscreenExits += 1;
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") attentionLost();
    else attentionBack();
  });
  /** The counts since the previous answer, which this answer reports; they start again from zero. */
  function takeAttention() {
    var counts = { focus_losses: attention.focusLosses, fullscreen_exits: attention.fullscreenExits };
    attention.focusLosses = 0;
    attention.fullscreenExits = 0;
    return counts;
  }

  function setSession(sess) {
    if (!sess || typeof sess !== "object") return;
    S.session = sess;
    if (sess.phase) setPhase(sess.phase);
    if (sess.progress) {
      S.progress = { answered: sess.progress.answered || 0, total: sess.progress.total || 0 };
      updateProgressBar();
    }
    if (sess.completion !== undefined) S.completion = sess.completion;
    applyVisualAngle();
  }

  // ------------------------------------------------------------------ screening (studyapp/screening.py)
  function screening() {
    return (S.session && S.session.screening) || {};
  }

  /** Query images at the study's fixed visual angle, from the chinrest's measures: 2·d·tan(θ/2) cm. */
  function queryPixels() {
    var c = S.session && S.session.calibration;
    var angle = screening().image_visual_angle_deg;
    if (!c || !angle) return null;
    return 2 * c.viewing_distance_cm * Math.tan((angle * Math.PI) / 360) * c.px_per_cm;
  }

  function applyVisualAngle() {
    var px = queryPixels();
    if (px) {
      document.body.classList.add("study-fixed-angle");
      document.body.style.setProperty("--study-query-px", px.toFixed(1) + "px");
    }
  }

  /** The query image's width as the trial screen would draw it now (its CSS size, for the export's
   *  visual angle): the fixed size, or a probe of the trial's own stylesheet. */
  function measuredQueryPixels() {
    var fixed = queryPixels();
    if (fixed) return fixed;
    var probe = document.createElement("div");
    probe.className = "r2afc";
    probe.style.cssText = "position:absolute;visibility:hidden;left:-9999px";
    probe.innerHTML = '<div class="r2afc-query-frame"></div>';
    document.body.appendChild(probe);
    var width = probe.firstChild.clientWidth; // the image's box, inside the frame's border
    document.body.removeChild(probe);
    return width > 0 ? width : null;
  }

  /** jsPsych's browser names (detect-browser) as the study's setting names them. */
  var BROWSER_NAMES = { "edge-chromium": "edge", "edge-ios": "edge", crios: "chrome", "chromium-webview": "chrome",
    fxios: "firefox", ios: "safari", "ios-webview": "safari", opera: "opera" };

  /** Which eligibility check the browser fails, from the browser check's data; null when none. */
  function ineligible(data) {
    var s = screening();
    if (s.desktop_only && (data.mobile || s.mobile_agent)) return "mobile_device";
    var allowed = s.supported_browsers || [];
    if (allowed.length) {
      var name = String(data.browser || "").toLowerCase();
      if (allowed.indexOf(BROWSER_NAMES[name] || name) < 0) return "unsupported_browser";
    }
    return null;
  }

  /** Sends a failed check; the server screens the participant out and says where they go. */
  function screenOut(reason) {
    return requestWithRetry("POST", "screen-out", { reason: reason }).then(function (res) {
      setSession(res.data);
      redirectScreenedOut();
    });
  }

  function redirectScreenedOut() {
    var target = S.session && S.session.screen_out;
    if (target && target.url && !redirectTimer) {
      redirectTimer = setTimeout(function () { window.location.assign(target.url); }, REDIRECT_DELAY_MS);
    }
  }

  function setPhase(phase) {
    if (S.phase === phase) return;
    S.phase = phase;
    var cls = document.body.className.replace(/\bstudy-phase-\S+/g, "").trim();
    document.body.className = (cls ? cls + " " : "") + "study-phase-" + phase;
  }

  function study() {
    return (S.session && S.session.study) || {};
  }

  function clearBuffer() {
    S.buffer = [];
    S.generation += 1;
  }

  function onAck(item, ack) {
    if (ack.conflict) {
      // Not stored: after the resync the server's first unanswered trial is shown again.
      S.answeredIds.delete(item.payload.trial);
      S.needResync = true;
      return;
    }
    S.progress.answered += 1;
    if (typeof ack.remaining === "number") S.progress.total = S.progress.answered + ack.remaining;
    updateProgressBar();
    var before = S.phase;
    if (ack.phase) setPhase(ack.phase);
    if (ack.practice_repeat) {
      clearBuffer();
    } else if (before === "practice" && S.phase !== "practice") {
      // keep buffered main trials, drop any practice ones
      S.buffer = S.buffer.filter(function (t) { return t.block !== "practice"; });
    }
  }

  var jsPsych = null;

  function updateProgressBar() {
    if (!jsPsych || !jsPsych.progressBar) return;
    var total = S.progress.total;
    var done = S.progress.answered + queue.items.length;
    var p = total > 0 ? Math.max(0, Math.min(1, done / total)) : 0;
    try { jsPsych.progressBar.progress = p; } catch (e) { /* ignore */ }
  }

  // ------------------------------------------------------------------ trials
  function isKnown(t) {
    return S.answeredIds.has(t.id) || queue.has(t.id) || (S.current && S.current.id === t.id) ||
      S.buffer.some(function (b) { return b.id === t.id; });
  }

  /** GET trials, appending the unknown ones to the buffer. Only one request at a time. */
  function fetchMore() {
    if (S.fetching) return S.fetching;
    var gen = S.generation;
    var limit = Math.min(100, BATCH + S.buffer.length + queue.items.length + 1);
    S.fetching = requestWithRetry("GET", "trials?limit=" + limit)
      .then(function (res) {
        var data = res.data || {};
        if (gen !== S.generation) return; // the buffer was thrown away meanwhile
        (data.trials || []).forEach(function (t) {
          if (!isKnown(t)) S.buffer.push(t);
        });
        if (typeof data.remaining === "number") {
          var total = S.progress.answered + data.remaining;
          if (total > S.progress.total) { S.progress.total = total; updateProgressBar(); }
        }
      })
      .finally(function () { S.fetching = null; });
    return S.fetching;
  }

  function topUp() {
    if (S.buffer.length < LOW_WATER && !S.fetching) {
      fetchMore().catch(function () { /* the next step will try again and report */ });
    }
    preloader.window(S.buffer.slice(0, LOOKAHEAD));
  }

  /** The next trial to show, or null when the server has moved past practice/main. */
  function nextTrial() {
    function dropStale() {
      if (S.phase === "main") {
        S.buffer = S.buffer.filter(function (t) { return t.block !== "practice"; });
      }
    }
    dropStale();
    if (S.buffer.length) return Promise.resolve(S.buffer.shift());
    return (S.fetching || fetchMore())
      .then(function () {
        dropStale();
        if (S.buffer.length) return null;
        return fetchMore();
      })
      .then(function () {
        dropStale();
        if (S.buffer.length) return S.buffer.shift();
        // Nothing left that we have not answered: once our answers are in, ask the server where we are.
        return queue.drained()
          .then(function () { return requestWithRetry("GET", "session"); })
          .then(function (res) {
            setSession(res.data);
            clearBuffer();
            if (S.phase !== "practice" && S.phase !== "main") return null;
            return fetchMore().then(function () {
              if (S.buffer.length) return S.buffer.shift();
              throw new ApiError(0, "no_trials", "The study has no trials to show right now. Please try again in a moment.");
            });
          });
      });
  }

  // ------------------------------------------------------------------ the step: server talk + decision
  function handleAction(a) {
    switch (a.type) {
      case "consent":
        return requestWithRetry("POST", "consent", { consent: a.value }).then(function (res) {
          setSession(res.data);
          if (!a.value) S.declined = true;
        });
      case "instructions":
        return requestWithRetry("POST", "instructions", { reading_ms: a.reading_ms }).then(function (res) {
          setSession(res.data);
        });
      case "answer":
        if (a.block === "practice") {
          return a.ack.then(function (ack) {
            if (ack.conflict) return;
            if (typeof ack.correct === "boolean") S.feedback = { correct: ack.correct };
            if (ack.practice_repeat) {
              S.notices.push({
                id: "practice-repeat",
                html:
                  "<h1>Let\u2019s practise once more</h1>" +
                  "<p>Not all practice answers were correct. Here is another short practice round.</p>" +
                  (task().reminder ? "<p>" + task().reminder + "</p>" : ""),
              });
            } else if (S.phase === "main") {
              S.notices.push({
                id: "practice-done",
                html:
                  "<h1>Practice complete</h1>" +
                  "<p>Well done. The main part starts now. From here on you will not be told whether your answers are correct.</p>",
              });
            }
          });
        }
        return queue.waitUntilAtMost(MAX_UNACKED - 1);
      case "screen_out":
        return screenOut(a.reason);
      case "calibration":
        return requestWithRetry("POST", "calibration", a.values).then(function (res) {
          S.chinrestDone = true;
          setSession(res.data);
          if (S.phase === "screened_out") redirectScreenedOut();
        });
      case "questionnaire":
        return queue.drained()
          .then(function () { return requestWithRetry("POST", "questionnaire", { answers: a.answers }); })
          .then(function (res) {
            var d = res.data || {};
            setPhase(d.phase || "done");
            S.completion = d.completion || null;
          });
      default:
        return Promise.resolve();
    }
  }

  function needFullscreen() {
    if (!study().fullscreen) return false;
    if (document.fullscreenElement || document.webkitFullscreenElement) return false;
    return !S.fullscreenAsked || S.leftFullscreen;
  }

  document.addEventListener("fullscreenchange", function () {
    if (document.fullscreenElement) S.wasFullscreen = true;
    else if (S.wasFullscreen) S.leftFullscreen = true;
  });

  function decide() {
    S.screen = null;
    if (queue.fatal) return Promise.reject(queue.fatal);
    if (S.declined) { S.screen = "declined"; return Promise.resolve(); }
    if (S.feedback) { S.screen = "feedback"; return Promise.resolve(); }
    if (S.notices.length) { S.screen = "notice"; return Promise.resolve(); }

    if (S.needResync || !S.session) {
      return queue.drained()
        .then(function () { return requestWithRetry("GET", "session"); })
        .then(function (res) {
          S.needResync = false;
          setSession(res.data);
          clearBuffer();
          S.current = null;
          return decide();
        });
    }

    switch (S.phase) {
      case "consent":
        S.screen = "consent";
        return Promise.resolve();
      case "instructions":
        S.screen = "instructions";
        return Promise.resolve();
      case "practice":
      case "main":
        if (!S.browserChecked) { S.screen = "browser-check"; return Promise.resolve(); }
        if (S.screenOutReason) {
          S.action = { type: "screen_out", reason: S.screenOutReason };
          S.screenOutReason = null;
          return handleAction(S.action).then(function () { S.action = null; return decide(); });
        }
        if (needFullscreen()) { S.screen = "fullscreen"; return Promise.resolve(); }
        if (screening().virtual_chinrest && !S.chinrestDone && !(S.session && S.session.calibration)) {
          S.screen = "chinrest";
          return Promise.resolve();
        }
        return (S.current ? Promise.resolve(S.current) : nextTrial()).then(function (t) {
          if (!t) return decide(); // the phase moved on
          if (!studyTrialKit.plugin(t.paradigm)) {
            throw new ApiError(0, "unknown_paradigm", "This page cannot show trials of the kind \u201c" + t.paradigm +
              "\u201d. Please reload the page; if that does not help, please contact the researchers.");
          }
          S.current = t;
          // A block of a within-participant design opens with its own short screen, once per page load
          // of the trial that opens it (the server marks that trial).
          if (t.block_instructions_html && S.blockOpened !== t.id) {
            S.screen = "block-instructions";
            return;
          }
          if (!S.initialPreloadDone) {
            S.initialPreloadDone = true;
            var first = [t].concat(S.buffer.slice(0, LOOKAHEAD - 1));
            S.preloadImages = [];
            first.forEach(function (x) { S.preloadImages = S.preloadImages.concat(trialImages(x)); });
            S.screen = "preload";
            return;
          }
          // Make sure the current trial's images are in (usually already preloaded), then go.
          return waitWithMessage(preloader.window([t]), "Loading images\u2026").then(function () {
            S.screen = "trial";
            topUp();
          });
        });
      case "questionnaire":
        if (document.fullscreenElement && document.exitFullscreen) {
          document.exitFullscreen().catch(function () {});
        }
        S.screen = "questionnaire";
        return Promise.resolve();
      case "done":
        S.screen = "done";
        return Promise.resolve();
      case "screened_out":
        S.screen = "screened-out";
        redirectScreenedOut();
        return Promise.resolve();
      default:
        return Promise.reject(new ApiError(0, "unknown_phase", "The study is in a state this page does not know (" + S.phase + "). Please reload the page."));
    }
  }

  var stepDisplay = null;
  var stepMessageTimer = null;
  function showWaiting(text) {
    if (stepDisplay) {
      stepDisplay.innerHTML = '<div class="study-wait" id="study-wait"><div class="study-spinner" aria-hidden="true"></div><p>' +
        escapeHtml(text || "Loading\u2026") + "</p></div>";
    }
  }
  function waitWithMessage(promise, text) {
    var t = setTimeout(function () { showWaiting(text); }, WAIT_MESSAGE_AFTER_MS);
    return promise.finally(function () { clearTimeout(t); });
  }

  function step() {
    var pre = S.action ? handleAction(S.action) : Promise.resolve();
    return pre.then(function () {
      S.action = null;
      return decide();
    });
  }

  function errorText(err) {
    if (err instanceof ApiError) {
      if (err.detail) return err.detail;
      if (err.status === 403) return "The server refused this request (" + err.code + ").";
      if (err.status === 404) return "This study session could not be found. Please use the link you were given.";
      return "The server could not process the request (status " + err.status + ").";
    }
    return "Something unexpected went wrong in this page" + (err && err.message ? " (" + err.message + ")" : "") + ".";
  }

  /** A plugin whose trial() returns a Promise: jsPsych 8 awaits it before the next node. */
  var StepPlugin = (function () {
    function StepPluginCls(jsPsychInstance) { this.jsPsych = jsPsychInstance; }
    StepPluginCls.info = {
      name: "studyapp-step",
      version: "1.0.0",
      parameters: {},
      data: { screen: { type: jsPsychModule.ParameterType.STRING } },
    };
    StepPluginCls.prototype.trial = function (display_element, trial, on_load) {
      stepDisplay = display_element;
      if (typeof on_load === "function") on_load();
      stepMessageTimer = setTimeout(function () { showWaiting("Loading\u2026"); }, WAIT_MESSAGE_AFTER_MS);
      function attempt() {
        return step().then(
          function () {
            clearTimeout(stepMessageTimer);
            stepDisplay = null;
            return { screen: S.screen };
          },
          function (err) {
            clearTimeout(stepMessageTimer);
            if (window.console) console.error(err);
            if (err instanceof ApiError && err.status === 409) {
              // the server has moved on: start over from its state
              S.action = null;
              S.needResync = true;
              return attempt();
            }
            // An expired security token stays expired however often the request is retried: only a
            // reload fetches a fresh one. Unacknowledged answers wait in localStorage and are resent.
            var reload = err instanceof ApiError && err.code === "csrf_failed";
            display_element.innerHTML =
              '<div class="study-error" id="study-error" role="alert">' +
              "<h1>Sorry, there is a problem</h1>" +
              '<p class="study-error-detail" id="study-error-detail">' + escapeHtml(errorText(err)) + "</p>" +
              "<p>Your answers so far are saved. You can try again; if the problem persists, please contact the researchers.</p>" +
              '<button type="button" class="jspsych-btn study-btn" id="study-retry">' +
              (reload ? "Reload the page" : "Try again") + "</button></div>";
            return new Promise(function (resolve) {
              display_element.querySelector("#study-retry").addEventListener("click", function () {
                if (reload) {
                  window.location.reload();
                  return;
                }
                display_element.innerHTML = "";
                // An answer stays in the queue; its acknowledgement is not awaited again.
                if (S.action && S.action.type === "answer") S.action = null;
                queue.retry();
                S.needResync = true;
                resolve();
              });
            }).then(function () {
              stepMessageTimer = setTimeout(function () { showWaiting("Loading\u2026"); }, WAIT_MESSAGE_AFTER_MS);
              return attempt();
            });
          }
        );
      }
      return attempt();
    };
    return StepPluginCls;
  })();

  // ------------------------------------------------------------------ screens
  function when(name, trial) {
    return { timeline: [trial], conditional_function: function () { return S.screen === name; } };
  }

  function btn(id, extraClass) {
    return function (choice) {
      return '<button type="button" class="jspsych-btn study-btn ' + (extraClass || "") + '" id="' + id(choice) + '">' +
        escapeHtml(choice) + "</button>";
    };
  }

  var consentScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus: function () {
      return '<div class="study-doc" id="study-consent"><h1>' + escapeHtml(study().title || "Consent to take part") + "</h1>" +
        (study().consent_html || "") + "</div>";
    },
    choices: ["I agree", "I do not agree"],
    button_html: function (choice, i) {
      return '<button type="button" class="jspsych-btn study-btn ' + (i === 0 ? "study-btn-primary" : "") +
        '" id="' + (i === 0 ? "consent-agree" : "consent-decline") + '" data-action="' + (i === 0 ? "agree" : "decline") + '">' +
        escapeHtml(choice) + "</button>";
    },
    button_layout: "flex",
    css_classes: ["study-screen-doc"],
    on_finish: function (data) {
      S.action = { type: "consent", value: data.response === 0 };
    },
  };

  var declinedScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus:
      '<div class="study-doc study-final" id="study-declined"><h1>Thank you</h1>' +
      "<p>You have chosen not to take part. No further data will be collected.</p>" +
      "<p>You can close this window now.</p></div>",
    choices: [],
  };

  var instructionsScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus: function () {
      return '<div class="study-doc" id="study-instructions"><h1>Instructions</h1>' + (study().instructions_html || "") +
        '<div class="study-keys-help"><p>You can answer with the buttons or with the keyboard: ' +
        (study().confidence === false
          ? "<kbd>1</kbd> or <kbd>\u2190</kbd> for A, <kbd>0</kbd> or <kbd>\u2192</kbd> for B."
          : "<kbd>1</kbd> <kbd>2</kbd> <kbd>3</kbd> for A (very sure, sure, unsure) and <kbd>8</kbd> <kbd>9</kbd> <kbd>0</kbd> for B (unsure, sure, very sure).") +
        " The buttons unlock shortly after the images appear.</p></div></div>";
    },
    choices: ["Start the practice"],
    button_html: btn(function () { return "instructions-continue"; }, "study-btn-primary"),
    css_classes: ["study-screen-doc"],
    on_finish: function (data) {
      S.action = { type: "instructions", reading_ms: data.rt };
    },
  };

  var blockInstructionsScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus: function () {
      return '<div class="study-doc" id="study-block-instructions" data-block="' + escapeHtml(String(S.current.block_index)) +
        '">' + (S.current.block_instructions_html || "") + "</div>";
    },
    choices: ["Continue"],
    button_html: btn(function () { return "block-continue"; }, "study-btn-primary"),
    css_classes: ["study-screen-doc"],
    on_finish: function () {
      S.blockOpened = S.current.id;
    },
  };

  function windowTooSmall() {
    return window.innerWidth < (study().min_width || 0) || window.innerHeight < (study().min_height || 0);
  }

  var browserCheckScreen = {
    type: jsPsychBrowserCheck,
    features: ["width", "height", "browser", "browser_version", "mobile", "os"],
    // The plugin draws its resize message whenever a minimum is set, even for a window that is
    // large enough (a flash); pass the minimum only when the window is actually too small.
    minimum_width: function () { return windowTooSmall() ? study().min_width || 0 : 0; },
    minimum_height: function () { return windowTooSmall() ? study().min_height || 0 : 0; },
    window_resize_message: function () {
      return '<div class="study-doc" id="study-resize"><h1>Please make the window larger</h1>' +
        "<p>This study needs a browser window of at least " + escapeHtml(study().min_width || 0) + " \u00d7 " +
        escapeHtml(study().min_height || 0) + " pixels. Please maximise the window or zoom out (Ctrl and minus).</p>" +
        '<p>Current size: <span id="browser-check-actual-width"></span> \u00d7 <span id="browser-check-actual-height"></span> ' +
        "(width \u00d7 height); needed: <span id=\"browser-check-min-width\"></span> \u00d7 <span id=\"browser-check-min-height\"></span>.</p></div>";
    },
    resize_fail_button_text: "I cannot make the window any larger",
    exclusion_message: function () {
      // The window stayed too small after the participant's tries: screened out where the study sends
      // screen-outs somewhere (the redirect follows the server's answer), asked to return otherwise.
      if (screening().screen_out) {
        screenOut("window_too_small").catch(function () { /* the page says what to do */ });
        return '<div class="study-doc study-final" id="study-screened-out"><h1>Sorry</h1>' +
          "<p>Your browser window is too small for this study. You will be taken back to Prolific in a few seconds; " +
          "you will be paid for your time so far.</p></div>";
      }
      return '<div class="study-doc study-final" id="study-excluded"><h1>Sorry</h1>' +
        "<p>Your browser window is too small for this study. Please return the study; you can reopen the link on a larger screen.</p></div>";
    },
    on_finish: function (data) {
      S.browserChecked = true;
      S.screenOutReason = ineligible(data);
    },
  };

  var chinrestRefocus = null;
  var chinrestScreen = {
    type: typeof jsPsychVirtualChinrest !== "undefined" ? jsPsychVirtualChinrest : null,
    blindspot_reps: 3,
    resize_units: "none",
    item_path: null,
    adjustment_prompt: '<div class="study-doc" id="study-chinrest-card"><p>Hold a credit card (or any card of that size) ' +
      "against the screen and drag the corner of the grey box until it is the same size as the card.</p></div>",
    adjustment_button_prompt: "The box is the size of the card",
    blindspot_prompt: '<div class="study-doc" id="study-chinrest-blindspot"><p>Close your right eye and look at the black ' +
      "square with your left eye. Press the space bar to start the red dot, and press it again as soon as the dot " +
      "disappears.</p></div>",
    blindspot_done_prompt: "Continue",
    redo_measurement_button_label: "No, measure again",
    on_load: function () {
      // jsPsych hears keys inside its container only, and the plugin's buttons remove themselves when
      // clicked, which leaves the focus on the page's body: the blind-spot task's space bar would go
      // unheard. Every click here gives the focus back to the container.
      chinrestRefocus = function () {
        setTimeout(function () {
          var container = jsPsych.getDisplayContainerElement();
          if (container && !container.contains(document.activeElement)) container.focus();
        }, 0);
      };
      document.addEventListener("click", chinrestRefocus, true);
    },
    on_finish: function (data) {
      if (chinrestRefocus) document.removeEventListener("click", chinrestRefocus, true);
      chinrestRefocus = null;
      var values = {
        px_per_cm: data.px2mm * 10,
        viewing_distance_cm: data.view_dist_mm / 10,
      };
      S.session.calibration = values; // the image size is measured at these values
      values = Object.assign({}, values, { image_px: measuredQueryPixels() });
      S.action = { type: "calibration", values: values };
    },
  };

  var screenedOutScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus: function () {
      var target = (S.session && S.session.screen_out) || {};
      var html = '<div class="study-doc study-final" id="study-screened-out"><h1>Thank you</h1>' +
        "<p>This study needs a different setup from the one you are using, so it ends here. You will be paid for your time so far.</p>";
      if (target.code) html += '<p>Your code:</p><p class="study-code" id="screen-out-code">' + escapeHtml(target.code) + "</p>";
      if (target.url) {
        html += '<p>You will be taken back automatically in a few seconds. <a id="screen-out-link" href="' +
          escapeHtml(target.url) + '">Continue now</a></p>';
      } else {
        html += "<p>Please return the study on the recruitment platform.</p>";
      }
      return html + "</div>";
    },
    choices: [],
    on_load: function () {
      try { window.localStorage.removeItem(STORAGE_KEY); } catch (e) { /* ignore */ }
      redirectScreenedOut();
    },
  };

  var fullscreenScreen = {
    type: jsPsychFullscreen,
    fullscreen_mode: true,
    message: function () {
      var again = S.fullscreenAsked;
      return '<div class="study-doc" id="study-fullscreen"><h1>' + (again ? "Back to full screen" : "Full screen") + "</h1>" +
        (again ? "<p>You have left full-screen mode.</p>" : "") +
        "<p>The study runs in full-screen mode. Press the button to continue.</p></div>";
    },
    button_label: "Continue in full screen",
    delay_after: 300,
    on_finish: function () {
      S.fullscreenAsked = true;
      S.leftFullscreen = false;
    },
  };

  var preloadScreen = {
    type: jsPsychPreload,
    images: function () { return S.preloadImages; },
    message: '<h1 class="study-preload-msg">Loading images\u2026</h1>',
    show_progress_bar: true,
    continue_after_error: true,
    max_load_time: 60000,
  };

  /**
   * The trial screen of one paradigm: its registered plugin, given the study's settings and, under
   * the same names, the fields of the trial payload that the plugin takes as parameters.
   */
  function trialScreen(paradigm) {
    var Plugin = studyTrialKit.plugin(paradigm);
    var common = studyTrialKit.COMMON_PARAMETERS;
    var node = {
      type: Plugin,
      response_lock_ms: function () {
        var v = study().response_lock_ms;
        return typeof v === "number" ? v : 1500;
      },
      confidence: function () { return study().confidence !== false; },
      badge: function () { return S.current.block === "practice" ? "Practice" : null; },
      trial_id: function () { return S.current.id; },
      data: {
        block: function () { return S.current.block; },
        position: function () { return S.current.position; },
        paradigm: paradigm,
      },
      on_finish: onTrialFinish,
    };
    Object.keys(Plugin.info.parameters).forEach(function (name) {
      if (Object.prototype.hasOwnProperty.call(common, name)) return;
      node[name] = function () {
        var v = S.current[name];
        return v === undefined || v === null ? Plugin.info.parameters[name].default : v;
      };
    });
    return {
      timeline: [node],
      conditional_function: function () { return S.screen === "trial" && S.current && S.current.paradigm === paradigm; },
    };
  }

  function onTrialFinish(data) {
    var t = S.current;
    S.current = null;
    S.answeredIds.add(t.id);
    var item = {
      key: uuid4(),
      block: t.block,
      payload: {
        trial: t.id,
        idempotency_key: null,
        choice: data.choice,
        confidence: study().confidence === false ? null : data.confidence,
        rt_ms: data.rt_ms,
        client_time: data.client_time,
        webdriver: navigator.webdriver === true,
      },
    };
    var counts = takeAttention();
    item.payload.focus_losses = counts.focus_losses;
    item.payload.fullscreen_exits = counts.fullscreen_exits;
    item.payload.idempotency_key = item.key;
    var ack = queue.add(item);
    ack.catch(function () { /* reported by the next step */ });
    updateProgressBar();
    S.action = { type: "answer", block: t.block, ack: ack };
  }

  var feedbackScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus: function () {
      var ok = S.feedback && S.feedback.correct;
      return '<h1 class="study-feedback ' + (ok ? "study-feedback-correct" : "study-feedback-wrong") +
        '" id="study-feedback" data-correct="' + (ok ? "true" : "false") + '">' + (ok ? "Correct" : "Wrong") + "</h1>";
    },
    choices: [],
    trial_duration: FEEDBACK_MS,
    on_finish: function () { S.feedback = null; },
  };

  var noticeScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus: function () {
      var n = S.notices[0];
      return '<div class="study-doc study-notice" id="study-notice" data-notice="' + escapeHtml(n.id) + '">' + n.html + "</div>";
    },
    choices: ["Continue"],
    button_html: btn(function () { return "notice-continue"; }, "study-btn-primary"),
    on_finish: function () { S.notices.shift(); },
  };

  var AGE_RANGES = ["18\u201324", "25\u201334", "35\u201344", "45\u201354", "55\u201364", "65 or older"];
  var questionnaireScreen = {
    type: jsPsychSurveyHtmlForm,
    preamble: '<div class="study-doc"><h1>A few last questions</h1><p>All questions are optional.</p></div>',
    html: function () {
      return '<div class="study-doc study-form" id="study-questionnaire">' +
      '<label for="q-age">Your age range</label>' +
      '<select id="q-age" name="age_range"><option value="">Prefer not to say</option>' +
      AGE_RANGES.map(function (a) { return '<option value="' + a + '">' + a + "</option>"; }).join("") +
      "</select>" +
      '<label for="q-strategy">' + escapeHtml(task().strategy_question || "Which strategy did you use to choose your answers?") + "</label>" +
      '<textarea id="q-strategy" name="strategy" rows="4" maxlength="2000"></textarea>' +
      '<label for="q-problems">Did anything go wrong or was anything unclear?</label>' +
      '<textarea id="q-problems" name="problems" rows="3" maxlength="2000"></textarea>' +
      "</div>";
    },
    button_label: "Submit and finish",
    autofocus: "q-strategy",
    on_finish: function (data) {
      S.action = { type: "questionnaire", answers: data.response || {} };
    },
  };

  var redirectTimer = null;
  var doneScreen = {
    type: jsPsychHtmlButtonResponse,
    stimulus: function () {
      var c = S.completion || {};
      var url = c.url || "";
      var html = '<div class="study-doc study-final" id="study-done"><h1>Thank you!</h1>' +
        "<p>You have completed the study.</p>";
      if (study().debrief_html) html += '<div class="study-debrief">' + study().debrief_html + "</div>";
      if (c.code) {
        html += '<p>Your completion code:</p><p class="study-code" id="completion-code">' + escapeHtml(c.code) + "</p>";
      }
      if (url) {
        html += '<p id="completion-redirect">You will be taken back automatically in a few seconds. ' +
          '<a id="completion-link" href="' + escapeHtml(url) + '">Continue now</a></p>';
      } else {
        html += "<p>You can close this window now.</p>";
      }
      return html + "</div>";
    },
    choices: [],
    on_load: function () {
      var c = S.completion || {};
      try { window.localStorage.removeItem(STORAGE_KEY); } catch (e) { /* ignore */ }
      if (c.url && !redirectTimer) {
        redirectTimer = setTimeout(function () { window.location.assign(c.url); }, REDIRECT_DELAY_MS);
      }
    },
  };

  // ------------------------------------------------------------------ start
  function start() {
    var target = document.getElementById("jspsych-target");
    if (!target) throw new Error("no #jspsych-target element");
    queue.load();
    jsPsych = initJsPsych({
      display_element: target,
      show_progress_bar: true,
      auto_update_progress_bar: false,
      message_progress_bar: "Progress",
      on_interaction_data_update: onInteraction,
    });
    window.studyApp = { state: S, queue: queue, jsPsych: jsPsych }; // for debugging and tests
    queue.kick(); // answers left over from a previous page load go first
    var loop = {
      timeline: [
        { type: StepPlugin },
        when("consent", consentScreen),
        when("declined", declinedScreen),
        when("instructions", instructionsScreen),
        when("block-instructions", blockInstructionsScreen),
        when("browser-check", browserCheckScreen),
        when("fullscreen", fullscreenScreen),
        when("chinrest", chinrestScreen),
        when("screened-out", screenedOutScreen),
        when("preload", preloadScreen),
      ].concat(studyTrialKit.paradigms().map(trialScreen), [
        when("feedback", feedbackScreen),
        when("notice", noticeScreen),
        when("questionnaire", questionnaireScreen),
        when("done", doneScreen),
      ]),
      loop_function: function () { return true; },
    };
    jsPsych.run([loop]);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
