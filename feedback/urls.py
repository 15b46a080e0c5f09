from django.contrib.auth import views as auth_views
from django.urls import path

from feedback import views

app_name = "feedback"

urlpatterns = [
    path("", views.console, name="console"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="feedback/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="feedback:login"), name="logout"),
    path("c/<uuid:conversation_id>/", views.conversation, name="conversation"),
    path(
        "c/<uuid:conversation_id>/<slug:action>/",
        views.conversation_action,
        name="conversation_action",
    ),
    path("m/<uuid:message_id>/<slug:action>/", views.message_action, name="message_action"),
    path("answers/", views.approved_answers, name="answers"),
    path("answers/<int:answer_id>/<slug:action>/", views.answer_action, name="answer_action"),
]
