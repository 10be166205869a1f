from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from runs import views as run_views
from runs.views import tokens as token_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("runs.api.urls")),
    path("anymail/", include("anymail.urls")),  # ESPs' inbound webhooks: replies to approvals
    path("demo/flaky", run_views.demo_flaky, name="demo-flaky"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("runs/", include("runs.urls")),
    path("approvals/", include("approvals.urls")),
    path("notifications/", include("notifications.urls")),
    path("dashboard/", run_views.dashboard, name="dashboard"),
    path("metrics", run_views.prometheus, name="metrics"),
    path("tokens/", token_views.token_list, name="token-list"),
    path(
        "tokens/<int:token_id>/confirm-revoke/",
        token_views.token_revoke_confirm,
        name="token-revoke-confirm",
    ),
    path("tokens/<int:token_id>/revoke/", token_views.token_revoke, name="token-revoke"),
    path("", RedirectView.as_view(pattern_name="run-list", permanent=False)),
]
