"""Model connections in the settings area: admins create, edit, rotate, test and delete them
from the page (or the API); every member sees which exist; a key is never shown again;
"test connection" makes one request to the provider (a real local server speaking its
protocol) and says what it answered; every change is audited."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from flows.components.base import DecryptedCredential
from flows.models import Credential
from flows.providers import check_connection
from flows.selectors import decrypted
from tests.fakes.fake_openai import FakeOpenAIServer

SECRET = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
PAGE = "/w/acme/settings/connections/"


def _credential(provider: str, base_url: str, key: str = SECRET) -> DecryptedCredential:
    return DecryptedCredential(id=1, provider=provider, base_url=base_url, api_key=key)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_test_connection_lists_the_providers_models(provider, settings):
    with FakeOpenAIServer(api_key=SECRET, models=("m-small", "m-large")) as fake:
        base = fake.root_url if provider == "ollama" else fake.base_url
        check = check_connection(_credential(provider, base))
        sent = fake.headers[-1]
    assert check.ok and check.models == ["m-small", "m-large"]
    assert check.message == "Connected: 2 models (m-small, m-large)."
    assert SECRET in (sent.get("authorization", "") + sent.get("x-api-key", ""))


def test_a_wrong_key_shows_the_providers_answer_without_the_key():
    wrong = "sk-wrong-00112233445566778899aabbccddeeff"
    with FakeOpenAIServer(api_key=SECRET) as fake:
        check = check_connection(_credential("openai", fake.base_url, wrong))
    assert not check.ok
    assert check.message.startswith("The provider answered HTTP 401: Incorrect API key provided")
    assert wrong not in check.message and wrong[-4:] in check.message  # the provider's own mask


def test_a_provider_error_that_quotes_the_key_is_cut_out():
    from flows.providers import _without_secret

    said = _without_secret(f"bad key {SECRET} and again {SECRET[4:30]}", SECRET)
    assert SECRET not in said and SECRET[4:30] not in said and said.count("[key]") >= 2


def test_an_unreachable_or_refused_endpoint_is_said_plainly(settings):
    with FakeOpenAIServer() as fake:
        dead = fake.base_url
    assert check_connection(_credential("openai", dead)).message.startswith("Could not reach")
    metadata = check_connection(_credential("openai", "http://169.254.169.254/v1"))
    assert not metadata.ok and metadata.message.startswith("This endpoint is not allowed")


@pytest.mark.django_db
def test_admins_manage_connections_from_the_page_and_keys_never_come_back(
    client_for, alice_owner, workspace_a
):
    client = client_for(alice_owner)
    with FakeOpenAIServer(api_key=SECRET, models=("gpt-fake",)) as fake:
        created = client.post(
            PAGE,
            {
                "action": "create",
                "name": "Fake OpenAI",
                "provider": "openai",
                "base_url": fake.base_url,
                "api_key": SECRET,
            },
            follow=True,
        )
        credential = Credential.objects.get(workspace=workspace_a)
        assert "Connection “Fake OpenAI” created." in created.content.decode()
        tested = client.post(PAGE, {"action": "test", "credential": credential.pk}, follow=True)
        assert "Fake OpenAI: Connected: 1 model (gpt-fake)." in tested.content.decode()
        # Rename, keeping the key (an empty key field keeps it).
        client.post(
            PAGE,
            {
                "action": "edit",
                "credential": credential.pk,
                "name": "Renamed",
                "base_url": fake.base_url,
                "api_key": "",
            },
        )
        credential.refresh_from_db()
        assert credential.name == "Renamed" and decrypted(credential).api_key == SECRET
        # Rotate the key: the old one stops working, the test says so.
        client.post(
            PAGE,
            {
                "action": "edit",
                "credential": credential.pk,
                "name": "Renamed",
                "base_url": fake.base_url,
                "api_key": "sk-rotated-key-000000000000",
            },
        )
        failed = client.post(PAGE, {"action": "test", "credential": credential.pk}, follow=True)
        assert "Renamed: The provider answered HTTP 401" in failed.content.decode()
    for response in (created, tested, failed, client.get(PAGE)):
        assert SECRET not in response.content.decode()
        assert "sk-rotated-key" not in response.content.decode()
    client.post(PAGE, {"action": "delete", "credential": credential.pk})
    assert not Credential.objects.filter(workspace=workspace_a).exists()
    actions = list(
        AuditEntry.objects.filter(workspace=workspace_a, action__startswith="credential.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == [
        "credential.create",
        "credential.test",
        "credential.update",
        "credential.update",
        "credential.test",
        "credential.delete",
    ]


@pytest.mark.django_db
def test_members_see_connections_but_only_admins_change_them(
    client_for, alice_owner, bob_viewer, erin_editor, workspace_a
):
    client_for(alice_owner).post(
        PAGE, {"action": "create", "name": "Shared", "provider": "openai", "api_key": SECRET}
    )
    credential = Credential.objects.get(workspace=workspace_a)
    for member in (bob_viewer, erin_editor):
        page = client_for(member).get(PAGE)
        html = page.content.decode()
        assert page.status_code == 200 and "Shared" in html and "Only admins" in html
        assert "Test connection" not in html and SECRET not in html
        refused = client_for(member).post(PAGE, {"action": "delete", "credential": credential.pk})
        assert refused.status_code == 403
    assert Credential.objects.filter(pk=credential.pk).exists()


@pytest.mark.django_db
def test_another_workspaces_connection_is_not_found(
    client_for, alice_owner, mallory_owner, workspace_a, workspace_b
):
    client_for(mallory_owner).post(
        "/w/bravo/settings/connections/",
        {"action": "create", "name": "Theirs", "provider": "openai", "api_key": SECRET},
    )
    theirs = Credential.objects.get(workspace=workspace_b)
    for action in ("test", "delete", "edit"):
        response = client_for(alice_owner).post(
            PAGE, {"action": action, "credential": theirs.pk, "name": "x"}
        )
        assert response.status_code == 404
    assert Credential.objects.get(pk=theirs.pk).name == "Theirs"
    assert not AuditEntry.objects.filter(action="credential.test").exists()


@pytest.mark.django_db
def test_the_api_tests_a_connection(client_for, alice_owner, workspace_a):
    client = client_for(alice_owner)
    with FakeOpenAIServer(api_key=SECRET, models=("a", "b", "c")) as fake:
        created = client.post(
            "/api/w/acme/credentials",
            {"name": "Api", "provider": "openai", "base_url": fake.base_url, "api_key": SECRET},
            content_type="application/json",
        ).json()
        body = client.post(f"/api/w/acme/credentials/{created['id']}/test").json()
    assert body == {
        "ok": True,
        "message": "Connected: 3 models (a, b, c).",
        "models": ["a", "b", "c"],
    }


@pytest.mark.django_db
def test_a_bad_connection_is_refused_with_a_clear_message_and_nothing_saved(
    client_for, alice_owner, workspace_a
):
    response = client_for(alice_owner).post(
        PAGE,
        {"action": "create", "name": "Bad", "provider": "openai", "base_url": "ftp://x"},
        follow=True,
    )
    assert "Enter an http(s) URL." in response.content.decode()
    assert not Credential.objects.filter(workspace=workspace_a).exists()
