"""Commands for CRM sync and recordings: integrations amocrm, sync, recordings purge."""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Annotated

import typer

from callhistory.cli.common import app, database, fail

recordings_app = typer.Typer(help="Call recordings.", no_args_is_help=True)
app.add_typer(recordings_app, name="recordings")
integrations_app = typer.Typer(help="CRMs the calls are pushed to.", no_args_is_help=True)
amocrm_app = typer.Typer(help="amoCRM (Kommo).", no_args_is_help=True)
integrations_app.add_typer(amocrm_app, name="amocrm")
app.add_typer(integrations_app, name="integrations")


@recordings_app.command("purge")
def recordings_purge(
    account: Annotated[int | None, typer.Option(metavar="ID", help="only this account")] = None,
    dry_run: Annotated[bool, typer.Option(help="report what would go; delete nothing")] = False,
) -> None:
    """Delete recordings older than each account's retention, and clear their links."""
    from callhistory import recordings, store
    from callhistory.config import Settings
    from callhistory.recordings import AccountRoots

    settings = Settings()
    with database(settings) as engine:
        roots = AccountRoots(settings.recordings_root, engine)
        report = recordings.purge(
            engine, roots, store.utcnow(), account_id=account, dry_run=dry_run
        )
    verb = "would delete" if dry_run else "deleted"
    shared = (
        f"; {report.shared} files kept: another account's call links them" if report.shared else ""
    )
    typer.echo(
        f"{verb} {report.files} files ({report.bytes / 1e6:.1f} MB) of {report.calls} expired "
        f"calls; {report.missing} files were already missing{shared}"
    )


@amocrm_app.command("connect")
def amocrm_connect(
    account: Annotated[int, typer.Option(metavar="ID", help="account id")],
    base_url: Annotated[str, typer.Option(metavar="URL", help="https://SUBDOMAIN.amocrm.ru")],
    long_lived_token: Annotated[
        str | None,
        typer.Option(metavar="TOKEN", envvar="AMOCRM_TOKEN", help="a private integration's token"),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(metavar="ID", help="OAuth: the integration's id")
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(metavar="SECRET", envvar="AMOCRM_CLIENT_SECRET", help="OAuth: its secret"),
    ] = None,
    redirect_uri: Annotated[
        str | None, typer.Option(metavar="URL", help="OAuth: its redirect URI")
    ] = None,
    code: Annotated[
        str | None, typer.Option(metavar="CODE", help="OAuth: the authorization code")
    ] = None,
) -> None:
    """Connect the account's amoCRM; from then on each outside call is queued for it."""
    from callhistory.config import Settings
    from callhistory.crm.amocrm import AmoCrmClient
    from callhistory.crm.client import CrmAuthError, TransientCrmError
    from callhistory.crm.connect import ConnectError, connect_amocrm

    settings = Settings()
    oauth = {
        k: v
        for k, v in (
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("redirect_uri", redirect_uri),
        )
        if v
    }
    try:
        with database(settings) as engine:
            integration_id = connect_amocrm(
                engine, settings, account, base_url, AmoCrmClient(base_url),
                long_lived_token=long_lived_token, oauth=oauth or None, code=code,
            )  # fmt: skip
    except (ConnectError, CrmAuthError, TransientCrmError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"amoCRM connected to account {account} (integration {integration_id})")


@amocrm_app.command("show")
def amocrm_show(account: Annotated[int, typer.Option(metavar="ID", help="account id")]) -> None:
    """The connection and its queue (secrets are never shown)."""
    from callhistory.config import Settings
    from callhistory.crm.connect import describe as describe_integration

    with database(Settings()) as engine:
        found = describe_integration(engine, account, "amocrm")
    if found is None:
        raise fail(f"account {account} has no amoCRM connected")
    typer.echo(json.dumps(found, indent=2))


@amocrm_app.command("disconnect")
def amocrm_disconnect(
    account: Annotated[int, typer.Option(metavar="ID", help="account id")],
) -> None:
    """Forget the credentials; calls not yet pushed are dropped from the queue."""
    from callhistory import crmstore
    from callhistory.config import Settings

    with database(Settings()) as engine, engine.begin() as conn:
        if not crmstore.disconnect(conn, account, "amocrm"):
            raise fail(f"account {account} has no amoCRM connected")
    typer.echo(f"amoCRM disconnected from account {account}")


@app.command("sync")
def sync_command(
    once: Annotated[bool, typer.Option(help="push what is due, then exit")] = False,
) -> None:
    """Push queued calls to the connected CRMs, until SIGTERM/SIGINT (or done, with --once)."""
    from callhistory.config import Settings
    from callhistory.crm.sync import SyncWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    with database(settings) as engine:
        worker = SyncWorker(engine, settings)
        if once:
            typer.echo(f"pushed or settled {worker.drain()} queued calls")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        worker.run(stop)
