"""mysite1: the minimal Django project the seed's uWSGI INI deploys."""
