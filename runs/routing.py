from django.urls import path

from runs.consumers import ExecConsumer

websocket_urlpatterns = [
    path("ws/w/<slug:slug>/exec", ExecConsumer.as_asgi()),
]
