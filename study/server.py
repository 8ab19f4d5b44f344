"""Open a study (check the images, bring the database up to date) and serve it with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from dataclasses import dataclass
from typing import Callable

from cyclemask.errors import ConfigError

from .app import AppSettings, create_app, require_web_packages
from .catalog import Catalog, Progress, build_catalog
from .config import DEFAULT_PER_PERSON, StudyConfig
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class Study:
    config: StudyConfig
    store: Store
    catalog: Catalog
    per_person: int
    token: str


def resolve_per_person(requested: int | None, n_real: int, n_generated: int) -> int:
    """Images per participant: as asked if both folders can fill their half, else an error;
    by default 22 (the paper's count), or twice the smaller folder when that is fewer."""
    if requested is None:
        return max(2, min(DEFAULT_PER_PERSON, 2 * min(n_real, n_generated)))
    need = (requested + 1) // 2
    for n, what in ((n_real, "real"), (n_generated, "generated")):
        if n < need:
            raise ConfigError(f"--per-person {requested} needs up to {need} {what} images per participant; "
                              f"only {n} usable {what} images")
    return requested


def open_study(config: StudyConfig, progress: Progress | None = None) -> Study:
    """Check and cache the images, and record them in the study database (created on first use)."""
    require_web_packages()
    store = Store(config.db_path)
    try:
        store.use_display_settings(config.size, config.quality, config.image_dir)
        catalog = build_catalog(config, store.known_images(), progress)
        per_person = resolve_per_person(config.per_person, catalog.count("real"), catalog.count("generated"))
        store.sync_images(catalog)
        token = store.results_token()
    except BaseException:
        store.close()
        raise
    return Study(config, store, catalog, per_person, token)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port; the socket tells which)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: unknown address ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def run_server(study: Study, sock: socket.socket, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve on a socket from bind_socket until SIGINT / SIGTERM, then close it and the store.
    on_ready(base_url) runs just before serving starts."""
    import uvicorn

    host = sock.getsockname()[0]
    settings = AppSettings(
        per_person=study.per_person, image_dir=study.config.image_dir, token=study.token,
        max_participants=study.config.max_participants, image_size=study.config.size,
        allowed_hosts=AppSettings.allowed_hosts if is_loopback(host) else None,
    )
    app = create_app(study.store, settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           server_header=False, timeout_graceful_shutdown=5))
    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then raises the signal again for the
    # handler that was there before; with these no-op handlers in place the stop ends here, and
    # the caller reports it, instead of a traceback (SIGINT) or a death by signal (SIGTERM).
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda *_: None) for s in stops} if _main_thread() else {}
    try:
        if on_ready:
            on_ready(base_url(sock))
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        study.store.close()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
