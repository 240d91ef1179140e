"""ASGI entry point of the test project: Django's own handler, as
``manage.py startproject`` writes it."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite1.settings")
application = get_asgi_application()
