"""`pause`, `resume`, `retry` and `cancel`: through the service when it runs; otherwise on the state database,
with the workspace lock held (this process is then the only writer), by the rules the download loop applies."""

from __future__ import annotations

import click

from ..config import Settings
from ..errors import WorkspaceBusy
from ..manager import Manager
from ..state import Store
from .app import BadInput, console, main, service_failed, service_of, settings_of
from .client import ServiceClient, ServiceError, segment

PAST = {"pause": "paused", "resume": "resumed", "retry": "queued again", "cancel": "cancelled"}


def _here(settings: Settings, verb: str, target: str) -> None:
    """No service runs: act as its loop would, with the loop's own rules (`Manager.act`), holding the workspace
    lock so that this process is the only writer meanwhile. No aria2c is needed: nothing downloads here."""
    with Store(settings.db_path) as store:
        manager = Manager(settings, store)  # never started: its rules and the store, not aria2c
        try:
            manager.lock.acquire()
        except WorkspaceBusy as e:
            raise click.ClickException(f"{e}: it owns these downloads now; stop it first, then run this again") from None
        try:
            if target == "all":
                console.print(f"{verb}: {manager.act_all(verb)} download(s)")
            else:
                before = store.get(target)
                if before is None:
                    raise BadInput(f"no download with id {target!r}")
                manager.act(verb, target)
                after = store.get(target)
                if after is None or after.state == before.state:
                    console.print(f"{target} is {before.state}: nothing to {verb}")
                    return
                console.print(f"{PAST[verb]} {target}")
            if verb in ("resume", "retry"):
                console.print("no service runs: `downloader serve` (or a `downloader fetch` that includes them) downloads them")
        finally:
            manager.lock.release()


def _through(client: ServiceClient, verb: str, target: str) -> None:
    path = f"/api/downloads/all/{verb}" if target == "all" else f"/api/downloads/{segment(target)}/{verb}"
    try:
        answer = client.post(path)
    except ServiceError as e:
        raise service_failed(e) from None
    if target == "all":
        console.print(f"{verb}: {answer.get('count', 0)} download(s), by the service; `downloader status` shows them")
    else:
        console.print(f"{verb} {target}: asked the service; `downloader status` shows it")


def _command(verb: str, summary: str, example: str, allow_all: bool = True) -> None:
    what = "ID (or all)" if allow_all else "ID"

    @main.command(name=verb, help=f"{summary}\n\nTakes {what}; through the service when it runs.\n\nExample: {example}")
    @click.argument("target", metavar="ID" if not allow_all else "ID|all")
    @click.pass_context
    def command(ctx: click.Context, target: str) -> None:
        if target == "all" and not allow_all:
            raise BadInput(f"{verb} takes one download id (there is no {verb} all)")
        client = service_of(ctx)
        if client is not None:
            _through(client, verb, target)
        else:
            _here(settings_of(ctx), verb, target)


_command("pause", "Pause a download (aria2 keeps what it has; `resume` goes on from there).", "downloader pause wan21-vae")
_command("resume", "Resume a paused download.", "downloader resume all")
_command("retry", "Retry a failed download from where it stopped.", "downloader retry all")
_command(
    "cancel",
    "Stop a download and delete its partial file (a file already in place is left alone).",
    "downloader cancel my-lora",
    allow_all=False,
)
