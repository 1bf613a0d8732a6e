"""``manage.py errands_worker`` and ``manage.py errands_purge``."""
