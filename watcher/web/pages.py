"""The review desk's pages: server-rendered (Jinja2, autoescaped), usable without JavaScript.

Each action is a plain form POST carrying its CSRF token; a viewer sees no
action forms and gets 403 for a forged POST. The pages call the same library
functions as the CLI and the API (``watcher.web.api`` shapes them), never SQL.
"""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote

import jinja2
from markupsafe import Markup, escape
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import configure_mappers
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from .. import db, overview, render, review, review_queue, state as states, store, ticket_detail, tickets, users, watches
from ..errors import WatcherError
from ..store import series
from ..settings import Settings
from ..users import UserInfo
from . import api, plots
from .assets import PackagedFiles, accepts_gzip, if_none_match
from .auth import CSRF_FIELD, Authenticator

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _when(value: str | None) -> str:
    """An ISO time as people read it: 2025-01-20 14:05 UTC."""
    return dt.datetime.fromisoformat(value).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if value else ""


ENV.filters["when"] = _when
#: The desk's static files, read once (they ship in the package); pages name them with ``static(name)``.
ASSETS = PackagedFiles(HERE / "static")
ENV.globals["static"] = ASSETS.url
MAX_FORM_BYTES = 64 * 1024
#: Tag series (and plots) kept per process; past it the cache starts again.
SERIES_CACHE_ENTRIES = 256
#: Tickets whose rendered snippets are kept per process (an AzureCloud ticket's take ~2 MB).
SNIPPET_CACHE_TICKETS = 16
#: Ticket pages (head and body, ~250 KB for an AzureCloud ticket) kept per process.
TICKET_PAGE_CACHE_ENTRIES = 64
#: Lines of each snippet shown in the ticket page; the copy button and the downloads give the whole text.
SNIPPET_PREVIEW_LINES = 40
SNIPPET_FORMATS = render.RULE_FORMATS
#: What a page action (form field ``step``) asks of review.transition.
PAGE_STEPS = {"approve": "approve", "approve-adds": "approve", "reject": "reject", "release": "release",
              "applied": "applied"}


def queue_order(found: list[tickets.TicketInfo]) -> list[tickets.TicketInfo]:
    """Open and held tickets first (held before open), then the rest; newest first within each."""
    rank = {"hold": 0, "open": 1}
    return sorted(found, key=lambda t: (rank.get(t.state, 2), -t.id))


def publication_gaps(dates: list[dt.date], stale_after_days: int) -> dict[dt.date, int]:
    """Per publication, the days since the one before when more than ``stale_after_days`` (the health's bound
    for a stale cloud): publications may be missing in between."""
    ordered = sorted(dates)
    return {later: (later - earlier).days for earlier, later in zip(ordered, ordered[1:])
            if (later - earlier).days > stale_after_days}


def snippet_preview(fmt: str, text: str) -> dict[str, Any]:
    """A snippet as the ticket page shows it: its first lines, and how many there are in all."""
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if lines <= SNIPPET_PREVIEW_LINES:
        return {"format": fmt, "text": text, "lines": lines, "truncated": False}
    cut = 0
    for _ in range(SNIPPET_PREVIEW_LINES):
        cut = text.index("\n", cut) + 1
    return {"format": fmt, "text": text[:cut], "lines": lines, "truncated": True}


def series_rows(points: list[plots.SeriesPoint]) -> Markup:
    """The tag page's table of numbers, a row per publication (dates and counts: nothing to escape). Written here,
    not by the template: 260 rows of six cells cost Jinja ~2 ms of a first view, this ~0.3 ms."""
    return Markup("".join(
        f"<tr><td>{p.date}</td><td>{p.v4_prefixes}</td><td>{p.v6_prefixes}</td><td>{p.v4_addresses}</td>"
        f"<td>{p.v6_networks_64}</td><td>{'changed' if p.changed else ''}</td></tr>" for p in points))


