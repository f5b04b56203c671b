"""Options shared by several commands, declared once (same name, same help everywhere)."""
from __future__ import annotations

import typer
from typer.core import TyperCommand, TyperGroup


def flag(*names: str, help: str) -> bool:
    """A boolean flag. metavar="" because Typer 0.29 prints `<bool>` after every flag, which reads as if it took a value."""
    return typer.Option(False, *names, help=help, metavar="")


def json_flag(what: str = "the result") -> bool:
    return flag("--json", help=f"Print {what} as JSON on stdout (also on failure), nothing else.")


def verbose_flag() -> bool:
    return flag("--verbose", "-v", help="Details table, and third-party library output on the terminal as well as in the log.")


def overwrite_flag() -> bool:
    return flag("--overwrite", help="Replace a non-empty --out folder that optkit wrote.")


def trust_flag(what: str = "Allow checkpoints that carry code (pickled modules, TorchScript).") -> bool:
    return flag("--trust-checkpoint", help=what)


def ssh_key_option():
    return typer.Option(None, "--ssh-key", help="Private key for the ssh:// device (default: ~/.ssh keys and ssh-agent).")


def known_hosts_option():
    return typer.Option(None, "--known-hosts", help="known_hosts file holding the ssh:// device's host key "
                        "(default ~/.ssh/known_hosts; an unknown host is refused).")


class _HelpAsFlag:
    """`--help` shown as a flag too (the same Typer 0.29 `<bool>`, on the help option)."""

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


class Command(_HelpAsFlag, TyperCommand):
    """Every optkit command."""


class Group(_HelpAsFlag, TyperGroup):
    """Every optkit command group (`optkit`, `optkit report`)."""
