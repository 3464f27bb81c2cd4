from django.urls import path

from usage import views

urlpatterns = [
    path("w/<slug:slug>/settings/usage/", views.UsageView.as_view(), name="usage"),
    # On the API tokens page (accounts), whose keys it budgets; usage owns budgets.
    path(
        "w/<slug:slug>/tokens/<int:token_id>/budget/",
        views.KeyBudgetView.as_view(),
        name="key_budget",
    ),
]
