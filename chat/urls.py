from django.urls import path

from chat import embed_views, views

urlpatterns = [
    path(
        "w/<slug:slug>/flows/<int:flow_id>/embeds/",
        views.FlowEmbedsView.as_view(),
        name="flow_embeds",
    ),
    path("embed/<str:public_id>/", embed_views.chat_page, name="embed_chat"),
    path("embed/<str:public_id>/api/visitor", embed_views.visitor, name="embed_visitor"),
    path(
        "embed/<str:public_id>/api/conversations",
        embed_views.conversations,
        name="embed_conversations",
    ),
    path(
        "embed/<str:public_id>/api/conversations/<str:conversation_id>",
        embed_views.conversation,
        name="embed_conversation",
    ),
    path("embed/<str:public_id>/api/messages", embed_views.messages, name="embed_messages"),
    path(
        "embed/<str:public_id>/api/runs/<str:run_id>/events",
        embed_views.events,
        name="embed_events",
    ),
    path("embed/<str:public_id>/api/runs/<str:run_id>/stop", embed_views.stop, name="embed_stop"),
]
