"""Settings of the example Django project.

``SITE_DATABASE``: an SQLite file path (default ``site.sqlite3`` here) or a
``postgresql://user@host:port/name`` URL.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SITE_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("SITE_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]


def _database(spec: str) -> dict[str, object]:
    if spec.startswith(("postgresql://", "postgres://")):
        url = urlsplit(spec)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username or "",
            "PASSWORD": url.password or "",
            "HOST": url.hostname or "",
            "PORT": str(url.port or ""),
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": spec,
        # errands' workers write to the same file: take the write lock at BEGIN.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
    }


DATABASES = {"default": _database(os.environ.get("SITE_DATABASE", str(BASE_DIR / "site.sqlite3")))}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "errands.django",
    "wordcount",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "errands.django.middleware.OwnerMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TASKS = {"default": {"BACKEND": "errands.django.ErrandsBackend"}}
ERRANDS = {"DATABASE": "default"}

ROOT_URLCONF = "site_config.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ASGI_APPLICATION = "site_config.asgi.application"
WSGI_APPLICATION = "site_config.wsgi.application"
STATIC_URL = "static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
