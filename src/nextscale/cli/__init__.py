"""The `nextscale` command: a thin shell over the library; every command is a call a user could make.

One module per command, each with `register(subparsers)` and `run(args)`; what they share is in `common`.
Every failure a user can cause ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import NextscaleError, SettingError
from ..files import first_line
from ..runtime import reuse_freed_memory
from . import bench, demo, edit, evaluate, evaluate_tokenizer, sample, scaling, serve, tokens, train
from .common import Parser

COMMANDS = (
    sample,
    edit,
    train,
    tokens,
    evaluate,
    evaluate_tokenizer,
    serve,
    demo,
    bench,
    scaling,
)  # train: train-tokenizer, train; tokens: tokenize, export; scaling: scaling run, scaling fit


def build_parser() -> Parser:
    parser = Parser(prog="nextscale", description="VAR: image generation by next-scale prediction")
    parser.add_argument("--version", action="version", version=f"nextscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def flag_of(parser: Parser, command: str, setting: str) -> str:
    """The option of `command` whose destination is the library parameter `setting` (the name itself where none
    is)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        if action.dest == setting and action.option_strings:
            return max(action.option_strings, key=len)
    return setting


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "no_reuse_memory", False):
        reuse_freed_memory()  # a command is its own process: keep freed blocks for reuse for its whole life
    try:
        args.func(args)
    except SettingError as e:
        flag = flag_of(parser, args.command, e.setting)
        print(f"nextscale {args.command}: error: {e.reworded(flag)}", file=sys.stderr)
        return 2
    except NextscaleError as e:
        print(f"nextscale {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nextscale {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a file removed under us: the user's to fix, in one line
        print(f"nextscale {args.command}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if "out of memory" not in str(e).lower():
            raise
        print(
            f"nextscale {args.command}: error: out of memory ({first_line(e)}); try a smaller --batch-size",
            file=sys.stderr,
        )
        return 2
    return 0
