from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training and model versions"

    def ready(self) -> None:
        from chatbot.serving import versions
        from training import registry

        # Serving reads the registry through this one interface (chatbot imports no training).
        versions.registry_connect(registry)
        post_migrate.connect(_base_version_seed, sender=self)


def _base_version_seed(sender, **kwargs) -> None:
    """After every migrate (and the flush between transactional tests) the registry has v1,
    the configured base model, so serving only ever reads it."""
    from django.apps import apps as current

    try:  # the migrated state when migrating (flush sends none)
        kwargs.get("apps", current).get_model("training", "ModelVersion")
    except LookupError:  # training migrated back to zero: no table to seed
        return
    from training.registry import base_version_ensure

    base_version_ensure()
