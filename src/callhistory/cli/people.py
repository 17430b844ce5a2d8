"""Commands for the service and its people: serve, db, accounts, users, tokens, demo."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Annotated

import typer

from callhistory.classify import ConfigError
from callhistory.cli.common import (
    ContextOpt,
    DidOpt,
    ExtensionsOpt,
    OutsideOpt,
    PbxOptions,
    TrunkOpt,
    app,
    configure_pbx,
    database,
    fail,
)
from callhistory.models import DEFAULT_TIMEZONE

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts (companies).", no_args_is_help=True)
users_app = typer.Typer(help="Users of an account.", no_args_is_help=True)
RoleOpt = Annotated[
    str,
    typer.Option(
        metavar="ROLE", help="admin (the whole account) or user (only its extensions' calls)"
    ),
]
ExtensionOpt = Annotated[
    list[str] | None,
    typer.Option(metavar="EXT", help="an extension the user owns (repeat for more; role user)"),
]
tokens_app = typer.Typer(help="API tokens (Sanctum format).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(accounts_app, name="accounts")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")


@app.command()
def info() -> None:
    """Where this installation keeps its data: database, schema, recordings, key. Creates and
    changes nothing."""
    from sqlalchemy import func, make_url, select
    from sqlalchemy.exc import SQLAlchemyError

    from callhistory import __version__, migrate
    from callhistory.config import Settings
    from callhistory.schema import accounts, make_engine

    settings = Settings()
    rows: list[tuple[str, str]] = [("version", __version__)]
    rows.append(("data dir", f"{settings.data_dir.resolve()} (DATA_DIR)"))
    url = make_url(settings.sqlalchemy_url)
    if settings.database_url is None:
        exists = settings.sqlite_file.exists()
        shown = f"{settings.sqlite_file} (SQLite{'' if exists else ', not created yet'})"
    else:
        exists = True
        shown = url.render_as_string(hide_password=True) + " (DATABASE_URL)"
    rows.append(("database", shown))
    if exists:
        engine = make_engine(settings.sqlalchemy_url)
        try:
            revision = migrate.current_revision(engine)
            with engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(accounts)).scalar_one()
            state = "up to date" if revision == migrate.HEAD else f"behind {migrate.HEAD}"
            rows.append(("schema", f"{revision} ({state}; every command brings it up to date)"))
            rows.append(("accounts", str(count)))
        except SQLAlchemyError as exc:
            rows.append(("schema", f"unreadable: {exc.__class__.__name__}: {str(exc)[:200]}"))
        finally:
            engine.dispose()
    rows.append(
        (
            "recordings",
            f"{settings.recordings_root.resolve()} (RECORDINGS_DIR; account N's files in N/, "
            "unless `accounts configure --recordings-dir`)",
        )
    )
    key_file = settings.data_dir.resolve() / "app.key"
    if settings.app_key:
        rows.append(("app key", "from APP_KEY"))
    else:
        created = "" if key_file.exists() else ", created at the first signed link"
        rows.append(("app key", f"{key_file}{created}"))
    rows.append(("public url", settings.public_url or "the URL each request came in on"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name + ':':<{width + 2}}{value}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    from callhistory.config import Settings

    with database(Settings()):
        typer.echo("database is up to date")


@db_app.command("distribute")
def db_distribute() -> None:
    """On a Citus coordinator: shard the tables by account. The migrations do it when the citus
    extension exists before them; this is for a database that gets Citus later. Idempotent."""
    from callhistory import citus
    from callhistory.config import Settings

    with database(Settings()) as engine, engine.begin() as conn:
        if not citus.enabled(conn):
            raise fail(
                "this database has no citus extension: CREATE EXTENSION citus on every node "
                "and add the workers first (README: Scaling out)"
            )
        moved = citus.distribute(conn)
    typer.echo("sharded by account" if moved else "already sharded by account")


@app.command()
def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="TCP port")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=64, help="server processes; default: one per CPU core"
        ),
    ] = os.cpu_count() or 1,
) -> None:
    """Run the API (migrating the database first) and the CRM sync."""
    from callhistory.api import create_app, server
    from callhistory.config import Settings
    from callhistory.crm.sync import sync_once_connected

    settings = Settings()
    with database(settings) as engine:
        stop = threading.Event()
        threading.Thread(
            target=sync_once_connected, args=(engine, settings, stop), name="crm-sync", daemon=True
        ).start()
        typer.echo(
            f"callhistory on http://{host}:{port}  (docs: http://{host}:{port}/docs), "
            f"{workers} worker{'s' if workers > 1 else ''}"
        )
        try:
            app = create_app(settings, engine) if workers == 1 else None
            server.run(app, settings, host, port, workers)
        finally:
            stop.set()


@accounts_app.command("create")
def accounts_create(
    name: str,
    timezone: Annotated[str, typer.Option(metavar="TZ", help="IANA timezone of the account")] = (
        DEFAULT_TIMEZONE
    ),
    recordings_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="the account's own recordings root; default RECORDINGS_DIR/<id>"
        ),
    ] = None,
) -> None:
    """Create an account; prints its id."""
    from callhistory import accounts
    from callhistory.config import Settings

    settings = Settings()
    try:
        with database(settings) as engine, engine.begin() as conn:
            account_id = accounts.create_account(
                conn,
                name,
                timezone,
                recordings_base=settings.recordings_root,
                recordings_dir=recordings_dir,
            )
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    typer.echo(account_id)


@accounts_app.command("configure")
def accounts_configure(
    account: Annotated[int, typer.Argument(metavar="ID", help="account id")],
    trunk: TrunkOpt = None,
    inbound_context: ContextOpt = None,
    did: DidOpt = None,
    extensions: ExtensionsOpt = None,
    outside_numbers: OutsideOpt = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            metavar="TZ",
            help="IANA timezone of the account: how times are shown and PBX-local CDRs read",
        ),
    ] = None,
    recording_retention_days: Annotated[
        int | None,
        typer.Option(
            metavar="DAYS",
            help="delete recordings older than N days (`recordings purge`); 0 = keep",
        ),
    ] = None,
    recordings_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="the account's own recordings root, e.g. /var/spool/asterisk/monitor; "
            "'' = the default, RECORDINGS_DIR/<account id>",
        ),
    ] = None,
) -> None:
    """Set how the account's PBX calls are classified (each given option replaces its list), its
    timezone, where its recordings live and how long they are kept. Stored calls keep their
    classification until `calls reclassify`."""
    from callhistory import accounts
    from callhistory.config import Settings

    settings = Settings()
    try:
        with database(settings) as engine:
            options = PbxOptions(trunk, inbound_context, did, extensions, outside_numbers)
            with engine.begin() as conn:  # all or nothing: a bad option changes nothing
                configure_pbx(conn, account, options)
                if timezone is not None:
                    accounts.set_timezone(conn, account, timezone)
                if recording_retention_days is not None:
                    accounts.set_recording_retention(
                        conn, account, recording_retention_days or None
                    )
                if recordings_dir is not None:
                    accounts.set_recordings_dir(
                        conn,
                        settings.recordings_root,
                        account,
                        Path(recordings_dir) if recordings_dir else None,
                    )
            with engine.connect() as conn:
                typer.echo(json.dumps(accounts.describe_account(conn, account), indent=2))
    except (accounts.AccountError, ConfigError) as exc:
        raise fail(str(exc)) from None


@accounts_app.command("show")
def accounts_show(account: Annotated[int, typer.Argument(metavar="ID", help="account id")]) -> None:
    """Print the account's settings as JSON."""
    from callhistory import accounts
    from callhistory.config import Settings

    try:
        with database(Settings()) as engine, engine.connect() as conn:
            typer.echo(json.dumps(accounts.describe_account(conn, account), indent=2))
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None


