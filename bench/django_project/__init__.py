"""The Django project of ``bench/django_tasks.py`` (a bench-only app: its settings, tasks
and the progress model of the django-tasks-db runs)."""
