"""WSGI entry point: ``module = mysite1.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite1.settings")

application = get_wsgi_application()