def version_rows(entries: list[Any]) -> Markup:
    """The tag page's versions, a row per version (its anomalies escaped; most versions have none)."""
    return Markup("".join(
        f"<tr><td>{e.date}</td><td>{e.change_number if e.present else 'withdrawn'}</td><td>{e.prefix_count}</td>"
        f'<td class="plus">+{e.added}</td><td class="minus">−{e.removed}</td>'
        f"<td>{escape('; '.join(e.anomalies)) if e.anomalies else ''}</td></tr>" for e in entries))


def publication_options(days: list[str], selected: str) -> Markup:
    """A compare select's options, one per publication (``days``: their ISO dates), ``selected`` marked. One join
    of the dates: a select per publication is two lists of 260 options on a five-year tag page."""
    options = "<option>" + "</option><option>".join(days) + "</option>" if days else ""
    if selected in days:  # an ISO date holds no markup, and each is in the list once
        options = options.replace(f"<option>{selected}</option>", f"<option selected>{selected}</option>", 1)
    return Markup(options)


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def compile_templates(settings: Settings) -> None:
    """The desk's templates and the snippets' rule templates, compiled before the first request needs them
    (jinja2 keeps them per process; the first view of a ticket would otherwise compile ten templates), and the
    models' mappers configured."""
    for name in ENV.list_templates(extensions=("html",)):
        ENV.get_template(name)
    # The models' mappers too: SQLAlchemy configures them at their first query otherwise (~15 ms of a first view).
    configure_mappers()
    try:
        render.compile_templates(settings.tickets, SNIPPET_FORMATS)
    except WatcherError as exc:  # a missing template folder: the snippets' own render says so
        log.warning("snippet templates not compiled: %s", exc)


