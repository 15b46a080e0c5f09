"""WIDGET_ALLOWED_ORIGINS: read by settings, so it imports nothing of Django's app machinery."""

from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured


def widget_origins_parse(value: list[str]) -> list[str]:
    """Normalise `scheme://host[:port]` origins; anything else is a configuration error."""
    origins = []
    for item in value:
        parsed = urlparse(item.strip().lower())
        try:
            port = parsed.port
        except ValueError:  # a port that is not a number or out of range
            port = -1
        if (
            port == -1
            or parsed.scheme not in {"http", "https"}
            or not parsed.hostname
            or parsed.hostname.startswith(".")  # channels reads ".x.com" as every subdomain
            or "*" in parsed.netloc
            or parsed.path not in {"", "/"}
            or parsed.query
            or parsed.fragment
            or parsed.username
        ):
            raise ImproperlyConfigured(
                f"WIDGET_ALLOWED_ORIGINS: {item!r} is not an origin like https://shop.example "
                "or http://127.0.0.1:8080 (scheme, host and optional port; no path, no wildcard)."
            )
        origins.append(f"{parsed.scheme}://{parsed.hostname}" + (f":{port}" if port else ""))
    return origins
