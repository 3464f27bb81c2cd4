"""Schema-driven requests against every operation of the JSON API (schemathesis).

Each operation of `/api/openapi.json` gets generated requests, valid and invalid, as the
workspace's owner (a real token, the real workspace slug, so requests get past the door).
No response may be a 5xx, and every response must match what the schema declares for it:
its status code (the 4xx each operation answers are documented), its content type and
its body. Bounded and derandomised, so `make test` runs the same cases every time.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Membership
from accounts.services import api_token_create
from config.wsgi import application
from flows import services as flow_services
from tests.conftest import make_user

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 60


@pytest.fixture
def owner_secret(transactional_db) -> str:
    from accounts.services import workspace_create

    owner = make_user("fuzz-owner@example.com")
    workspace = workspace_create(name="Fuzz", slug="fuzz", owner=owner)
    acting = Membership.objects.get(workspace=workspace, user=owner)
    flow_services.flow_create(workspace=workspace, acting=acting, name="seed flow")
    return api_token_create(workspace=workspace, user=owner, name="fuzz").secret


@pytest.mark.django_db(transaction=True)  # each request closes its connection
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_or_outside_its_schema(case, owner_secret):
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = "fuzz"
    case.call_and_validate(headers={"Authorization": f"Bearer {owner_secret}"}, checks=CHECKS)