def routes(settings: Settings, engine: Engine, auth: Authenticator,
           warm_ups: list[Callable[[float], dict[str, Any]]] | None = None) -> list[Any]:
    """The pages' routes; with ``warm_ups``, their warm-up is added to it (``web.warm_up`` runs it)."""
    compile_templates(settings)
    # The pages' reads: one connection per request, shared with the sign-in check (watcher.web.reads).
    reads = auth.request_reads()

    def page(template: str, request: Request, user: UserInfo | None, status: int = 200, **values: Any) -> Response:
        seed, new = auth.csrf_seed(request)
        html = ENV.get_template(template).render(user=user, csrf_field=CSRF_FIELD, csrf=auth.csrf_token(seed),
                                                 path=request.url.path, **values)
        response = HTMLResponse(html, status_code=status)
        if new:
            auth.set_csrf_cookie(response, seed)
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def signed_in(view: Callable[..., Response],
                  along: Callable[[Request], list[Any]] | None = None) -> Callable[[Request], Any]:
        """The page ``view(request, user)`` for a signed-in user; with ``along``, the reads it names for a request
        (its stamp) are sent with the user look-up and their rows given too: ``view(request, user, rows)``."""
        def as_user(request: Request) -> Response | None:
            if along is None:
                user = auth.user(request)
                return view(request, user) if user is not None else None
            user, rows = auth.user_reading(request, along(request))
            return view(request, user, rows) if user is not None else None

        def with_one_connection(request: Request) -> Response | None:
            return reads.within(as_user, request)

        async def endpoint(request: Request) -> Response:
            try:
                # One trip to the thread pool for the user and the page (each trip costs a thread hand-over).
                response = await run_in_threadpool(with_one_connection, request)
                if response is None:
                    return RedirectResponse("/login?next=" + quote(request.url.path), status_code=303)
                return response
            except PageError as exc:
                return page("error.html", request, None, status=exc.status, message=str(exc))
            except api.ApiError as exc:
                return page("error.html", request, None, status=exc.status, message=str(exc))
            except WatcherError as exc:
                return page("error.html", request, None, status=api.error_status(exc), message=str(exc))
            except SQLAlchemyError as exc:
                log.warning("%s: database error %s", request.url.path, type(exc).__name__)
                return page("error.html", request, None, status=503, message="database unavailable")

        return endpoint

    def remember(cache: dict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any,
                 limit: int = SERIES_CACHE_ENTRIES) -> Any:
        """Keep ``value`` under ``key``; a full cache starts again (the keys are cheap to fill again)."""
        if len(cache) >= limit:
            cache.clear()
        cache[key] = value
        return value

    async def read_form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise PageError(413, "form too large")
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}

    # ------------------------------------------------------------ sign-in

    async def login(request: Request) -> Response:
        next_path = request.query_params.get("next", "/")
        if request.method == "GET":
            return page("login.html", request, None, next_path=next_path, message="")
        form = await read_form(request)
        if not auth.csrf_ok(request, form.get(CSRF_FIELD)):
            return page("login.html", request, None, status=403, next_path=next_path,
                        message="the form expired: sign in again")
        address = request.client.host if request.client else "unknown"
        user, why = await run_in_threadpool(auth.sign_in, form.get("username", ""), form.get("password", ""), address)
        if user is None:
            return page("login.html", request, None, status=429 if "too many" in why else 401,
                        next_path=next_path, message=why)
        target = form.get("next", "/")
        response = RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/",
                                    status_code=303)
        auth.start_session(response, user)
        return response

    async def logout(request: Request) -> Response:
        form = await read_form(request)
        if not auth.csrf_ok(request, form.get(CSRF_FIELD)):
            return PlainTextResponse("missing or wrong CSRF token\n", status_code=403)
        response = RedirectResponse("/login", status_code=303)
        auth.end_session(response)
        return response

    # ------------------------------------------------------------ pages

    # The queue's content is the same for everyone: kept per tickets stamp and filters until its overdue marks
    # would change with the clock (it was re-rendered every minute: three queries and the template), so a view
    # costs one small query.
    queue_cache: dict[tuple[Any, ...], tuple[str, dt.datetime | None]] = {}

    def queue_reads(request: Request) -> list[Any]:
        return [review_queue.tickets_stamp_read()]

    def queue(request: Request, user: UserInfo, stamp_rows: list[Any]) -> Response:
        wanted = {k: request.query_params.get(k) or "" for k in ("state", "watch", "cloud")}
        try:
            offset = max(0, int(request.query_params.get("offset") or 0))
        except ValueError:
            offset = 0
        body = queue_body(review_queue.tickets_stamp_from(stamp_rows[0]), wanted, offset,
                          dt.datetime.now(dt.timezone.utc))
        return page("queue.html", request, user, body=Markup(body))

    def queue_body(stamp: tuple[Any, ...], wanted: dict[str, str], offset: int, now: dt.datetime) -> str:
        """The queue's body for ``wanted`` (state, watch, cloud filters), as kept for the tickets ``stamp``."""
        key = (*stamp, *wanted.values(), offset)
        kept = queue_cache.get(key)
        if kept is None or (kept[1] is not None and now > kept[1]):
            with reads.connect() as conn:
                found = review_queue.review_queue(conn, wanted["state"] or None, wanted["watch"] or None,
                                                  wanted["cloud"] or None, offset)
            filters = "&".join(f"{k}={quote(v)}" for k, v in wanted.items() if v)
            kept = remember(queue_cache, key, (ENV.get_template("queue_body.html").render(
                queue=found, live=found.live, rest=found.decided, overdue={t.id for t in found.live
                                                                           if t.overdue(now)},
                wanted=wanted, states=tickets.STATES, watches=found.watches, clouds=found.clouds,
                filters=filters), found.marks_hold_until(now)))
        return kept[0]

    # Every snippet format of a ticket, rendered from one view and kept while the ticket and its watch's
    # approved state stay as they are (an AzureCloud ticket's nine formats take a second to render).
    snippet_cache: dict[tuple[Any, ...], dict[str, str]] = {}

    def ticket_snippets(conn: Any, ticket: tickets.TicketInfo, approved: Any) -> dict[str, str]:
        key = (ticket.id, ticket.state, ticket.updated_at, approved.id if approved else None)
        found = snippet_cache.get(key)
        if found is None:
            found = remember(snippet_cache, key, render.render_formats(conn, settings, ticket, SNIPPET_FORMATS, "add"),
                             SNIPPET_CACHE_TICKETS)
        return found

    # A ticket page's head and body (all but the review forms) depend only on the page stamp; kept per stamp,
    # a view of a ticket seen before costs one small query instead of reading its context and lists.
    ticket_page_cache: dict[tuple[Any, ...], tuple[str, str]] = {}

    def ticket_reads(request: Request) -> list[Any]:
        read = ticket_detail.page_stamp_read(int(request.path_params["ticket_id"]))
        return [read] if read is not None else []

    def ticket_page(request: Request, user: UserInfo, stamp_rows: list[Any] | None = None, message: str = "",
                    status: int = 200) -> Response:
        ticket_id = int(request.path_params["ticket_id"])
        now = dt.datetime.now(dt.timezone.utc)
        with reads.connect() as conn:
            stamp = (ticket_detail.page_stamp_from(stamp_rows[0], ticket_id) if stamp_rows
                     else ticket_detail.page_stamp(conn, ticket_id))
        head, body = ticket_view(ticket_id, stamp, now)
        return page("ticket.html", request, user, status=status, ticket_id=ticket_id, state=stamp.state,
                    head=Markup(head), body=Markup(body), message=message, may_review=user.may_review)

    def ticket_view(ticket_id: int, stamp: Any, now: dt.datetime) -> tuple[str, str]:
        """A ticket page's head and body (all but the review forms) as kept for its page ``stamp``."""
        with reads.connect() as conn:
            # When this ticket's removals may go: as recorded at its approval, or as an approval now would set it.
            if stamp.own is not None:
                removals_after = stamp.own.removals_at.isoformat() if stamp.own.removals_at else None
            elif stamp.state in tickets.LIVE_STATES:
                removals_after = states.removals_time(stamp.file_date, settings.tickets.removal_delay_days,
                                                      now).isoformat()
            else:
                removals_after = None
            final_phase = stamp.approved_removals_at is not None and now >= stamp.approved_removals_at
            key = (ticket_id, stamp.state, stamp.updated_at, stamp.approved_id, final_phase, _when(removals_after))
            kept = ticket_page_cache.get(key)
            if kept is None:
                ticket = tickets.get_ticket(conn, ticket_id)
                events = tickets.ticket_events(conn, ticket_id)
                approved = states.current(conn, ticket.cloud, ticket.watch)
                snippets = [snippet_preview(fmt, text) for fmt, text in ticket_snippets(conn, ticket, approved).items()]
                shown = {"ticket": ticket, "context": ticket.context}
                kept = remember(ticket_page_cache, key, (
                    ENV.get_template("ticket_head.html").render(**shown),
                    ENV.get_template("ticket_body.html").render(
                        **shown, events=events, snippets=snippets, lists=approved.to_json(now) if approved else None,
                        removals_after=removals_after, families=states.FAMILIES)), TICKET_PAGE_CACHE_ENTRIES)
        return kept

    async def ticket_action(request: Request) -> Response:
        form = await read_form(request)
        user = await run_in_threadpool(auth.user, request)
        if user is None:
            return PlainTextResponse("sign in first\n", status_code=401)
        if not auth.csrf_ok(request, form.get(CSRF_FIELD)):
            return PlainTextResponse("missing or wrong CSRF token\n", status_code=403)
        if not user.may_review:
            return PlainTextResponse(f"{user.name} is a {user.role}: viewers cannot change anything\n", status_code=403)
        step = form.get("step", "")
        if step not in PAGE_STEPS:
            return PlainTextResponse(f"unknown step {step!r}\n", status_code=400)
        ticket_id = int(request.path_params["ticket_id"])

        def act() -> Response:
            try:
                api.review_step(engine, settings, user, ticket_id, PAGE_STEPS[step], form.get("comment", ""),
                                additions_only=step == "approve-adds")
            except WatcherError as exc:
                return ticket_page(request, user, message=str(exc), status=api.error_status(exc))
            return RedirectResponse(f"/tickets/{ticket_id}", status_code=303)

        return await run_in_threadpool(act)

    def snippet(request: Request, user: UserInfo) -> Response:
        ticket_id, fmt = int(request.path_params["ticket_id"]), request.path_params["fmt"]
        phase = request.query_params.get("phase", "add")
        if fmt not in SNIPPET_FORMATS or phase not in review.PHASES:
            raise PageError(404, f"no snippet format {fmt!r} with phase {phase!r}")
        with reads.connect() as conn:
            text = render.render_ticket(conn, settings, tickets.get_ticket(conn, ticket_id), fmt, phase)
        return PlainTextResponse(text, headers={
            "Content-Disposition": f'attachment; filename="ticket-{ticket_id}-{phase}.{fmt}.txt"'})

    # ------------------------------------------------------------ reading pages

    # A tag's series, its page body and its plots change only when a publication is imported: cached per
    # (cloud, tag, publications stamp), so a view costs one small query (and the user's part of the page).
    series_cache: dict[tuple[Any, ...], tuple[str, list[Any], list[plots.SeriesPoint], list[dt.date]]] = {}
    body_cache: dict[tuple[Any, ...], str] = {}
    svg_cache: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    def tag_history(cloud: str, name: str, stamp_rows: list[Any] | None = None
                    ) -> tuple[tuple[Any, ...], str, list[Any], list[plots.SeriesPoint], list[dt.date]]:
        """``stamp_rows``: the rows of ``tag_reads`` (the stamp's, and maybe the series')."""
        with reads.connect() as conn:
            stamp = (series.publications_stamp_from(stamp_rows[0]) if stamp_rows
                     else series.publications_stamp(conn, cloud))
            key = (cloud, name, *stamp)
            cached = series_cache.get(key)
            if cached is None:
                found = series.tag_series(conn, cloud, name, (stamp_rows or [])[1:] or None)
                versions = [plots.VersionPoint(e.date, found.sizes[e.date], e.added, e.removed) for e in found.entries]
                cached = remember(series_cache, key, (found.name, found.entries,
                                                      plots.tag_series(found.dates, versions), found.dates))
        return (key, *cached)

    def tag_reads(request: Request) -> list[Any]:
        try:
            cloud = api.cloud_of(request.query_params.get("cloud"))
        except api.ApiError:  # the page says so, once the user is known
            return []
        found = [series.publications_stamp_read(cloud)]
        name = request.query_params.get("name", "")
        # A tag no view made in this process: on PostgreSQL its series' reads go with the sign-in and the stamp (one
        # round trip, not two). A kept one needs the stamp alone; elsewhere the reads cost the same either way.
        if name and db.pipelined(engine) and not any(key[:2] == (cloud, name) for key in list(series_cache)):
            found += series.tag_series_reads(cloud, name)
        return found

    def tag_page(request: Request, user: UserInfo, stamp_rows: list[Any]) -> Response:
        cloud, name = api.cloud_of(request.query_params.get("cloud")), request.query_params.get("name", "")
        key, real, entries, points, dates = tag_history(cloud, name, stamp_rows)
        compare = None
        first, second = request.query_params.get("from") or "", request.query_params.get("to") or ""
        if first and second:
            with reads.connect() as conn:
                old = store.resolve_publication(conn, cloud, first)
                new = store.resolve_publication(conn, cloud, second)
                compare = [c.to_json(old, new) for c in store.diff_publications(conn, cloud, old, new, [real])]
        body = tag_body(key, real, entries, points, dates, first, second)
        return page("tag.html", request, user, tag=real, body=Markup(body), compare=compare, compare_from=first,
                    compare_to=second)

    def tag_body(key: tuple[Any, ...], real: str, entries: list[Any], points: list[plots.SeriesPoint],
                 dates: list[dt.date], first: str, second: str) -> str:
        """The plots, the numbers, the versions and the compare form: the same for everyone."""
        body = body_cache.get((*key, first, second))
        if body is None:
            days = [day.isoformat() for day in dates]
            body = remember(body_cache, (*key, first, second), ENV.get_template("tag_body.html").render(
                tag=real, cloud=key[0], publications=len(points), versions=len(entries),
                series_rows=series_rows(points), version_rows=version_rows(entries),
                from_options=publication_options(days, first),
                to_options=publication_options(days[::-1], second), kinds=plots.PLOT_KINDS,
                series_json=plots.plot_data_markup(real, points),
                version=f"{key[2]}-{key[3]}"))
        return body

    def tag_svg(key: tuple[Any, ...], real: str, points: list[plots.SeriesPoint], kind: str) -> tuple[bytes, bytes]:
        """The plot of ``kind`` and its gzip form (a 260-week plot: ~190 KB of markup, ~20 KB gzipped), kept."""
        kept = svg_cache.get((*key, kind))
        if kept is None:
            svg = plots.plot_svg(real, points, kind).encode()
            kept = remember(svg_cache, (*key, kind), (svg, gzip.compress(svg, 6, mtime=0)))
        return kept

    def tag_plot(request: Request, user: UserInfo) -> Response:
        cloud, name = api.cloud_of(request.query_params.get("cloud")), request.query_params.get("name", "")
        kind = request.query_params.get("kind", "prefixes")
        if kind not in plots.PLOT_KINDS:
            raise PageError(404, f"no plot {kind!r}")
        # The page names the plot with its publications stamp (v=COUNT-NEWEST): a plot kept under that stamp
        # is served without reading the stamp again, and may be kept by the browser for good (it never changes).
        count, _, newest = request.query_params.get("v", "").partition("-")
        named = (cloud, name, int(count), int(newest)) if count.isdigit() and newest.isdigit() else None
        kept = svg_cache.get((*named, kind)) if named else None
        if kept is not None:
            key = named
        else:
            key, real, _entries, points, _dates = tag_history(cloud, name)
            kept = tag_svg(key, real, points, kind)
        lasting = key == named
        etag = '"' + hashlib.sha256(repr((*key, kind)).encode()).hexdigest()[:32] + '"'
        headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                   "X-Content-Type-Options": "nosniff", "ETag": etag, "Vary": "Accept-Encoding",
                   "Cache-Control": "private, max-age=31536000, immutable" if lasting else "private, no-cache"}
        if etag in if_none_match(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        # The SVG is its own document: no script runs in it, and it loads nothing.
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            return Response(kept[1], media_type="image/svg+xml", headers={**headers, "Content-Encoding": "gzip"})
        return Response(kept[0], media_type="image/svg+xml", headers=headers)

    def watch_page(request: Request, user: UserInfo) -> Response:
        cloud, name = api.cloud_of(request.query_params.get("cloud")), request.query_params.get("name", "")
        now = dt.datetime.now(dt.timezone.utc)
        with reads.connect() as conn:
            approved = states.current(conn, cloud, name)
            found = [t for t in tickets.list_tickets(conn) if t.watch == name and t.cloud == cloud]
        if approved is None and not found:
            raise PageError(404, f"watch {name!r} ({cloud}) has no tickets and no approved state")
        return page("watch.html", request, user, watch=name, cloud=cloud, lists=approved.to_json(now) if approved
                    else None, tickets=queue_order(found), families=states.FAMILIES)

    def lookup_page(request: Request, user: UserInfo) -> Response:
        address = request.query_params.get("address", "").strip()
        cloud = api.cloud_of(request.query_params.get("cloud"))
        hits, pub, message = [], None, ""
        if address:
            with reads.connect() as conn:
                try:
                    pub = store.resolve_publication(conn, cloud, "latest")
                    hits = store.lookup(conn, cloud, address, pub)
                except WatcherError as exc:
                    message = str(exc)
        return page("lookup.html", request, user, address=address, cloud=cloud, hits=hits, pub=pub, message=message)

    def publications_page(request: Request, user: UserInfo) -> Response:
        cloud = api.cloud_of(request.query_params.get("cloud"))
        with reads.connect() as conn:
            pubs = store.publications(conn, cloud)
        return page("publications.html", request, user, cloud=cloud, pubs=list(reversed(pubs)),
                    gaps=publication_gaps([p.file_date for p in pubs], settings.daemon.stale_after_days))

    def health_page(request: Request, user: UserInfo) -> Response:
        with reads.connect() as conn:
            report = overview.status_report(conn, settings, dt.datetime.now(dt.timezone.utc)).to_json()
        return page("health.html", request, user, report=report)

    # ------------------------------------------------------------ warm-up

    def warm_up(deadline: float) -> dict[str, Any]:
        """Before the server listens (``web.warm_up``): the reads each page sends with the sign-in check run once
        (SQLAlchemy compiles a statement at its first use in a process, and psycopg's pipeline needs its text),
        and what reviewers open next is made and kept, until ``time.monotonic()`` passes ``deadline``: the queue,
        the live tickets' pages (newest first, as many as are kept), the pages of the tags they
        change, then of the tags the configured watches resolve to (a quarter of the series cache at most), and
        the sizes of the prefix sets no view has counted yet (``series.count_uncounted``, the tags with most
        first). What is not done in time is done by the first view that needs it, as before."""
        done: dict[str, Any] = {"tickets": 0, "tags": 0}
        now = dt.datetime.now(dt.timezone.utc)
        nobody = users.find_user_read("")  # read with every page's stamp: the look-up of the signed-in user

        def stamp_rows(read: Any) -> list[Any]:
            with reads.connect() as conn:
                return db.read_together(conn, [nobody, read])[1]

        queue_body(review_queue.tickets_stamp_from(stamp_rows(review_queue.tickets_stamp_read())),
                   {"state": "", "watch": "", "cloud": ""}, 0, now)
        with reads.connect() as conn:
            live = review_queue.review_queue(conn).live
        wanted: dict[tuple[str, str], None] = {}
        for row in live[:min(SNIPPET_CACHE_TICKETS, TICKET_PAGE_CACHE_ENTRIES)]:
            if time.monotonic() >= deadline:
                break
            read = ticket_detail.page_stamp_read(row.id)
            if read is None:
                continue
            ticket_view(row.id, ticket_detail.page_stamp_from(stamp_rows(read), row.id), now)
            done["tickets"] += 1
            with reads.connect() as conn:
                wanted.update(((row.cloud, t["tag"]), None) for t in tickets.get_ticket(conn, row.id).context["tags"])
        # Then the tags the configured watches resolve to (what `watcher watches` lists), in the order it lists
        # them: the pages reviewers open besides a ticket's.
        clouds = list(dict.fromkeys([*(r.cloud for r in settings.registries), *settings.clouds]))
        if time.monotonic() < deadline and clouds:
            with reads.connect() as conn:
                names = {c: store.present_tag_names(conn, c) for c in clouds}
            for watch in watches.resolve_watches(settings, names):
                wanted.update(((watch.cloud, tag), None) for tag in watch.tag_names)
            if not wanted and settings.clouds and names[settings.clouds[0]]:
                # Nothing live, nothing watched: one tag, for the tag page's statements.
                wanted = {(settings.clouds[0], names[settings.clouds[0]][0]): None}
        for cloud, name in list(wanted)[:SERIES_CACHE_ENTRIES // 4]:
            if time.monotonic() >= deadline:
                break
            key, real, entries, points, dates = tag_history(cloud, name, [stamp_rows(series.publications_stamp_read(cloud))])
            tag_body(key, real, entries, points, dates, "", "")  # its plots are drawn by the browser (SVG only without JS)
            done["tags"] += 1
        counted = series.count_uncounted(engine, deadline)
        done.update(sizes_counted_tags=counted.tags, sizes_counted_sets=counted.sets, sizes_left_tags=counted.left)
        return done

    if warm_ups is not None:
        warm_ups.append(warm_up)

    return [
        Route("/", signed_in(queue, queue_reads)),
        Route("/tag", signed_in(tag_page, tag_reads)),
        Route("/tag/plot.svg", signed_in(tag_plot)),
        Route("/watch", signed_in(watch_page)),
        Route("/lookup", signed_in(lookup_page)),
        Route("/publications", signed_in(publications_page)),
        Route("/health", signed_in(health_page)),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/tickets/{ticket_id:int}", signed_in(ticket_page, ticket_reads)),
        Route("/tickets/{ticket_id:int}/action", ticket_action, methods=["POST"]),
        Route("/tickets/{ticket_id:int}/snippet/{fmt}", signed_in(snippet)),
        Mount("/static", app=ASSETS, name="static"),
    ]
