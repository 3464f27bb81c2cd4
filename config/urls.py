from django.contrib import admin
from django.urls import include, path

from chat import calls, openai_compat
from config.api import api
from runs import sse

handler404 = "config.errors.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    # A streaming view, so outside the JSON API; same auth (WorkspaceAuth) and scoping.
    path("api/w/<slug:slug>/runs/<str:run_id>/stream", sse.stream, name="run_stream"),
    # Plain async views too: they wait on runs and stream (chat/calling.py says why).
    path("api/w/<slug:slug>/flows/<int:flow_id>/run", calls.run_flow, name="flow_run_once"),
    path(
        "api/w/<slug:slug>/v1/chat/completions",
        openai_compat.chat_completions,
        name="openai_chat_completions",
    ),
    path("api/w/<slug:slug>/v1/models", openai_compat.models, name="openai_models"),
    path("api/", api.urls),
    path("", include("accounts.urls")),
    path("", include("flows.urls")),
    path("", include("knowledge.urls")),
    path("", include("runs.urls")),
    path("", include("audit.urls")),
    path("", include("usage.urls")),
    path("", include("chat.urls")),
]
