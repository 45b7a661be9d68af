"""``watcher users``: who may sign in to the review desk, with which role, and their API tokens."""
from __future__ import annotations

import sys

import click

from .. import users
from .app import AppContext, json_option, pass_app, present

ROLE_CHOICE = click.Choice(users.ROLES)


@click.group("users")
def users_group() -> None:
    """Users of the web review desk: add, list, remove, passwd, token."""


def _password_from_stdin() -> str:
    # The password comes on stdin, never as an argument: arguments show in ps and shell history.
    return users.read_password(sys.stdin.read())


@users_group.command("add")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, required=True, help="viewer reads; approver also reviews; admin also manages.")
@pass_app
def add_command(app: AppContext, name: str, role: str) -> None:
    """Add user NAME; the password is read from stdin (its first line)."""
    user = users.add_user(app.engine, name, role, _password_from_stdin())
    click.echo(f"user {user.name} added ({user.role})")


@users_group.command("list")
@json_option
@pass_app
def list_command(app: AppContext, as_json: bool) -> None:
    """The users and their roles."""
    with app.engine.connect() as conn:
        found = users.list_users(conn)
    present(as_json, lambda: [u.to_json() for u in found],
            lambda: [f"{u.name:<30} {u.role:<9} since {u.created_at:%Y-%m-%d}" for u in found] or ["no users"])


@users_group.command("remove")
@click.argument("name")
@pass_app
def remove_command(app: AppContext, name: str) -> None:
    """Remove user NAME and their API tokens."""
    users.remove_user(app.engine, name)
    click.echo(f"user {name} removed")


@users_group.command("passwd")
@click.argument("name")
@pass_app
def passwd_command(app: AppContext, name: str) -> None:
    """Set NAME's password from stdin; their signed-in sessions end."""
    users.set_password(app.engine, name, _password_from_stdin())
    click.echo(f"password of {name} changed")


@users_group.command("token")
@click.argument("name")
@pass_app
def token_command(app: AppContext, name: str) -> None:
    """Print a new API bearer token for NAME (shown once; the user's role applies)."""
    click.echo(users.new_token(app.engine, name))


COMMANDS = (users_group,)
