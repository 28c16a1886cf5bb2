"""`azdo-gateway demo`: the whole gateway on this machine, with stand-ins for the cloud.

Starts the Entra ID stand-in (TLS, on loopback) with three app registrations, the
Azure DevOps stand-in (organization `fabrikam`, real git repositories in a
temporary directory), writes a gateway.yaml and a policy with three sample
clients, one per way in:

- a read-only legacy key and a build bot: gateway keys, each acted for upstream
  by its own service principal through real MSAL client-credentials tokens;
- developers: Entra ID users (a group), whose own access token (minted here by
  the stand-in, as Entra would issue it to a tool the user signed in to) the
  gateway validates and exchanges on-behalf-of the user for that user's Azure
  DevOps token,

and runs the gateway in front of them. Everything lives in one temporary
directory that is removed on exit, except the audit trail, which is kept for
`azdo-gateway report`. The stand-ins are only ever started here and by tests.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml

from gateway.app import Gateway, build_runtime
from gateway.authn.api_key import key_sha256, new_key
from gateway.demo.azdo import AzdoStandIn
from gateway.demo.entra import AZURE_DEVOPS_RESOURCE, EntraStandIn
from gateway.demo.examples import Example, examples
from gateway.loading import load_checked
from gateway.server import Listeners, start_listeners

ORG = "fabrikam"
READER = "legacy-reader"
BOT = "build-bot"
DEVELOPERS = "developers"
READER_SCOPES = ["vso.code", "vso.build", "vso.work", "vso.release"]
BOT_SCOPES = ["vso.code_write", "vso.build_execute", "vso.release", "vso.work"]
DEVELOPER_SCOPES = ["vso.code", "vso.work"]
GATEWAY_AUDIENCE = "api://azdo-gateway"  # the gateway's app registration (identifier URI)
DEVELOPERS_GROUP = "5b7e1c2a-0d4f-4a8e-9c3b-6f2d1e0a9b77"  # the Entra ID group of the users
USER_TOKEN_LIFETIME_S = 8 * 3600  # the minted user token lasts a working day


def _bearer_checker(entra: EntraStandIn) -> Any:
    """What the Azure DevOps stand-in accepts: an Entra token for Azure DevOps."""

    def check(header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
            key = entra.keys.public_key(str(kid))
            if key is None:
                return False
            jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=AZURE_DEVOPS_RESOURCE,
                options={"require": ["exp", "aud"]},
            )
        except jwt.PyJWTError:
            return False
        return True

    return check


@dataclass
class Demo:
    """Everything the demo started; `close()` stops it all and removes its files."""

    workdir: Path
    entra: EntraStandIn
    azdo: AzdoStandIn
    gateway: Gateway
    listeners: Listeners
    keys: dict[str, str]
    config_path: Path
    audit_path: Path  # outside workdir: kept after close() unless `discard_audit`
    user_token: str = field(default="", repr=False)  # an Entra ID user's access token
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.listeners.proxy_url

    @property
    def admin_url(self) -> str:
        return self.listeners.admin_url

    def examples(self) -> list[Example]:
        return examples(
            self.url,
            self.admin_url,
            self.keys[READER],
            self.keys[BOT],
            self.user_token,
            git=self.has_git,
        )

    @property
    def has_git(self) -> bool:
        return bool(self.azdo.org.projects[0].repos)

    async def close(self, *, discard_audit: bool = False) -> None:
        with contextlib.suppress(Exception):
            await self.listeners.stop()
        with contextlib.suppress(Exception):
            await self.gateway.close()
        await self.azdo.close()
        await self.entra.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if discard_audit:
            with contextlib.suppress(OSError):
                self.audit_path.unlink()


def _write_config(
    workdir: Path,
    entra: EntraStandIn,
    azdo: AzdoStandIn,
    keys: dict[str, str],
    secrets: dict[str, tuple[str, str]],
    host: str,
    port: int,
    admin_port: int,
    audit_path: Path,
) -> Path:
    credentials: dict[str, Any] = {}
    for name, (client_id, secret) in secrets.items():
        secret_file = workdir / f"{name}.secret"
        secret_file.write_text(secret)
        secret_file.chmod(0o600)
        credentials[name] = {
            # the gateway's own registration exchanges users' tokens (on-behalf-of)
            "type": "on_behalf_of" if name == "gateway-app" else "client_secret",
            "client_id": client_id,
            "client_secret_file": str(secret_file),
        }
    gateway_yaml = {
        "listen": {"host": host, "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstream": {"hosts": azdo.hosts},
        "identity": {
            "authority_host": entra.url,
            "tenant_id": entra.tenant_id,
            "ca_file": str(entra.ca_file),
            "audiences": [GATEWAY_AUDIENCE],
        },
        "credentials": credentials,
        "policies": ["policies/*.yaml"],
        "audit": {"file": str(audit_path)},
    }
    policy = {
        "clients": [
            {
                "name": READER,
                "description": "a legacy script that may only read",
                "api_keys": [{"id": f"{READER}-demo", "sha256": key_sha256(keys[READER])}],
                "credential": "reader-sp",
                "scopes": READER_SCOPES,
                "organizations": [ORG],
            },
            {
                "name": BOT,
                "description": "clones, pushes, queues builds",
                "api_keys": [{"id": f"{BOT}-demo", "sha256": key_sha256(keys[BOT])}],
                "credential": "build-sp",
                "scopes": BOT_SCOPES,
                "organizations": [ORG],
                "projects": [f"{ORG}/Fabrikam-Fiber"],
            },
            {
                "name": DEVELOPERS,
                "description": "people, with their own Entra ID sign-in",
                "entra": {"groups": [DEVELOPERS_GROUP]},
                "credential": "gateway-app",
                "scopes": DEVELOPER_SCOPES,
                "organizations": [ORG],
            },
        ]
    }
    (workdir / "policies").mkdir()
    (workdir / "policies" / "demo.yaml").write_text(
        "# Sample clients of `azdo-gateway demo`; keys are generated for each run.\n"
        + yaml.safe_dump(policy, sort_keys=False)
    )
    path = workdir / "gateway.yaml"
    path.write_text(
        "# Written by `azdo-gateway demo`: stand-ins on loopback, not a real "
        "deployment.\n" + yaml.safe_dump(gateway_yaml, sort_keys=False)
    )
    return path


async def start_demo(*, host: str = "127.0.0.1", port: int = 8080, admin_port: int = 9090) -> Demo:
    """Start the stand-ins and the gateway; the caller must `await demo.close()`."""
    workdir = Path(tempfile.mkdtemp(prefix="azdo-gateway-demo-"))
    fd, audit_name = tempfile.mkstemp(prefix="azdo-gateway-demo-audit-", suffix=".jsonl")
    os.close(fd)
    audit_path = Path(audit_name)
    notes: list[str] = []
    entra = azdo = gateway = None
    try:
        entra = await EntraStandIn(default_audience=GATEWAY_AUDIENCE).start()
        secrets = {}
        for name in ("reader-sp", "build-sp", "gateway-app"):
            secret = new_key().replace("azgw_", "demo-secret-")
            uris = (GATEWAY_AUDIENCE,) if name == "gateway-app" else ()
            app = entra.register_app(secret=secret, identifier_uris=uris)
            secrets[name] = (app.client_id, secret)
        user_token = entra.mint_access_token(
            {
                "groups": [DEVELOPERS_GROUP],
                "name": "Dana Developer",
                "preferred_username": "dana@fabrikam.example",
            },
            lifetime_s=USER_TOKEN_LIFETIME_S,
        )
        if shutil.which("git") is None:
            notes.append(
                "git is not installed: the Azure DevOps stand-in serves no repositories,"
                " build definitions or releases"
            )
        azdo = await AzdoStandIn(
            workdir / "repos",
            _bearer_checker(entra),
            organization=ORG,
            with_repositories=shutil.which("git") is not None,
        ).start()
        keys = {READER: new_key(), BOT: new_key()}
        config_path = _write_config(
            workdir, entra, azdo, keys, secrets, host, port, admin_port, audit_path
        )
        config = load_checked(config_path)
        gateway = Gateway(build_runtime(config))
        await gateway.start()
        listeners = await start_listeners(gateway, config)
    except BaseException:
        if gateway is not None:
            await gateway.close()
        if azdo is not None:
            await azdo.close()
        if entra is not None:
            await entra.close()
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(audit_path)
        raise
    return Demo(
        workdir, entra, azdo, gateway, listeners, keys, config_path, audit_path, user_token, notes
    )


def render(demo: Demo, *, interactive: bool = True) -> str:
    """The text the demo prints: where everything is, the credentials, and what to paste."""
    from gateway.demo.examples import git_clone_line, sdk_line, sdk_python

    reader, bot = demo.keys[READER], demo.keys[BOT]
    audit_note = "kept after Ctrl-C, for azdo-gateway report" if interactive else "removed after"
    lines = [
        "azdo-gateway demo: the gateway in front of STAND-INS for Azure DevOps and Entra ID.",
        "Everything runs on this machine; nothing here talks to Microsoft.",
        "",
        f"  gateway       {demo.url}   (use it where you would use https://dev.azure.com)",
        f"  metrics       {demo.admin_url}/metrics   (health: /healthz, /readyz)",
        f"  audit trail   {demo.audit_path}   (one JSON line per request; {audit_note})",
        f"  config        {demo.config_path}",
        f"  Azure DevOps  STAND-IN {demo.azdo.hosts['main']} (organization fabrikam; "
        f"vsrm {demo.azdo.hosts['vsrm']})",
        f"  Entra ID      STAND-IN {demo.entra.url} (issues every token below and upstream)",
        *(f"  note: {n}" for n in demo.notes),
        "",
        "Three sample clients, one per way in (their credentials live only as long as this demo):",
        f"  {READER:<14} a gateway key, read-only: {' '.join(READER_SCOPES)}",
        f"  {'':<14} key {reader}",
        f"  {BOT:<14} a gateway key: {' '.join(BOT_SCOPES)}, project Fabrikam-Fiber only",
        f"  {'':<14} key {bot}",
        f"  {DEVELOPERS:<14} Entra ID users of group {DEVELOPERS_GROUP}:"
        f" {' '.join(DEVELOPER_SCOPES)};",
        f"  {'':<14} the gateway exchanges each user's token on-behalf-of that user. Dana's token",
        f"  {'':<14} (minted by the Entra ID stand-in, valid {USER_TOKEN_LIFETIME_S // 3600} hours)"
        " is USER_TOKEN below.",
        "",
        "  export GW="
        + demo.url
        + " READER_KEY="
        + reader
        + " BOT_KEY="
        + bot
        + " USER_TOKEN="
        + demo.user_token
        + " AUDIT="
        + str(demo.audit_path),
        "",
    ]
    for ex in demo.examples():
        lines += [f"# {ex.title}", ex.curl(), ""]
    if demo.has_git:
        lines += [
            "# git: clone (and push) with the build bot's key as the password",
            git_clone_line(demo.url, bot),
            "",
        ]
    python = sdk_python()
    if python is not None:
        lines.append("# The azure-devops Python SDK, the key as its PAT (this Python has the SDK)")
    else:
        lines.append(
            "# The azure-devops Python SDK, the key as its PAT; this Python has no SDK yet:"
            f" {shlex.join([sys.executable, '-m', 'pip', 'install', 'azure-devops'])}"
        )
    lines.append(sdk_line(demo.url, reader, sys.executable))
    if interactive:
        lines += [
            "",
            "The audit trail stays when the demo stops; then see what each client really used:",
            f"  azdo-gateway report --audit {demo.audit_path}",
            "",
            "Press Ctrl-C to stop.",
        ]
    return "\n".join(lines)


async def serve_demo(
    *, host: str, port: int, admin_port: int, check_only: bool, ready_file: Path | None, out: Any
) -> int:
    """Run the demo until SIGINT/SIGTERM (or, with `check_only`, run its examples and stop)."""
    import asyncio
    import json
    import signal

    from gateway.demo.examples import check

    demo = await start_demo(host=host, port=port, admin_port=admin_port)
    try:
        print(render(demo, interactive=not check_only), file=out, flush=True)
        if ready_file is not None:
            _write_atomically(
                ready_file,
                json.dumps(
                    {
                        "gateway": demo.url,
                        "admin": demo.admin_url,
                        "keys": demo.keys,
                        "userToken": demo.user_token,
                        "audit": str(demo.audit_path),
                    }
                ),
            )
        if check_only:
            print("", file=out)
            results = await check(
                demo.examples(), demo.url, demo.keys[BOT], demo.keys[READER], git=demo.has_git
            )
            for result in results:
                mark = "ok" if result.ok else "skipped" if result.ok is None else "FAILED"
                detail = f": {result.detail}" if result.detail else ""
                print(f"{mark:<8} {result.title}{detail}", file=out, flush=True)
            failed = sum(1 for r in results if r.ok is False)
            print(
                "demo check: " + ("ok" if not failed else f"{failed} failed"),
                file=out,
                flush=True,
            )
            return 1 if failed else 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        print("\nstopping the demo ...", file=out, flush=True)
        return 0
    finally:
        await demo.close(discard_audit=check_only)
        if ready_file is not None:
            _remove(ready_file)
        if not check_only:
            print(
                f"audit trail kept: {demo.audit_path}\n"
                f"  azdo-gateway report --audit {demo.audit_path}",
                file=out,
                flush=True,
            )


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)  # it holds the demo's keys
    tmp.replace(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
