"""How every ``medseg`` command looks and parses, in one place, whoever adds the command.

- Plain help (no boxes; fits 100 columns), each command's docstring ending in an **Examples**
  section (a ``\\b`` paragraph keeps its lines).
- Plain metavars: an argument shows its name in capitals (``RUN``, ``DATA``); an option without an
  explicit ``metavar=`` shows its own name in capitals (``--split SPLIT``), never a type such as
  ``<path>`` or ``<list[str]>``.
- ``--debug`` and ``--version`` are global but accepted anywhere on the line (``medseg train DATA
  --debug``): they are moved before the command name before parsing.
- Where the data is, parsed one way by every command that reads a dataset: :func:`data_source`.

Applied by :class:`MedsegGroup`, the class of the top-level Typer app, to the whole command tree
when it is built, so commands added later get the same treatment.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from medseg.data.source import DataSource

GLOBAL_FLAGS = ("--debug", "--version")
HELP_WIDTH = 100


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move ``--debug``/``--version`` found after the command name to the front (not after ``--``)."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    found = [a for a in args[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in args[:end] if a not in GLOBAL_FLAGS]
    return found + rest + args[end:]


def _no_type(ctx: Any) -> None:
    return None


def _usage_name(param: TyperArgument):
    def name() -> str:  # RUN for a required argument, [DATA] for an optional one (Typer writes {RUN})
        shown = param.metavar if param.required else f"[{param.metavar}]"
        return shown + ("..." if param.nargs != 1 else "")

    return name


def plain_metavars(command: Any) -> None:
    """Give every argument and valued option of ``command`` (and its sub-commands) a plain metavar.

    Flags (``--overlay``) show no type and no ``[default: False]``: absent means off.
    """
    for param in command.params:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            param.display_type_rich = _no_type  # the name says it: RUN, DATA, not "RUN <path>"
            param._usage_display_name = _usage_name(param)
            if param.hidden:  # a deprecated positional stays out of the usage line too
                param.get_usage_pieces = lambda ctx: []
        elif isinstance(param, TyperOption):
            if param.is_flag and not param.secondary_opts and not param.default:
                param.show_default = False
            elif not param.is_flag and not param.count and param.metavar is None:
                param.metavar = (param.name or "value").strip("_").upper()
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)


_DATA_OPTIONS = {
    "images": Annotated[Path | None, typer.Option("--images", metavar="FOLDER", help="folder of images (with "
                                                  "--masks), for any two folders such as ISIC's official ones")],
    "masks": Annotated[Path | None, typer.Option("--masks", metavar="FOLDER", help="folder of masks (with --images)")],
    "manifest": Annotated[Path | None, typer.Option("--manifest", metavar="CSV", help="CSV with columns "
                                                    "image,mask[,split]; paths relative to the CSV")],
}


def data_source(help: str) -> Callable[[Callable], Callable]:
    """Decorate a command with a ``source: DataSource`` parameter: the user gives it as a positional DATA
    argument (``help`` is its help text) and the options --images, --masks and --manifest, added at the end."""

    def decorate(command: Callable) -> Callable:
        params = [p.replace(name="data", default=None, annotation=Annotated[Path | None, typer.Argument(
                      help=help, show_default=False)]) if p.name == "source" else p
                  for p in inspect.signature(command, eval_str=True).parameters.values()]
        params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
                   for k, a in _DATA_OPTIONS.items()]

        @functools.wraps(command)
        def run(*args, data=None, images=None, masks=None, manifest=None, **kwargs):
            return command(*args, source=DataSource(data, images, masks, manifest), **kwargs)

        run.__signature__ = inspect.Signature(params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate


class MedsegGroup(TyperGroup):
    """The top-level group: plain metavars over the tree, global flags accepted anywhere, 100 columns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_metavars(self)
        self.context_settings.setdefault("max_content_width", HELP_WIDTH)

    def main(self, args: list[str] | None = None, *pargs: Any, **kwargs: Any) -> Any:
        import sys

        return super().main(hoist_global_flags(sys.argv[1:] if args is None else list(args)), *pargs, **kwargs)
