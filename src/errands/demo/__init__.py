"""The errands demo application (``errands demo``): accounts, a search over files on
disk, live task pages, "my tasks", API tokens, admin pages and metrics.

It needs the ``demo`` extra (``pip install 'errands[demo]'``) and uses errands only
through its public API and ``errands.web.task_api``.
"""
