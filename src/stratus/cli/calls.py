"""``stratus run FILE.py::FN ARGS...`` and ``stratus invoke NAME ARGS-AS-JSON``: one call
from the shell, its result printed as JSON (``repr`` when it is not JSON)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stratus import _exceptions as exc

WithClient = Callable[[str | None, str | None, Any], Any]
Option = Callable[[Any], Any]

_TIMEOUT = 300.0


def register(
    cli: click.Group, with_client: WithClient, address_option: Option, data_dir_option: Option
) -> None:
    """Add ``run`` and ``invoke`` to the ``stratus`` group."""
    timeout_option = click.option(
        "--timeout",
        default=_TIMEOUT,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help="Seconds to wait for the result.",
    )

    @cli.command(context_settings={"ignore_unknown_options": True})
    @click.argument("target", metavar="FILE.py::FN")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.option("--name", default=None, help="Register it under this name (default: FN).")
    @timeout_option
    @address_option
    @data_dir_option
    def run(
        target: str,
        args: tuple[str, ...],
        name: str | None,
        timeout: float,
        address: str | None,
        data_dir: str | None,
    ) -> None:
        """Register FN from FILE.py on the cluster and call it once with ARGS.

        Each argument is read as JSON when it is JSON (3, 2.5, true, null, "[1, 2]"), and
        as a string otherwise. FN is a plain function (first parameter: the Context) or
        a class; the file is imported as a module, so its ``__main__`` block does not run.
        """
        fn = load_target(target)
        values = [parse_arg(a) for a in args]

        def call(client: Any) -> Any:
            from stratus.client.app import App

            handle = App(client).function(name=name or fn.__name__)(fn)
            return handle.remote(*values).result(timeout=timeout)

        _echo(_call(with_client, address, data_dir, call))

    @cli.command()
    @click.argument("name")
    @click.argument("arguments", metavar="[ARGS-AS-JSON]", default="[]")
    @timeout_option
    @address_option
    @data_dir_option
    def invoke(
        name: str,
        arguments: str,
        timeout: float,
        address: str | None,
        data_dir: str | None,
    ) -> None:
        """Call the registered function or DAG NAME.

        ARGS-AS-JSON is a list of positional arguments ('[3, "x"]'), an object of keyword
        arguments ('{"x": 3}'), or one other value, the only argument ('3'). Default: none.
        """
        try:
            given = json.loads(arguments)
        except ValueError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="ARGS-AS-JSON") from None
        if isinstance(given, list):
            positional, keywords = tuple(given), {}
        elif isinstance(given, dict):
            positional, keywords = (), given
        else:
            positional, keywords = (given,), {}

        def call(client: Any) -> Any:
            return client.invoke(name, positional, keywords).result(timeout=timeout)

        _echo(_call(with_client, address, data_dir, call))


def parse_arg(text: str) -> Any:
    """A command-line argument: its JSON value, or the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_target(target: str) -> Any:
    """Import ``FILE.py`` (``FILE.py::FN``) as a module and return its ``FN``."""
    path_text, sep, attribute = target.rpartition("::")
    if not sep or not path_text or not attribute.isidentifier():
        raise click.BadParameter("expected FILE.py::FUNCTION", param_hint="FILE.py::FN")
    path = Path(path_text).resolve()
    if not path.is_file():
        raise click.BadParameter(f"no file {path_text}", param_hint="FILE.py::FN")
    module_name = path.stem if path.stem.isidentifier() else "stratus_run_target"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"{path_text} is not a Python file", param_hint="FILE.py::FN")
    module = importlib.util.module_from_spec(spec)
    # Its own imports work as when it runs as a script; its code is shipped by value.
    sys.path.insert(0, str(path.parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise click.ClickException(f"importing {path_text} failed: {type(e).__name__}: {e}") from e
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise click.BadParameter(f"{path_text} defines no {attribute}", param_hint="FILE.py::FN")
    _ship_neighbours(path.parent, module_name)
    return fn


def _ship_neighbours(directory: Path, own: str) -> None:
    """Have the modules FILE.py imported from its own directory pickled by value with
    it: the server's executors cannot import them."""
    import cloudpickle

    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name != own and file and Path(file).resolve().is_relative_to(directory):
            cloudpickle.register_pickle_by_value(module)


def _call(with_client: WithClient, address: str | None, data_dir: str | None, call: Any) -> Any:
    try:
        return with_client(address, data_dir, call)
    except TimeoutError as e:  # our wait ran out (the call itself may still finish)
        raise click.ClickException(f"no result in time: {e or 'timed out'}") from e
    except click.ClickException as e:
        cause = e.__cause__
        if isinstance(cause, exc.RemoteError):  # the remote traceback, then a short line
            click.echo(cause.remote_traceback.rstrip(), err=True)
            raise click.ClickException(
                f"{cause.function or 'the function'} raised {cause.remote_type}: {cause.args[0]}"
            ) from None
        raise


def _echo(result: Any) -> None:
    try:
        click.echo(json.dumps(result))
    except (TypeError, ValueError):
        click.echo(repr(result))
