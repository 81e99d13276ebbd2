"""What a client of the Bento needs: the Authorization header that the service's token guard checks."""

from __future__ import annotations

from ml.core.settings import Settings


def auth_headers(settings: Settings) -> dict[str, str]:
    """The Authorization header a client of the Bento sends (none when no token is configured)."""
    if settings.serving_api_token is None:
        return {}
    return {"Authorization": f"Bearer {settings.serving_api_token.get_secret_value()}"}