@users_app.command("create")
def users_create(
    account: Annotated[int, typer.Option(metavar="ID", help="account id")],
    email: Annotated[str, typer.Option(metavar="EMAIL")],
    name: Annotated[str, typer.Option(metavar="NAME")],
    password: Annotated[str, typer.Option(metavar="PASSWORD", prompt=True, hide_input=True)],
    role: RoleOpt = "admin",
    extension: ExtensionOpt = None,
) -> None:
    """Create a user in an account; prints its id. An admin sees the whole account; a user (an
    operator) only the calls of its extensions: `--role user --extension 101 --extension 102`."""
    from callhistory import accounts
    from callhistory.config import Settings

    if len(password) < 6:
        raise fail("the password must be at least 6 characters")
    try:
        parsed = accounts.parse_role(role)
        with database(Settings()) as engine, engine.begin() as conn:
            user_id = accounts.create_user(
                conn, account, email, name, password, role=parsed, extensions=extension or ()
            )
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    typer.echo(user_id)


@users_app.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="the user's email")],
    role: RoleOpt,
    extension: ExtensionOpt = None,
) -> None:
    """Change a user's role and extensions (replacing the ones it had); its tokens see the new
    scope from their next request."""
    from callhistory import accounts
    from callhistory.config import Settings

    try:
        parsed = accounts.parse_role(role)
        with database(Settings()) as engine, engine.begin() as conn:
            user = accounts.find_user(conn, email)
            if user is None:
                raise accounts.AccountError(f"No user with email {email}.")
            accounts.set_role(conn, int(user.id), parsed, extension or ())
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    owned = f" ({', '.join(extension or ())})" if extension else ""
    typer.echo(f"{email} is now {parsed.name.lower()}{owned}")


