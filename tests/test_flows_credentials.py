"""Credentials at rest: Fernet-encrypted with the first configured key, readable with any
configured key (rotation), decrypted only in memory for the workspace that owns them, and
never written to logs."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings

from accounts.models import Membership
from flows import services
from flows.components.base import BuildEnv, NodeError
from flows.components.registry import get_component
from flows.crypto import SecretUnreadable, decrypt
from flows.models import Credential
from flows.selectors import credential_decrypted
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.fakes.runner import RecordingContext, run_component

pytestmark = pytest.mark.django_db

SECRET = "sk-credential-secret-7777"
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def create(workspace, user, *, base_url="http://127.0.0.1:9/v1"):
    acting = Membership.objects.get(workspace=workspace, user=user)
    return services.credential_create(
        workspace=workspace,
        acting=acting,
        name="c",
        provider="openai",
        base_url=base_url,
        api_key=SECRET,
    )


def test_secret_is_encrypted_at_rest_and_decrypts_for_its_workspace_only(
    workspace_a, alice_owner, workspace_b
):
    credential = create(workspace_a, alice_owner)
    raw = (
        Credential.objects.filter(pk=credential.pk)
        .values_list("api_key_encrypted", flat=True)
        .get()
    )
    assert SECRET not in raw and raw.startswith("gAAAA")
    assert credential_decrypted(workspace_a, credential.pk).api_key == SECRET
    assert credential_decrypted(workspace_b, credential.pk) is None
    assert SECRET not in repr(credential_decrypted(workspace_a, credential.pk))


def test_rotation_first_key_encrypts_all_keys_decrypt(workspace_a, alice_owner):
    with override_settings(FLOWDECK_ENCRYPTION_KEYS=[OLD]):
        credential = create(workspace_a, alice_owner)
    with override_settings(FLOWDECK_ENCRYPTION_KEYS=[NEW, OLD]):
        assert credential_decrypted(workspace_a, credential.pk).api_key == SECRET
        call_command("rotate_credentials")
    with override_settings(FLOWDECK_ENCRYPTION_KEYS=[NEW]):
        assert credential_decrypted(workspace_a, credential.pk).api_key == SECRET
    with override_settings(FLOWDECK_ENCRYPTION_KEYS=[OLD]), pytest.raises(SecretUnreadable):
        decrypt(Credential.objects.get(pk=credential.pk).api_key_encrypted)


def test_an_unreadable_secret_is_a_clear_build_error(workspace_a, alice_owner):
    with override_settings(FLOWDECK_ENCRYPTION_KEYS=[OLD]):
        credential = create(workspace_a, alice_owner)
    from flows.builder import GraphInvalid, build_plan

    graph = {
        "nodes": [
            {"id": "in", "component": "io.chat_input"},
            {"id": "m", "component": "llm.openai_chat", "params": {"credential": credential.pk}},
        ],
        "edges": [{"source": "in", "source_port": "text", "target": "m", "target_port": "prompt"}],
    }
    with override_settings(FLOWDECK_ENCRYPTION_KEYS=[NEW]), pytest.raises(GraphInvalid) as info:
        build_plan(graph, workspace_a)
    assert [(p.node_id, p.code) for p in info.value.problems] == [("m", "build_failed")]
    assert SECRET not in str(info.value.problems)


def test_the_key_never_reaches_logs_or_events(workspace_a, alice_owner, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(fail_status=401) as server:
        credential = create(workspace_a, alice_owner, base_url=server.base_url)
        component = get_component("llm.openai_chat")
        params = component.Params.model_validate({"credential": credential.pk})
        built = component.build(params, BuildEnv(workspace_a))
        ctx = RecordingContext(workspace_a.pk)
        with pytest.raises(NodeError) as info:
            run_component(component, params, built, {"prompt": "hi"}, ctx)
    assert SECRET not in caplog.text
    assert SECRET not in str(info.value) and SECRET not in repr(ctx.events)
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"  # it was really used


# --- where a base URL may point ------------------------------------------------------------
@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest",
        "http://169.254.10.1:8080/v1",
        "http://[fd00:ec2::254]/v1",
        "http://100.100.100.200/v1",
        "http://[fe80::1]/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://0.0.0.0:9/v1",
        "http://224.0.0.1/v1",
    ],
)
def test_link_local_and_metadata_endpoints_are_refused_always(
    workspace_a, alice_owner, settings, base_url
):
    settings.FLOWDECK_MODEL_PRIVATE_NETWORKS = ["0.0.0.0/0", "::/0"]  # even when all is allowed
    with pytest.raises(services.ValidationError) as info:
        create(workspace_a, alice_owner, base_url=base_url)
    assert "base_url" in info.value.message_dict
    assert not Credential.objects.exists()


def test_the_platforms_own_services_are_refused_even_on_an_allowed_network(
    workspace_a, alice_owner, settings
):
    from flows import endpoints

    settings.REDIS_URL = "redis://127.0.0.1:6390/0"
    endpoints._own_services.cache_clear()
    try:
        with pytest.raises(services.ValidationError, match="platform's own services"):
            create(workspace_a, alice_owner, base_url="http://127.0.0.1:6390/v1")
    finally:
        endpoints._own_services.cache_clear()


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:11434", "http://10.1.2.3:8000/v1", "http://[::1]:8080/v1"]
)
def test_private_endpoints_follow_the_platform_admins_setting(
    workspace_a, alice_owner, settings, base_url
):
    settings.FLOWDECK_MODEL_PRIVATE_NETWORKS = []
    with pytest.raises(services.ValidationError, match="FLOWDECK_MODEL_PRIVATE_NETWORKS"):
        create(workspace_a, alice_owner, base_url=base_url)
    settings.FLOWDECK_MODEL_PRIVATE_NETWORKS = ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]
    assert create(workspace_a, alice_owner, base_url=base_url).base_url == base_url


def test_an_endpoint_disallowed_after_saving_fails_the_model_node_at_run_time(
    workspace_a, alice_owner, settings
):
    credential = create(workspace_a, alice_owner, base_url="http://127.0.0.1:9/v1")
    settings.FLOWDECK_MODEL_PRIVATE_NETWORKS = []  # the admin narrowed it since
    component = get_component("llm.openai_chat")
    params = component.Params(credential=credential.pk)
    with pytest.raises(NodeError, match="not allowed"):
        component.build(params, BuildEnv(workspace_a))
