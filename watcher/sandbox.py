"""The template sandbox: Jinja2's immutable sandbox with every unbounded allocation or loop checked first.

Used for built-in and user templates alike (``watcher.render``). A render gets
a ``RenderLimit``: a wall-clock deadline and a budget of loop steps. Widths and
counts that would allocate gigabytes before any output exists (``center``,
``indent``, ``format`` and ``%`` widths, ``slice`` counts, ``lipsum`` sizes,
``*`` repetition, ``**`` powers) are refused from their arguments; ``range``
items count against the step budget; a user template's own lines are counted
by a trace function, so a loop over data that emits nothing still stops.
"""
from __future__ import annotations

import contextvars
import re
import string
import time
from typing import Any, Callable, Iterator

import jinja2
import jinja2.sandbox
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import RenderError

#: The largest integer power a template may compute, in bits (an estimate from above, checked before computing).
MAX_POWER_BITS = 4096
#: The widest padding, indent or slice count a template may ask for.
MAX_WIDTH = 10_000
#: Loop steps (range items and traced template lines) per render: far above what the built-ins need.
MAX_STEPS = 1_000_000
_SEQUENCES = (str, bytes, list, tuple)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}


class RenderLimit:
    """One render's budget: a wall-clock deadline and a step count, checked as the template runs."""

    def __init__(self, where: str, seconds: float, steps: int = MAX_STEPS):
        self.where = where
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.steps_left = steps

    def restart(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def step(self, count: int = 1) -> None:
        self.steps_left -= count
        if self.steps_left < 0:
            raise RenderError(f"{self.where}: more than {MAX_STEPS:,} loop steps (the template's loops are "
                              f"limited)")
        if self.steps_left % 1024 == 0 or count > 1:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderError(f"{self.where}: took more than the render limit of {self.seconds:g} s")


ACTIVE_LIMIT: contextvars.ContextVar[RenderLimit | None] = contextvars.ContextVar("render_limit", default=None)


def _step() -> None:
    limit = ACTIVE_LIMIT.get()
    if limit is not None:
        limit.step()


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
        raise jinja2.exceptions.SecurityError(f"{what} of {value} exceeds the limit of {MAX_WIDTH}")


def _check_percent_format(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise jinja2.exceptions.SecurityError("a '*' width in a % format is not allowed")
            if number:
                _check_width(int(number), "a % format width")


def _check_brace_format(fmt: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec:
            if "{" in spec:
                raise jinja2.exceptions.SecurityError("nested format specifications are not allowed")
            for number in re.findall(r"\d+", spec):
                _check_width(int(number), "a format width")


def counting_range(*args: int) -> Iterator[int]:
    """Jinja's sandboxed range (at most 100,000 items), each item counted against the render's budget."""
    for item in jinja2.sandbox.safe_range(*args):
        _step()
        yield item


def bounded_filters() -> dict[str, Callable[..., Any]]:
    from jinja2 import filters as builtin

    def center(value: Any, width: int = 80) -> str:
        _check_width(width, "center width")
        return builtin.do_center(value, width)

    def indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> str:
        _check_width(width if isinstance(width, int) else len(str(width)), "indent width")
        return builtin.do_indent(value, width, *args, **kwargs)

    def format_(value: Any, *args: Any, **kwargs: Any) -> str:
        _check_percent_format(str(value))
        return builtin.do_format(value, *args, **kwargs)

    def slice_(value: Any, slices: int, fill_with: Any = None) -> Any:
        _check_width(slices, "slice count")
        return builtin.do_slice(value, slices, fill_with)

    @jinja2.pass_environment
    def wordwrap(env: jinja2.Environment, value: Any, width: int = 79, *args: Any, **kwargs: Any) -> str:
        _check_width(width, "wordwrap width")
        return builtin.do_wordwrap(env, value, width, *args, **kwargs)

    @jinja2.pass_environment
    def truncate(env: jinja2.Environment, value: Any, length: int = 255, *args: Any, **kwargs: Any) -> str:
        _check_width(length, "truncate length")
        return builtin.do_truncate(env, value, length, *args, **kwargs)

    return {"center": center, "indent": indent, "format": format_, "slice": slice_, "wordwrap": wordwrap,
            "truncate": truncate}


def bounded_lipsum(n: int = 5, *args: Any, **kwargs: Any) -> str:
    _check_width(n * 100, "lipsum size")
    return jinja2.utils.generate_lorem_ipsum(n, *args, **kwargs)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every way to allocate or loop without bound checked first.

    The output cap only sees what a template emits: ``{{ "x" * 10**9 }}``,
    ``{% set n = 9 ** 10**9 %}``, ``'x'|center(10**9)``,
    ``'{:>1000000000}'.format(x)`` or ``slice(10**8)`` would take gigabytes or
    minutes before a single byte of output. They are refused from their
    arguments instead; ``range`` items count against a per-render step budget,
    and the render's clock is checked as it goes (``Renderer.render``).
    """

    intercepted_binops = frozenset({"*", "**", "%"})
    output_cap = 2 * 1024 * 1024

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (isinstance(sequence, _SEQUENCES) and isinstance(times, int)
                        and len(sequence) * times > self.output_cap):
                    raise jinja2.exceptions.SecurityError(
                        f"a repetition of {len(sequence)} items {times} times exceeds the output cap "
                        f"of {self.output_cap} bytes")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_POWER_BITS:
                raise jinja2.exceptions.SecurityError(f"a power of more than {MAX_POWER_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if getattr(__obj, "__name__", "") in _WIDTH_METHODS and isinstance(getattr(__obj, "__self__", None), str):
            for value in (*args, *kwargs.values()):
                _check_width(value, f"{__obj.__name__} width")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_brace_format(fmt)
            return wrapped(*args, **kwargs)

        return checked


def line_tracer(filename: str, limit: RenderLimit) -> Callable[..., Any]:
    """A trace function that counts the lines a template's own code runs (its loops included)."""

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            limit.step()
        return local

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        code_file = frame.f_code.co_filename
        return local if code_file == filename or code_file == "<template>" else None

    return on_call
