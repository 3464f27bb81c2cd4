from django.urls import path

from audit import views

urlpatterns = [
    path("w/<slug:slug>/audit/", views.AuditLogView.as_view(), name="audit_log"),
    path("w/<slug:slug>/audit/export", views.AuditExportView.as_view(), name="audit_export"),
]
