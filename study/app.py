"""The study's web application (Starlette, served by uvicorn) and the server around it.

Pages: `/` instructions and consent, `/q` the participant's next image, `/done` their score,
`/results` the figures (behind the token printed at start). Images are served by opaque id
(`/img/<id>`) and only to a participant whose sequence holds them; no name or path from a
request reaches the file system. A participant is a random 128-bit id in an HttpOnly cookie:
nothing else identifies them, and nothing one participant can request shows another's answers.
Pages work without JavaScript: each answer is a form post, committed before the redirect that
shows the next image (post / redirect / get, so reloading never posts twice).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from cyclemask.errors import ConfigError

from .config import ANSWERS
from .store import DUPLICATE, NOT_NEXT, UNKNOWN, Store

log = logging.getLogger(__name__)

PARTICIPANT_COOKIE = "cyclemask_study"
RESULTS_COOKIE = "cyclemask_study_results"
COOKIE_AGE_S = 60 * 24 * 3600
CONFIDENCE = {"1": "guessing", "2": "fairly sure", "3": "certain"}
_HERE = Path(__file__).resolve().parent

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
]


@dataclass(frozen=True)
class AppSettings:
    per_person: int
    image_dir: Path
    token: str
    max_participants: int | None = None
    image_size: int = 256
    # Host names accepted in the Host header; None: any (the server was opened with --host).
    allowed_hosts: tuple[str, ...] | None = ("127.0.0.1", "localhost", "[::1]")


def host_name(header: str) -> str:
    """The host part of a Host header: "[::1]:8000" -> "[::1]", "Example.org:80" -> "example.org"."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class _Guard:
    """Pure ASGI middleware (no buffering of bodies): refuses a Host header that is not one of
    allowed_hosts (a page elsewhere cannot reach a loopback server through DNS rebinding), and
    adds the security headers above to every response."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.allowed is not None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(host) not in self.allowed:
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *_SECURITY_HEADERS]})
                await send({"type": "http.response.body", "body": b"Invalid host header"})
                return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                if b"cache-control" not in present:
                    # Pages reflect the participant's state: never show a stale one from cache
                    # (the back button then shows the current image, not an answered one).
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def require_web_packages() -> None:
    """The web stack is the optional extra cyclemask[study]: say so, rather than fail on an import."""
    import importlib.util

    missing = [pkg for pkg, mods in (("starlette", ("starlette",)), ("uvicorn", ("uvicorn",)), ("jinja2", ("jinja2",)),
                                     ("python-multipart", ("python_multipart", "multipart")))
               if not any(importlib.util.find_spec(m) for m in mods)]
    if missing:
        raise ConfigError(f"the study's web server needs {', '.join(missing)}: pip install 'cyclemask[study]'")


def create_app(store: Store, settings: AppSettings):
    """The Starlette application over one study database."""
    import jinja2
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates

    from . import stats

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True)
    templates = Jinja2Templates(env=env)

    def page(request: Request, name: str, status: int = 200, **context) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def error(request: Request, status: int, message: str) -> Response:
        return page(request, "message.html", status, title="Not available", message=message)

    async def participant_of(request: Request):
        pid = request.cookies.get(PARTICIPANT_COOKIE)
        if not pid or len(pid) > 64:
            return None, None
        state = await run_in_threadpool(store.participant, pid)
        return (pid, state) if state is not None else (None, None)

    async def welcome(request: Request) -> Response:
        pid, state = await participant_of(request)
        if state is not None:
            return RedirectResponse("/done" if state.done else "/q", 303)
        return page(request, "welcome.html", n=settings.per_person, title="Real or generated?")

    async def start(request: Request) -> Response:
        pid, state = await participant_of(request)
        if state is not None:  # a second click on Start, or Start in another tab: same participant
            return RedirectResponse("/done" if state.done else "/q", 303)
        form = await request.form(max_files=0, max_fields=8)
        if form.get("consent") != "yes":
            return page(request, "welcome.html", 400, n=settings.per_person, title="Real or generated?",
                        warning="Please tick the box to agree before you start.")
        pid = await run_in_threadpool(store.create_participant, settings.per_person, settings.max_participants)
        if pid is None:
            return page(request, "message.html", 200, title="The study is full",
                        message="This study has all the participants it needs. Thank you for your interest.")
        resp = RedirectResponse("/q", 303)
        resp.set_cookie(PARTICIPANT_COOKIE, pid, max_age=COOKIE_AGE_S, httponly=True, samesite="lax", path="/")
        return resp

    async def question(request: Request) -> Response:
        pid, state = await participant_of(request)
        if state is None:
            return RedirectResponse("/", 303)
        if state.done:
            return RedirectResponse("/done", 303)
        return page(request, "question.html", title=f"Image {state.answered + 1} of {state.n_items}",
                    position=state.answered, number=state.answered + 1, total=state.n_items,
                    image_id=state.next_image, confidence=CONFIDENCE, size=settings.image_size)

    async def answer(request: Request) -> Response:
        pid, state = await participant_of(request)
        if state is None:
            return RedirectResponse("/", 303)
        form = await request.form(max_files=0, max_fields=8)
        value, conf, pos = form.get("answer"), form.get("confidence") or "", form.get("position", "")
        if value not in ANSWERS or conf not in ("", *CONFIDENCE) or not (isinstance(pos, str) and pos.isdigit() and len(pos) < 7):
            return error(request, 400, "That answer could not be read. Please go back to the study page and choose again.")
        outcome = await run_in_threadpool(store.record_answer, pid, int(pos), value, int(conf) if conf else None)
        if outcome == UNKNOWN:
            return RedirectResponse("/", 303)
        if outcome in (DUPLICATE, NOT_NEXT):
            log.debug("answer to position %s ignored (%s)", pos, outcome)
        return RedirectResponse("/q", 303)

    async def image(request: Request) -> Response:
        pid, state = await participant_of(request)
        image_id = request.path_params["image_id"]
        if state is None or not (len(image_id) <= 64 and image_id.isalnum()):
            return error(request, 404, "No such image.")
        path = await run_in_threadpool(store.image_file, pid, image_id, settings.image_dir)
        if path is None:
            return error(request, 404, "No such image.")
        try:
            data = await run_in_threadpool(path.read_bytes)
        except OSError:
            log.error("cached image %s is missing: restart the server to rebuild the cache", path.name)
            return error(request, 500, "This image cannot be shown right now.")
        # No Last-Modified or ETag: the cache files' times would tell the order they were made in.
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    async def done(request: Request) -> Response:
        pid, state = await participant_of(request)
        if state is None:
            return RedirectResponse("/", 303)
        if not state.done:
            return RedirectResponse("/q", 303)
        correct, answered = await run_in_threadpool(store.score, pid)
        return page(request, "done.html", title="Thank you", correct=correct, total=answered)

    # -- results (token) -----------------------------------------------------------------------

    def authorised(request: Request) -> bool:
        given = request.cookies.get(RESULTS_COOKIE) or request.query_params.get("token") or ""
        return secrets.compare_digest(given.encode(), settings.token.encode())

    def gather():
        answers = store.answer_rows()
        return stats.summarize(answers, store.participant_rows(), store.image_rows()), answers

    async def results(request: Request) -> Response:
        if not authorised(request):
            return error(request, 403, "The results need the address with the token that the server printed at start.")
        if "token" in request.query_params:
            # Trade the token in the address for a cookie, so it leaves the address bar and history.
            resp = RedirectResponse("/results", 303)
            resp.set_cookie(RESULTS_COOKIE, settings.token, httponly=True, samesite="strict", path="/results")
            return resp
        summary, _ = await run_in_threadpool(gather)
        return page(request, "results.html", title="Study results", s=summary, lines=stats.report_lines(summary),
                    paper=stats.PAPER_ERROR_RATE, paper_wrong=stats.PAPER_WRONG, paper_answers=stats.PAPER_ANSWERS)

    async def results_file(request: Request) -> Response:
        if not authorised(request):
            return error(request, 403, "The results need the address with the token that the server printed at start.")
        name = request.path_params["name"]
        summary, answers = await run_in_threadpool(gather)
        if name == "plot.png":
            return Response(await run_in_threadpool(stats.plot_png, summary), media_type="image/png")
        makers = {"answers.csv": lambda: stats.answers_csv(answers), "images.csv": lambda: stats.images_csv(summary),
                  "participants.csv": lambda: stats.people_csv(summary)}
        if name not in makers:
            return error(request, 404, "No such file.")
        return Response(makers[name](), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    async def not_found(request: Request, exc) -> Response:
        return error(request, getattr(exc, "status_code", 404), "There is nothing at this address.")

    routes = [
        Route("/", welcome),
        Route("/start", start, methods=["POST"]),
        Route("/q", question),
        Route("/answer", answer, methods=["POST"]),
        Route("/img/{image_id}", image),
        Route("/done", done),
        Route("/results", results),
        Route("/results/{name}", results_file),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Guard, allowed_hosts=settings.allowed_hosts)],
                     exception_handlers={404: not_found, 405: not_found})
