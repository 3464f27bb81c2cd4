from django.urls import path

from knowledge.consumers import KnowledgeConsumer
from runs.consumers import ExecConsumer

websocket_urlpatterns = [
    path("ws/w/<slug:slug>/exec", ExecConsumer.as_asgi()),
    path("ws/w/<slug:slug>/knowledge", KnowledgeConsumer.as_asgi()),
]
