"""Alembic migrations of the errands schema (run by ``errands migrate``)."""
