import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
# The example serves its static files itself (the element's script among them); a real
# site runs `manage.py collectstatic` and lets its web server (or WhiteNoise) serve them.
application = ASGIStaticFilesHandler(get_asgi_application())
