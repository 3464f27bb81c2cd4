from django.urls import path

from knowledge import views

urlpatterns = [
    path("w/<slug:slug>/knowledge/", views.KnowledgeListView.as_view(), name="knowledge_list"),
    path(
        "w/<slug:slug>/knowledge/<int:kb_id>/",
        views.KnowledgeDetailView.as_view(),
        name="knowledge_detail",
    ),
]
