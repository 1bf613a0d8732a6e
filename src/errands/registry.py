"""Task definitions: a function registered under a name with its payload schema and
options (``@app.task``)."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from .errors import ConfigurationError, InvalidPayload, UnknownTask
from .ids import new_task_id
from .store.codec import json_text
from .store.values import NewTask

Executor = Literal["async", "thread", "process"]

Backoff = float | Callable[[int], float]


def compute_backoff(backoff: Backoff, attempt: int, cap: float) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based).

    A number is the base of an exponential backoff with "equal jitter": the delay
    ``min(cap, base * 2 ** (attempt - 1))`` is halved and a random share of the other
    half is added, so retries of many tasks that failed together spread out. A
    callable gets the attempt number and returns the delay itself.
    """
    if callable(backoff):
        return max(0.0, float(backoff(attempt)))
    delay: float = min(cap, backoff * (2 ** (attempt - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(eq=False)
class TaskDefinition:
    """A registered task. Calling it calls the function directly (for tests)."""

    name: str
    fn: Callable[..., Any]
    payload_model: type[BaseModel] | None
    executor: Executor
    max_attempts: int = 3
    timeout: float | None = None
    priority: int = 0
    backoff: Backoff = 1.0
    backoff_max: float = 300.0
    retention: timedelta | None = None
    #: True when ``retention`` was not given and the app's default applies.
    default_retention: bool = True
    #: While an identical task (same owner, name and payload) is queued or running,
    #: submit returns it instead of creating another.
    unique: bool = False
    #: At most this many tasks of this name run at once for one owner (None: the
    #: app's ``max_running_per_owner``).
    max_running_per_owner: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def parse(self, payload: Any) -> tuple[Any, Any, str]:
        """Validate ``payload``: (value for the function, JSON-ready value to store, that
        value as compact JSON text)."""
        if self.payload_model is None:
            try:
                # strict: NaN and infinities are refused, as storable_json does.
                value = to_jsonable_python(payload if payload is not None else {})
                text = json_text(value, strict=True)
            except (TypeError, ValueError) as exc:
                raise InvalidPayload("the payload is not JSON-serializable") from exc
            return value, value, text
        try:
            model = self.payload_model.model_validate(payload if payload is not None else {})
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            parts = [
                f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in errors
            ]
            raise InvalidPayload("invalid payload: " + "; ".join(parts), errors) from None
        stored = model.model_dump(mode="json")
        return model, stored, json_text(stored)

    def new_task(
        self,
        stored: Any,
        text: str,
        *,
        owner: str,
        now: float,
        run_at: float,
        priority: int | None = None,
        idempotency_key: str | None = None,
        tick: tuple[str, float] | None = None,
    ) -> NewTask:
        """The task a submit (or a schedule's ``tick``: its id and time) creates with
        the checked payload ``stored`` (``text``: its JSON)."""
        digest = None
        if idempotency_key is not None or self.unique:
            digest = hashlib.sha256(
                json.dumps([self.name, stored], sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
        return NewTask(
            id=new_task_id(now),
            owner=owner,
            name=self.name,
            payload=stored,
            payload_json=text,
            max_attempts=self.max_attempts,
            priority=self.priority if priority is None else priority,
            run_at=run_at,
            created_at=now,
            idempotency_key=idempotency_key,
            request_hash=digest if idempotency_key is not None else None,
            unique_key=digest if self.unique else None,
            schedule_id=None if tick is None else tick[0],
            scheduled_for=None if tick is None else tick[1],
        )

    def load(self, stored: Any) -> Any:
        """The function's payload argument from the stored JSON."""
        return stored if self.payload_model is None else self.payload_model.model_validate(stored)


def _payload_model(
    fn: Callable[..., Any], explicit: type[BaseModel] | None
) -> type[BaseModel] | None:
    if explicit is not None:
        return explicit
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2:
        raise ConfigurationError(
            f"task {fn.__name__!r} must take (ctx, payload): the payload is its second argument"
        )
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotation
        hints = {}
    annotation = hints.get(params[1].name, params[1].annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def make_definition(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    max_attempts: int = 3,
    timeout: float | None = None,
    priority: int = 0,
    backoff: Backoff = 1.0,
    backoff_max: float = 300.0,
    executor: Executor | None = None,
    retention: timedelta | float | None = None,
    payload: type[BaseModel] | None = None,
    unique: bool = False,
    max_running_per_owner: int | None = None,
) -> TaskDefinition:
    """The definition ``@app.task`` registers (its options and their defaults)."""
    check_running_cap(max_running_per_owner)
    if max_attempts < 1:
        raise ConfigurationError("max_attempts must be at least 1")
    if timeout is not None and timeout <= 0:
        raise ConfigurationError("timeout must be positive")
    is_async = inspect.iscoroutinefunction(fn)
    if executor is None:
        executor = "async" if is_async else "thread"
    if executor not in ("async", "thread", "process"):
        raise ConfigurationError("executor must be 'async', 'thread' or 'process'")
    if executor == "async" and not is_async:
        raise ConfigurationError(f"task {fn.__name__!r} is not a coroutine function")
    if executor != "async" and is_async:
        raise ConfigurationError(f"executor={executor!r} needs a plain (def) function")
    if executor == "process" and ("<locals>" in fn.__qualname__ or fn.__module__ is None):
        raise ConfigurationError("a process task must be a module-level function")
    keep = retention
    if not isinstance(keep, timedelta | None):  # seconds; math.inf: forever
        keep = timedelta.max if math.isinf(keep) else timedelta(seconds=keep)
    return TaskDefinition(
        name=name or fn.__name__,
        fn=fn,
        payload_model=_payload_model(fn, payload),
        executor=executor,
        max_attempts=max_attempts,
        timeout=timeout,
        priority=priority,
        backoff=backoff,
        backoff_max=backoff_max,
        retention=keep,
        default_retention=retention is None,
        unique=bool(unique),
        max_running_per_owner=max_running_per_owner,
    )


def check_running_cap(cap: object) -> None:
    """``max_running_per_owner`` is None (no limit) or a positive integer."""
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ConfigurationError("max_running_per_owner must be a positive integer or None")


@dataclass(frozen=True, slots=True)
class DeclaredSchedule:
    """A schedule declared in code (``app.schedule``), with its payload checked."""

    key: str
    name: str
    payload: Any
    owner: str
    cron: str | None
    every: float | None
    timezone: str


class Registry:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskDefinition] = {}
        #: Schedules declared in code, by key (workers write them to the database).
        self.schedules: dict[str, DeclaredSchedule] = {}

    def declare(self, schedule: DeclaredSchedule) -> None:
        if schedule.key in self.schedules:
            raise ConfigurationError(
                f"a schedule with key {schedule.key!r} is already declared "
                "(give each schedule of one task its own key=)"
            )
        self.schedules[schedule.key] = schedule

    def add(self, definition: TaskDefinition) -> None:
        if definition.name in self._tasks:
            raise ConfigurationError(f"a task named {definition.name!r} is already registered")
        self._tasks[definition.name] = definition

    def get(self, name: str) -> TaskDefinition:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(name) from None

    def find(self, name: str) -> TaskDefinition | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._tasks.values())
