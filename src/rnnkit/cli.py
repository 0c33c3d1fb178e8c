"""rnnkit's command line: explain a layer's shapes, train on real data, benchmark.

Each subcommand lives in its own module, which defines ``add_arguments(parser)``
and ``run(args) -> int``; those modules import heavy things (numba, matplotlib,
torch) inside ``run``, so ``rnnkit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module that implements it, one-line help)
_COMMANDS = {
    "train": ("rnnkit.commands.train", "train a sequence classifier (the main job)"),
    "predict": ("rnnkit.commands.predict", "predict with a model saved by `rnnkit train`"),
    "explain": ("rnnkit.commands.explain", "every shape and parameter of a layer configuration"),
    "bench": ("rnnkit.commands.bench", "time rnnkit against the installed peers, one process"),
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``rnnkit`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="PyTorch-exact LSTM/GRU/RNN on NumPy: explain, train, benchmark.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in _COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    try:
        return _ending(args.run(args))
    except (ValueError, TypeError, FileNotFoundError, PermissionError, ConnectionError) as error:
        # the user's mistake (or an address that does not answer): one line, exit 2
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"rnnkit {args.command}: {message}", file=sys.stderr)
        return _ending(2)
    except KeyboardInterrupt:
        print(f"rnnkit {args.command}: interrupted", file=sys.stderr)
        return _ending(130)
    except BaseException as error:
        _ending(1, error)  # under mpirun: print it and end every rank; else as usual
        raise


def _ending(status: int, error: BaseException | None = None) -> int:
    """``status``; but a rank of an MPI run (``rnnkit.distributed``) that fails ends the
    whole run at once, rather than leave the others waiting for it forever."""
    distributed = sys.modules.get("rnnkit.distributed")  # imported by commands that use it
    return status if distributed is None else distributed._abort_on_failure(status, error)


if __name__ == "__main__":
    sys.exit(main())
