"""The console's pages under /runs/."""

from __future__ import annotations

from django.urls import path

from runs import views

urlpatterns = [
    path("", views.run_list, name="run-list"),
    path("new/", views.run_new, name="run-new"),
    path("bulk/", views.run_bulk, name="run-bulk"),
    path("<uuid:run_id>/", views.run_detail, name="run-detail"),
    path("<uuid:run_id>/steps/", views.run_steps, name="run-steps"),
    path("<uuid:run_id>/confirm-cancel/", views.run_cancel_confirm, name="run-cancel-confirm"),
    path("<uuid:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("<uuid:run_id>/pause/", views.run_pause, name="run-pause"),
    path("<uuid:run_id>/resume/", views.run_resume, name="run-resume"),
    path("<uuid:run_id>/retry/", views.run_retry, name="run-retry"),
    path("<uuid:run_id>/budget/", views.run_raise_budget, name="run-raise-budget"),
    path("<uuid:run_id>/signal/", views.run_signal, name="run-signal"),
]
