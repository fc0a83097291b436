"""Errors on the wire (``protocol/errors.py``) and the remote error classes."""

from __future__ import annotations

import importlib
import pickle
import pkgutil

import msgspec
import pytest

import stratus
from stratus import _exceptions as exc
from stratus.protocol import errors
from stratus.protocol import messages as m


def all_stratus_errors() -> set[type[exc.StratusError]]:
    for info in pkgutil.walk_packages(stratus.__path__, "stratus."):
        if info.name.startswith(("stratus.cli", "stratus.fs.fuse", "stratus.__main__")):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # optional dependencies (ray...) absent
            continue
    found: set[type[exc.StratusError]] = set()
    todo = [exc.StratusError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return {c for c in found if not c.__name__.startswith("RemoteError[")}


def sample(cls: type[exc.StratusError]) -> exc.StratusError:
    if cls is exc.RemoteError:
        return exc.RemoteError("boom", remote_type="builtins.KeyError", remote_traceback="tb")
    if cls is exc.MergeContention:
        return exc.MergeContention(["a"], 3)
    named = (exc.FunctionNotFound, exc.VolumeNotFound, exc.VolumeExists)
    if cls in (*named, exc.ObjectNotFound, exc.ObjectExists):
        return cls("thing")  # type: ignore[call-arg]
    if cls is exc.ReservedKey:
        return exc.ReservedKey("fs/volumes/x")
    if cls is exc.StoreLockTimeout:
        return exc.StoreLockTimeout("state.db", 10.0, [42])
    return cls("something went wrong")


def test_every_exception_class_is_defined_in_the_exceptions_module() -> None:
    assert {c.__module__ for c in all_stratus_errors()} == {"stratus._exceptions"}


def test_every_exception_class_has_a_wire_kind() -> None:
    assert {c.__name__ for c in all_stratus_errors()} == set(errors.KINDS)


@pytest.mark.parametrize("cls", sorted(errors.KINDS.values(), key=lambda c: c.__name__))
def test_encode_then_decode_gives_the_same_type_and_message(cls: type[exc.StratusError]) -> None:
    error = sample(cls)
    info = msgspec.msgpack.decode(msgspec.msgpack.encode(errors.encode(error)), type=m.ErrorInfo)
    back = errors.decode(info, "inv-1", "fn")
    assert type(back) is cls
    assert str(back) == str(error) or isinstance(back, exc.InvocationError | exc.RemoteError)
    if isinstance(back, exc.InvocationError):
        assert (back.invocation_id, back.function) == ("inv-1", "fn")


def test_an_unknown_kind_is_rejected_by_the_decoder() -> None:
    bad = msgspec.msgpack.encode({"kind": "NoSuchError", "message": "x"})
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(bad, type=m.ErrorInfo)


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as e:
        return e


def test_a_remote_key_error_is_caught_as_key_error_and_as_remote_error() -> None:
    info = errors.encode_remote(raised(KeyError("k")), limit=1 << 20)
    with pytest.raises(KeyError) as caught:
        raise errors.decode(info, "inv", "lookup")
    error = caught.value
    assert isinstance(error, stratus.RemoteError) and isinstance(error, LookupError)
    assert error.remote_type == "builtins.KeyError" and error.function == "lookup"
    assert isinstance(error.exception, KeyError)


def test_remote_error_classes_are_made_once_per_type() -> None:
    assert exc.remote_error_type(ValueError) is exc.remote_error_type(ValueError)
    assert issubclass(exc.remote_error_type(FileNotFoundError), OSError)


class NeedsTwo(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(a, b)


class NewNeedsTwo(Exception):
    def __new__(cls, a: int, b: int) -> NewNeedsTwo:
        return super().__new__(cls)


def test_an_original_type_with_its_own_init_signature_still_subclasses() -> None:
    error = exc.new_remote_error(NeedsTwo, "m", remote_type="t", remote_traceback="")
    assert isinstance(error, NeedsTwo) and isinstance(error, exc.RemoteError)


@pytest.mark.parametrize("original", [NewNeedsTwo, SystemExit, KeyboardInterrupt, exc.NoCapacity])
def test_types_that_cannot_be_mixed_in_safely_give_a_plain_remote_error(
    original: type[BaseException],
) -> None:
    assert exc.remote_error_type(original) is exc.RemoteError


def test_a_remote_error_of_an_original_type_pickles() -> None:
    error = exc.new_remote_error(
        KeyError,
        "k",
        remote_type="builtins.KeyError",
        remote_traceback="tb",
        exception=KeyError("k"),
        invocation_id="i",
        function="f",
        step="g",
        step_index=1,
    )
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert vars(back) == {**vars(error), "exception": back.exception}
    assert str(back) == str(error)


def test_a_remote_error_raised_again_remotely_keeps_the_original_type() -> None:
    inner = exc.new_remote_error(KeyError, "k", remote_type="KeyError", remote_traceback="")
    info = errors.encode_remote(raised(inner), limit=1 << 20)
    assert isinstance(errors.decode(info), KeyError)


def test_retry_on_names_a_type_or_one_of_its_bases() -> None:
    names = (errors.type_name(OSError),)
    assert errors.encode_remote(raised(FileNotFoundError()), limit=1 << 20, retry_on=names).retry
    assert not errors.encode_remote(raised(KeyError()), limit=1 << 20, retry_on=names).retry
    assert not errors.encode_remote(raised(OSError()), limit=1 << 20).retry


def test_a_dag_step_failure_names_the_step() -> None:
    info = errors.in_step(errors.encode_remote(raised(ValueError("v")), limit=1 << 20), "parse", 2)
    error = errors.decode(info, "inv", "pipeline")
    assert isinstance(error, exc.RemoteError)
    assert (error.function, error.step, error.step_index) == ("pipeline", "parse", 2)
    assert "DAG step 2: parse" in str(error)
    timeout = errors.decode(errors.in_step(m.ErrorInfo("InvocationTimeout", "late"), "s", 0))
    assert isinstance(timeout, exc.InvocationTimeout) and timeout.step == "s"


def test_the_traceback_skips_the_platforms_frames() -> None:
    def user_code() -> None:
        raise ValueError("deep")

    def platform() -> None:
        user_code()

    try:
        platform()
    except ValueError as e:
        info = errors.encode_remote(e, limit=1 << 20, skip_frames=2)
    assert "user_code" in info.traceback and "platform" not in info.traceback


def test_a_failure_passed_up_through_nested_calls_stays_bounded() -> None:
    """Each level re-raises its callee's RemoteError: the wire form keeps the original
    exception (not a pickle of every level) and cuts the text, keeping both ends."""
    info = errors.encode_remote(KeyError("deep"), limit=1 << 20)
    for _ in range(300):
        try:
            raise errors.decode(info)
        except exc.RemoteError as raised:  # raised: it carries a traceback, as in a function
            info = errors.encode_remote(raised, limit=1 << 20)
    assert info.message == "'deep'"  # the callee's own words, not 300 levels of them
    assert len(info.traceback) <= errors.TRACEBACK_CHARS + 100
    assert "characters left out" in info.traceback
    assert info.traceback.rstrip().endswith("'deep'")  # the innermost failure is kept
    assert type(pickle.loads(info.exception)) is KeyError
    with pytest.raises(KeyError):
        raise errors.decode(info)