@tokens_app.command("create")
def tokens_create(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="the user's email")],
    abilities: Annotated[
        str,
        typer.Option(
            metavar="LIST",
            help="comma-separated: *, calls:read, calls:write, recordings:read, recordings:delete",
        ),
    ] = "*",
    name: Annotated[str, typer.Option(metavar="NAME", help="a label for the token")] = "cli",
) -> None:
    """Create a token for a user; prints the plaintext token alone on the last line."""
    from callhistory import accounts
    from callhistory.config import Settings

    try:
        parsed = accounts.parse_abilities(abilities)
        with database(Settings()) as engine, engine.begin() as conn:
            user = accounts.find_user(conn, email)
            if user is None:
                raise accounts.AccountError(f"No user with email {email}.")
            token = accounts.create_token(conn, int(user.id), name, parsed)
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"abilities: {', '.join(parsed)}")
    typer.echo(token)


@app.command("demo")
def demo_command(
    calls: Annotated[
        int, typer.Option(metavar="N", min=0, max=5_000_000, help="how many calls")
    ] = 3000,
) -> None:
    """Create the demo account, user, token and calls (once); print the token and a curl line."""
    from callhistory import accounts, demo
    from callhistory.config import Settings

    settings = Settings()
    with database(settings) as engine, engine.begin() as conn:
        account_id, user_id, created = demo.load(conn, calls)
        # One demo token at a time: each run replaces the last one instead of piling them up.
        accounts.revoke_tokens_named(conn, user_id, "demo")
        token = accounts.create_token(conn, user_id, "demo")
        root = accounts.recordings_root(conn, settings.recordings_root, account_id)
    demo.write_clips(root)
    base = settings.public_url or "http://127.0.0.1:8000"
    typer.echo(f"demo account {account_id}: {created} calls added")
    typer.echo(f"login: {demo.DEMO_EMAIL} / {demo.DEMO_PASSWORD}")
    typer.echo(
        f"try:   curl -H 'Authorization: Bearer {token}' "
        f"'{base}/api/v1/call-history?sort=-datetime&per_page=5'"
    )
    typer.echo(f"token: {token}")


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    """Columns aligned for a terminal; `-` for nothing."""
    text = [header, *(tuple("-" if v is None else str(v) for v in row) for row in rows)]
    widths = [max(len(line[i]) for line in text) for i in range(len(header))]
    for line in text:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


