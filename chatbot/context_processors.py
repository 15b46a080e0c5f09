from django.conf import settings


def shop(request) -> dict:
    return {"shop_name": settings.SHOP_NAME, "max_chars": settings.CHAT_MAX_MESSAGE_CHARS}
