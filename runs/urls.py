from django.urls import path

from runs import compare, export, views

urlpatterns = [
    path("w/<slug:slug>/runs/", views.RunListView.as_view(), name="run_list"),
    path("w/<slug:slug>/approvals/", views.ApprovalsView.as_view(), name="approvals"),
    path(
        "w/<slug:slug>/runs/compare/",
        compare.RunComparePickView.as_view(),
        name="run_compare_pick",
    ),
    path("w/<slug:slug>/runs/<str:run_id>/", views.RunDetailView.as_view(), name="run_detail"),
    path(
        "w/<slug:slug>/runs/<str:run_id>/export.jsonl",
        export.RunExportView.as_view(),
        name="run_export",
    ),
    path(
        "w/<slug:slug>/runs/<str:run_id>/compare/<str:other_id>/",
        compare.RunCompareView.as_view(),
        name="run_compare",
    ),
    path("w/<slug:slug>/flows/<int:flow_id>/runs/", views.RunListView.as_view(), name="flow_runs"),
]
