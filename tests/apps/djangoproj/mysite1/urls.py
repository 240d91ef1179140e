from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("query/", views.query),
    path("form/", views.form),
    path("json/", views.json_view),
    path("upload/", views.upload),
    path("set-cookie/", views.set_cookie),
    path("cookies/", views.cookies),
    path("redirect/", views.go),
    path("landing/", views.landing),
    path("missing/", views.missing),
    path("error/", views.error),
    path("environ/", views.environ),
    path("stream/", views.stream),
]
