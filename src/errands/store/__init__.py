"""Storage: every SQL statement errands runs lives in this package.

``schema`` declares the tables, ``database`` opens engines and runs migrations,
``tasks`` holds the task-record operations (the owner is in every WHERE clause) and
``queue`` the job operations the worker uses. Dialect differences stay behind the same
function names.
"""
