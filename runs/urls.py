from django.urls import path

from runs import views

urlpatterns = [
    path("w/<slug:slug>/runs/", views.RunListView.as_view(), name="run_list"),
    path("w/<slug:slug>/runs/<str:run_id>/", views.RunDetailView.as_view(), name="run_detail"),
    path("w/<slug:slug>/flows/<int:flow_id>/runs/", views.RunListView.as_view(), name="flow_runs"),
]
