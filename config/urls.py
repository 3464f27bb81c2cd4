from django.contrib import admin
from django.urls import include, path

from config.api import api
from runs import sse

handler404 = "config.errors.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    # A streaming view, so outside the JSON API; same auth (WorkspaceAuth) and scoping.
    path("api/w/<slug:slug>/runs/<str:run_id>/stream", sse.stream, name="run_stream"),
    path("api/", api.urls),
    path("", include("accounts.urls")),
    path("", include("flows.urls")),
    path("", include("knowledge.urls")),
    path("", include("runs.urls")),
    path("", include("audit.urls")),
]
