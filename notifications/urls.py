"""The notification pages under /notifications/."""

from __future__ import annotations

from django.urls import path

from notifications import views

urlpatterns = [
    path("", views.notification_list, name="notification-list"),
    path("read-all/", views.notification_read_all, name="notification-read-all"),
    path("bell/", views.notification_bell, name="notification-bell"),
    path("<int:message_id>/read/", views.notification_read, name="notification-read"),
    path("preferences/", views.notification_preferences, name="notification-preferences"),
    path("mail/", views.mail_list, name="mail-list"),
    path("mail/<int:message_id>/", views.mail_detail, name="mail-detail"),
    path("mail/<int:message_id>/html/", views.mail_html, name="mail-html"),
]
