"""ORM mappings of the errands tables, for host applications.

Query and join task records with the host's own models::

    from errands.store.orm import TaskRow
    session.scalars(select(TaskRow).where(TaskRow.owner == user.id)).all()

Read with these freely; change records only through the errands API, which keeps the
status machine, versions and jobs consistent.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase

from .schema import metadata, output_table, task_table


class Base(DeclarativeBase):
    metadata = metadata


class TaskRow(Base):
    """One row of ``errands_task`` (see ``errands.records.TaskRecord`` for the fields)."""

    __table__ = task_table

    def __getattr__(self, name: str) -> Any:  # columns are mapped from the table
        raise AttributeError(name)


class OutputRow(Base):
    """One item of ``errands_output``."""

    __table__ = output_table

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)
