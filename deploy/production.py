"""Production settings: `DJANGO_SETTINGS_MODULE=deploy.production`.

Requires DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL and REDIS_URL in the
environment; refuses to start without them.
"""

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from chatbot.settings import *  # noqa: F403

for _required in ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_ALLOWED_HOSTS"):
    if not os.environ.get(_required):
        raise ImproperlyConfigured(f"{_required} must be set in production.")
if DEBUG:  # noqa: F405
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production.")
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:  # noqa: F405 - Django's own deploy check
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is too weak: use 50+ random characters "
        "(python -c 'from django.core.management.utils import get_random_secret_key as k; "
        "print(k())')."
    )
_model_hosts = {urlsplit(u.strip()).hostname for u in MODEL_SERVER_URL.split(",") if u.strip()}  # noqa: F405
_beyond_localhost = MODEL_SERVER_DISCOVER or bool(_model_hosts - {"127.0.0.1", "localhost", "::1"})  # noqa: F405
if _beyond_localhost and not MODEL_SERVER_API_KEY:  # noqa: F405
    raise ImproperlyConfigured(
        "MODEL_SERVER_API_KEY must be set when model servers run on other hosts: "
        "llama-server would otherwise answer anyone on the network."
    )
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)  # noqa: F405
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)  # noqa: F405
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
WHITENOISE_USE_FINDERS = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    "artifacts": ARTIFACT_STORAGE,  # noqa: F405
}
