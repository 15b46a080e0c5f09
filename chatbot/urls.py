from django.contrib import admin
from django.urls import include, path

from chatbot import views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("admin/", admin.site.urls),
    path("dashboard/", include("training.urls")),
    path("agent/", include("feedback.urls")),
]
