from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views
from accounts.forms import PasswordResetForm

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password/change/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path(
        "accounts/password/reset/",
        auth_views.PasswordResetView.as_view(form_class=PasswordResetForm),
        name="password_reset",
    ),
    path(
        "accounts/password/reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("invite/<str:token>/", views.accept_invitation, name="accept_invitation"),
    path("w/<slug:slug>/", views.WorkspaceHomeView.as_view(), name="workspace_home"),
    path("w/<slug:slug>/members/", views.MembersView.as_view(), name="members"),
    path("w/<slug:slug>/tokens/", views.TokensView.as_view(), name="tokens"),
]
