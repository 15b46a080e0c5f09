from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("status.json", views.status_json, name="status"),
    path("retrain/", views.retrain_now, name="retrain"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<int:run_id>/loss.svg", views.run_loss_svg, name="run-loss"),
    path("versions/<int:version_id>/<str:action>/", views.version_action, name="version-action"),
    path("playground/", views.playground_page, name="playground"),
    path("playground/reply/", views.playground_reply, name="playground-reply"),
]
