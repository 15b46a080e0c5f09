"""Who counts as a support agent, and making new ones."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from feedback.models import AGENT_GROUP_NAME, ConversationReview

CONSOLE_PERMISSION = "feedback.use_console"


def is_agent(user) -> bool:
    """Active staff with the console permission (superusers have every permission)."""
    return bool(
        user
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(CONSOLE_PERMISSION)
    )


def agent_group_ensure() -> Group:
    """The "Support agents" group holding the console permission (created if missing)."""
    content_type = ContentType.objects.get_for_model(ConversationReview)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type,
        codename="use_console",
        defaults={"name": "Can use the agent console"},
    )
    group, _ = Group.objects.get_or_create(name=AGENT_GROUP_NAME)
    group.permissions.add(permission)
    return group


@transaction.atomic
def agent_create(*, username: str, password: str, email: str = "", first_name: str = ""):
    """Create (or update) a staff user in the agents group."""
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username)
    user.email = email or user.email
    user.first_name = first_name or user.first_name
    user.is_staff = True
    user.is_active = True
    user.set_password(password)
    user.save()
    user.groups.add(agent_group_ensure())
    return user


def agent_display_name(user) -> str:
    if user is None:
        return "(deleted user)"
    return user.get_full_name() or user.get_username()
