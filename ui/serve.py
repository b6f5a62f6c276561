"""Start Lenscape's Streamlit server (`lenscape app`, which `./lenscape.sh app` runs), with a stricter
WebSocket origin check than Streamlit's own.

Streamlit accepts a WebSocket whose Origin is the request's own host, or any origin whose *host
name* is localhost or one of this machine's addresses, whatever the port. So a page served by any
other program on this machine (another dev server, a notebook) can open a session of Lenscape and
drive it as the user. Here the fallback accepts only origins listed exactly, scheme and port included,
in `server.corsAllowedOrigins` (what a reverse proxy in front of Lenscape sets: see the README)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"
log = logging.getLogger("lenscape.serve")


def listed_origin(url: str) -> bool:
    """The origin is one that whoever runs the server listed, exactly."""
    from streamlit import config

    return url.rstrip("/") in {o.strip().rstrip("/") for o in config.get_option("server.corsAllowedOrigins")}


def strict_origins() -> bool:
    """Replace Streamlit's host-name-only origin fallback; False (and a warning) where this Streamlit
    has another server whose check we do not know."""
    try:
        from streamlit.web.server.starlette import starlette_websocket
    except ImportError:
        log.warning("this Streamlit has no Starlette server: its own WebSocket origin check is used")
        return False
    if not hasattr(starlette_websocket, "is_url_from_allowed_origins"):
        log.warning("this Streamlit's WebSocket origin check has changed: its own is used")
        return False
    starlette_websocket.is_url_from_allowed_origins = listed_origin
    return True


def main(args: list[str]) -> None:
    from streamlit.web import cli

    strict_origins()
    sys.argv = ["streamlit", "run", str(APP), *args]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
