"""Which settings module a process runs with, said out loud when it was not chosen."""

import os
import sys

DEVELOPMENT_SETTINGS = "chatbot.settings"


def settings_module_select() -> str:
    """DJANGO_SETTINGS_MODULE as set; unset, the development settings, with a warning on
    stderr (a production process must name deploy.production, which refuses unsafe values)."""
    chosen = os.environ.get("DJANGO_SETTINGS_MODULE")
    if chosen:
        return chosen
    os.environ["DJANGO_SETTINGS_MODULE"] = DEVELOPMENT_SETTINGS
    print(
        f"WARNING: DJANGO_SETTINGS_MODULE is not set; using the development settings "
        f"({DEVELOPMENT_SETTINGS}). In production set DJANGO_SETTINGS_MODULE=deploy.production.",
        file=sys.stderr,
    )
    return DEVELOPMENT_SETTINGS
