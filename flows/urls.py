from django.urls import path

from flows import views

urlpatterns = [
    path(
        "w/<slug:slug>/settings/connections/",
        views.ConnectionsView.as_view(),
        name="connections",
    ),
    path("w/<slug:slug>/flows/", views.FlowListView.as_view(), name="flow_list"),
    path("w/<slug:slug>/flows/<int:flow_id>/", views.FlowEditorView.as_view(), name="flow_editor"),
    path("w/<slug:slug>/flows/<int:flow_id>/chat/", views.FlowChatView.as_view(), name="flow_chat"),
    path(
        "w/<slug:slug>/flows/<int:flow_id>/versions/",
        views.FlowVersionsView.as_view(),
        name="flow_versions",
    ),
]
