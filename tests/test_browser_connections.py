"""A model connection made in the settings page, tested, and picked in a node, in a real
browser against the live stack; the key never appears in any page."""

from __future__ import annotations

import re

import pytest

from flows.models import Credential
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    drag_to_canvas,
    open_page_fixture,
    tid,
)
from tests.fakes.fake_openai import FakeOpenAIServer

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

SECRET = "sk-browser-5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"


def test_a_connection_made_in_settings_is_tested_and_picked_in_a_node(
    open_page, workspace_a, alice_owner
):
    owner = open_page(alice_owner)
    page = owner.page
    with FakeOpenAIServer(api_key=SECRET, models=("gpt-fake-mini", "gpt-fake")) as fake:
        owner.goto("/w/acme/flows/")
        page.click("nav >> text=Settings")
        page.wait_for_selector("h1:has-text('Model connections')")
        page.fill("#new-name", "Fake OpenAI")
        page.select_option("#new-provider", "openai")
        page.fill("#new-url", fake.base_url)
        page.fill("#new-key", SECRET)
        page.click("button:has-text('Create connection')")
        page.wait_for_selector("text=Connection “Fake OpenAI” created.")
        row = page.locator("tr", has_text="Fake OpenAI")
        row.locator("button:has-text('Test connection')").click()
        page.wait_for_selector("text=Fake OpenAI: Connected: 2 models (gpt-fake-mini, gpt-fake).")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "settings-connections.png"), full_page=True)
        assert SECRET not in page.content()

        # A new flow; a model node picks the connection by name.
        owner.goto("/w/acme/flows/")
        page.fill("#new-flow-name", "Uses a real model")
        page.click("button:has-text('New flow')")
        page.wait_for_url(re.compile(r"/w/acme/flows/\d+/$"))
        drag_to_canvas(page, "llm.openai_chat", 300, 200)
        page.locator(tid("node-openai_chat_1")).click()
        picker = page.locator("select[data-param='credential']")
        credential = Credential.objects.get(workspace=workspace_a, name="Fake OpenAI")
        picker.select_option(label=f"Fake OpenAI ({fake.base_url})")
        assert picker.input_value() == str(credential.pk)
        page.screenshot(path=str(SCREENSHOTS / "editor-credential-picked.png"))
        assert SECRET not in page.content()
    assert owner.console_errors == []
