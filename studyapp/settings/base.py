"""Settings shared by every environment.

Every secret and endpoint comes from the environment (django-environ); the defaults make the embedded
demo work with no variables at all: SQLite under var/, and Celery tasks run in-process when no broker
is configured.
"""
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
env_file = BASE_DIR / ".env"
if env_file.exists():
    environ.Env.read_env(str(env_file))

VAR_DIR = Path(env("STUDYAPP_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-embedded-default-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Recruitment ids (PROLIFIC_PID, workerId) are stored only as HMACs under this key, so a database dump
# cannot be joined back to a recruitment platform's accounts without it.
PARTICIPANT_ID_KEY = env("PARTICIPANT_ID_KEY", default=SECRET_KEY)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "studyapp.apps.StudyAppConfig",
    "axes",  # the admin's sign-in lockout (studyapp/lockout.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "studyapp.middleware.APIErrorShapeMiddleware",
    "studyapp.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before the sessions and the CSRF check: a refused request costs a cache increment, nothing more.
    "studyapp.ratelimit.ParticipantRateLimitMiddleware",
    "studyapp.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "studyapp.middleware.BrowserAuthenticationMiddleware",
    "studyapp.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "studyapp.middleware.DatabaseUnavailableMiddleware",
    "studyapp.middleware.QueueUnavailableMiddleware",
    # Last, as django-axes asks: it only looks at a request its authentication backend marked locked out.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "studyapp.urls"
WSGI_APPLICATION = "studyapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The in-process worker writes job progress while the dev server reads it; a busy timeout keeps
    # SQLite's single writer from surfacing as "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    # A kept connection that PostgreSQL dropped (a restart, a failover) is replaced at the next request
    # instead of failing it.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # libpq waits for a server that does not answer for as long as TCP does (minutes); a participant's
    # request should get its 503 (middleware.py) in seconds. DATABASE_URL's ?connect_timeout= overrides.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)

# The answer statement is prepared once per connection (studyapp.participation). A pooler in transaction
# mode (PgBouncer) hands a session's statements to different server connections: turn this off behind one.
DATABASE_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache holds the participant API's request counts and the admin's failed sign-ins. With several
# gunicorn workers it must be shared (redis://host:6379/1) for the limits to hold across them.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # The rate limits and the lockout fail open when the cache cannot be reached (ratelimit.py), which
    # spares participants only if a hung Redis is given up on quickly: redis-py's default is 5 s, per
    # request. A Redis that answers at all answers in milliseconds. CACHE_URL's ?socket_timeout= overrides.
    for _option in ("socket_connect_timeout", "socket_timeout"):
        CACHES["default"].setdefault("OPTIONS", {}).setdefault(_option, 0.5)

# Participant pages and API: requests per window per participant token and per client address (0 turns
# a limit off). A participant needs a few requests a minute; a lab behind one address may need more.
PARTICIPANT_RATE_LIMIT_PER_TOKEN = env.int("RATE_LIMIT_PER_TOKEN", default=120)
PARTICIPANT_RATE_LIMIT_PER_IP = env.int("RATE_LIMIT_PER_IP", default=600)
PARTICIPANT_RATE_LIMIT_WINDOW = env.int("RATE_LIMIT_WINDOW_SECONDS", default=60)
# The start form, which reserves a slot: arrivals per window per client address (and study) and per
# study (0 turns one off). A person starts once; a flood from one address or from many is cut off.
ARRIVAL_RATE_LIMIT_PER_IP = env.int("ARRIVAL_RATE_LIMIT_PER_IP", default=10)
ARRIVAL_RATE_LIMIT_PER_STUDY = env.int("ARRIVAL_RATE_LIMIT_PER_STUDY", default=1200)
ARRIVAL_RATE_LIMIT_WINDOW = env.int("ARRIVAL_RATE_LIMIT_WINDOW_SECONDS", default=60)
# The cookie that lets a participant's browser resume holds the participant's token: over HTTPS only in
# production (settings/production.py).
RESUME_COOKIE_SECURE = env.bool("RESUME_COOKIE_SECURE", default=False)
# Proxies in front of the app that append to X-Forwarded-For; 0 uses the connection's own address.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
CSRF_FAILURE_VIEW = "studyapp.csrf.csrf_failure"

# The admin's sign-in, by django-axes (studyapp/lockout.py): this many failures for a username from one
# address lock that pair out; the second figure, from one address whatever the usernames, the address;
# each failure counts until LOGIN_LOCKOUT_SECONDS after the latest, and a lockout lasts that long.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_LOCKOUT_ATTEMPTS = env.int("LOGIN_LOCKOUT_ATTEMPTS", default=5)
LOGIN_LOCKOUT_ADDRESS_ATTEMPTS = env.int("LOGIN_LOCKOUT_ADDRESS_ATTEMPTS", default=20)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=15 * 60)
AXES_HANDLER = "studyapp.lockout.LockoutHandler"
AXES_FAILURE_LIMIT = "studyapp.lockout.failure_limit"
AXES_COOLOFF_TIME = "studyapp.lockout.cool_off"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # the address's own ceiling is LockoutHandler's
AXES_USERNAME_CALLABLE = "studyapp.lockout.username"
AXES_CLIENT_IP_CALLABLE = "studyapp.ratelimit.client_address"
AXES_LOCKOUT_CALLABLE = "studyapp.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Attempts while locked out are not recorded, so further guesses do not prolong a lockout.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_VERBOSE = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# The images participants are shown, flat and content-addressed, published from the artifacts on import;
# their names never change, so they are served with a year-long cache lifetime. Nothing else lives here:
# a proxy may serve the folder as it is.
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
SERVE_MEDIA = env.bool("SERVE_MEDIA", default=True)
# Stimulus artifacts (manifest.json, the answer key to every trial, and the images) and the admin's
# region pictures: never served to participants, and refused by a system check inside MEDIA_ROOT.
ARTIFACT_ROOT = Path(env("ARTIFACT_ROOT", default=str(VAR_DIR / "artifacts")))

# Celery: with no broker configured, tasks run in the calling process (the embedded default).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="")
# Where a sharded stimulus job's chord counts its finished shards (Redis: redis://redis:6379/2). Without
# one, a broker's stimulus jobs run as one task each and `manage.py check` says so.
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ROUTES = {
    "studyapp.tasks.generate_stimuli": {"queue": "gpu"},
    "studyapp.tasks.extract_stimulus_shard": {"queue": "gpu"},
    "studyapp.tasks.finish_stimulus_shards": {"queue": "gpu"},
    "studyapp.tasks.analyse_regions": {"queue": "gpu"},
}
# With Redis, a message whose worker died is handed out again once this many seconds have passed since
# it was taken. It must exceed the longest job, or a slow job would run twice; lower it where jobs are
# short and a quick retry matters more.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=6 * 3600),
    # Workers look for such messages this often: kombu's own default works out at 100 s (a sweep every
    # 10 s that scans Redis every 10th time). A short visibility timeout wants a short sweep too.
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_SECONDS", default=100),
    "unacked_restore_throttle": 1,
    # Without them, sending a task to a broker that does not answer blocks the admin's request for good
    # (kombu's default is no timeout); with them it fails, and the admin says the queue is unreachable.
    # Above kombu's 1 s BRPOP poll, which a worker's connection must outlast.
    "socket_connect_timeout": 5,
    "socket_timeout": 5,
}
# Celery's default retries a failed publish 3 times: against a hung broker that is some 20 s of an admin
# request, near gunicorn's 30 s timeout, past which the job would stay queued with nothing sent.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
# A running job's worker (a stimulus job's or a region analysis's: studyapp/lifecycle.py) touches its row
# this often; silent for the second figure, it counts as dead and a redelivered message takes the job over.
STIMULUS_HEARTBEAT_SECONDS = env.float("STIMULUS_HEARTBEAT_SECONDS", default=10.0)
STIMULUS_STALE_AFTER_SECONDS = env.float("STIMULUS_STALE_AFTER_SECONDS", default=60.0)
CELERY_TASK_DEFAULT_QUEUE = "default"
# A stimulus job over more images than this is split into shards of about this many, each a task of its
# own on the gpu queue, so that several GPU workers share it (studyapp/shards.py); 0: never. A job's
# parameters may ask for a number of shards themselves ({"shards": 4}; 1: one task).
STIMULUS_SHARD_IMAGES = env.int("STIMULUS_SHARD_IMAGES", default=10000)

# The demo network's trained weights are cached here so it trains once per machine.
STIMULI_CACHE_DIR = env("STIMULI_CACHE_DIR", default=str(VAR_DIR / "cache"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}
