from django.urls import path

from usage import views

urlpatterns = [
    path("w/<slug:slug>/settings/usage/", views.UsageView.as_view(), name="usage"),
]
