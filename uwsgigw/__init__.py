"""uwsgigw: a Python application server for nginx's ``uwsgi_pass``."""

__version__ = "0.1.0"
