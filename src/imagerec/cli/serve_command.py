"""``imagerec serve``: the local web app on the indexed collection (FastAPI + uvicorn)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import click

from imagerec.cli.app import cli, command_config, handle_errors
from imagerec.errors import ImagerecError


class ServeError(ImagerecError):
    """The server cannot start (address in use, bad host...)."""


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = any free port), or a ``ServeError`` saying what to change."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        # proto IPPROTO_TCP, not 0: asyncio then sets TCP_NODELAY on every connection (without it a
        # keep-alive response written in two parts waits ~40 ms for a delayed ACK)
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


@cli.command()
@click.option("--host", help="Address to bind (web.host, default 127.0.0.1). Anything else exposes the collection to the network.")
@click.option("--port", type=click.IntRange(0, 65535), help="TCP port (web.port, default 8765; 0 = any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@click.pass_context
@handle_errors
def serve(ctx, host, port, open_browser) -> None:
    """Serve a web page to browse the collection and explore similar images (Ctrl-C stops it)."""
    import uvicorn

    import imagerec
    from imagerec.web import create_app

    config = command_config(ctx)
    host = host or config.web.host
    port = config.web.port if port is None else port
    if not is_loopback(host):
        click.secho(f"warning: serving on {host}: the collection becomes visible to the network, without any login",
                    err=True, fg="yellow")
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    with imagerec.open(config) as collection:
        server = uvicorn.Server(uvicorn.Config(create_app(collection), log_level="warning", access_log=False))
        click.echo(f"imagerec serving {config.data.image_root} at {url}  (API docs: {url}docs; Ctrl-C stops)")
        if open_browser:
            threading.Thread(target=_open_later, args=(url,), daemon=True).start()
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the signal
            pass
    click.echo("imagerec serve stopped.")


def _open_later(url: str) -> None:
    import webbrowser

    time.sleep(0.5)
    webbrowser.open(url)