@accounts_app.command("list")
def accounts_list() -> None:
    """Every account: id, name, timezone, users."""
    from callhistory import accounts
    from callhistory.config import Settings

    with database(Settings()) as engine, engine.connect() as conn:
        rows = accounts.list_accounts(conn)
    _table(("ID", "NAME", "TIMEZONE", "USERS"), [(r.id, r.name, r.timezone, r.users) for r in rows])


@users_app.command("list")
def users_list(account: Annotated[int, typer.Option(metavar="ID", help="account id")]) -> None:
    """The account's users: id, email, name, role, extensions, created, active or disabled."""
    from callhistory import accounts
    from callhistory.config import Settings
    from callhistory.models import UserType

    try:
        with database(Settings()) as engine, engine.connect() as conn:
            rows = accounts.list_users(conn, account)
            owned = accounts.extensions_of(conn, [r.id for r in rows])
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    _table(
        ("ID", "EMAIL", "NAME", "ROLE", "EXTENSIONS", "CREATED", "STATUS"),
        [
            (
                r.id, r.email, r.name, UserType(r.type).name, ",".join(owned[r.id]) or None,
                f"{r.created_at:%Y-%m-%d %H:%M}",
                "active" if r.disabled_at is None else f"disabled {r.disabled_at:%Y-%m-%d}",
            )
            for r in rows
        ],
    )  # fmt: skip


def _set_disabled(email: str, disabled: bool) -> None:
    from callhistory import accounts
    from callhistory.config import Settings

    try:
        with database(Settings()) as engine, engine.begin() as conn:
            changed = accounts.set_disabled(conn, email, disabled)
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    state = "disabled" if disabled else "enabled"
    typer.echo(f"{email} {state}" if changed else f"{email} was already {state}")


@users_app.command("disable")
def users_disable(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="the user's email")],
) -> None:
    """Stop a user: no login, and every token they hold is refused (401) until `users enable`.
    Their tokens are kept, so enabling gives back the same clients."""
    _set_disabled(email, True)


@users_app.command("enable")
def users_enable(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="the user's email")],
) -> None:
    """Let a disabled user log in again; their tokens work again."""
    _set_disabled(email, False)


@users_app.command("reset-password")
def users_reset_password(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="the user's email")],
    password: Annotated[
        str,
        typer.Option(
            metavar="PASSWORD",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="the new password (asked for when not given)",
        ),
    ],
    revoke_tokens: Annotated[
        bool, typer.Option(help="also revoke every token of the user (a leaked password)")
    ] = False,
) -> None:
    """Set a user's password; with --revoke-tokens, sign them out of every client too."""
    from callhistory import accounts
    from callhistory.config import Settings

    try:
        with database(Settings()) as engine, engine.begin() as conn:
            revoked = accounts.reset_password(conn, email, password, revoke_tokens)
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"password changed; tokens revoked: {revoked}")


@tokens_app.command("list")
def tokens_list(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="the user's email")],
) -> None:
    """The user's tokens: id, name, abilities, last used (UTC), created. Never the secret."""
    from callhistory import accounts
    from callhistory.config import Settings

    with database(Settings()) as engine, engine.connect() as conn:
        user = accounts.find_user(conn, email)
        if user is None:
            raise fail(f"No user with email {email}.")
        rows = accounts.list_tokens(conn, int(user.id))
    _table(
        ("ID", "NAME", "ABILITIES", "LAST USED", "CREATED"),
        [
            (
                r.id, r.name, ",".join(json.loads(r.abilities)),
                f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never",
                f"{r.created_at:%Y-%m-%d %H:%M}",
            )
            for r in rows
        ],
    )  # fmt: skip


@tokens_app.command("revoke")
def tokens_revoke(
    token: Annotated[int, typer.Argument(metavar="ID", help="the token's id")],
) -> None:
    """Revoke a token at once: requests that present it get 401 from then on."""
    from callhistory import accounts
    from callhistory.config import Settings

    with database(Settings()) as engine, engine.begin() as conn:
        if not accounts.revoke_token(conn, token):
            raise fail(f"No token with id {token}.")
    typer.echo(f"token {token} revoked")
