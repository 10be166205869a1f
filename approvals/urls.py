"""The reviewers' inbox under /approvals/."""

from __future__ import annotations

from django.urls import path

from approvals import views

urlpatterns = [
    path("", views.inbox, name="approval-inbox"),
    path("bulk/", views.inbox_bulk, name="approval-bulk"),
    path("<int:request_id>/", views.request_detail, name="approval-detail"),
    path("<int:request_id>/decide/", views.request_decide, name="approval-decide"),
    path("<int:request_id>/diff/", views.request_diff, name="approval-diff"),
    path("run/<uuid:run_id>/", views.run_request, name="approval-for-run"),
]
