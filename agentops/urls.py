from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from runs import views as run_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("demo/flaky", run_views.demo_flaky, name="demo-flaky"),
    path("", RedirectView.as_view(url="/admin/runs/run/", permanent=False)),
]
