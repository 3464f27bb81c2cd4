"""ASGI entry point: HTTP goes to Django, WebSocket to the Channels consumers.

WebSocket connections must come from this site's own origin (config.ws_origin), then authenticated by
the session cookie or an `Authorization: Bearer` API token.

Importing this module only builds the application: the web process is prepared for serving
(config.runtime: heap frozen, switch interval) by its entry point, `python -m ops.web`, so
the test suite and any other importer are left as they are.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.ws_auth import BearerOrSessionAuthMiddlewareStack  # noqa: E402
from config.ws_origin import SameOriginValidator  # noqa: E402
from knowledge.uploads import RequestSizeLimit  # noqa: E402
from runs.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RequestSizeLimit(django_asgi_app),
        "websocket": SameOriginValidator(
            BearerOrSessionAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
