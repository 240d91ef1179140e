"""Views covering GET, query strings, forms, JSON, uploads, cookies, errors."""

import hashlib
import json

from django.http import (Http404, HttpResponse, HttpResponseRedirect, JsonResponse,
                         StreamingHttpResponse)
from django.views.decorators.csrf import csrf_exempt


def index(request):
    return HttpResponse("Hello from Django on uwsgigw")


def query(request):
    return JsonResponse({k: request.GET.getlist(k) for k in request.GET})


@csrf_exempt
def form(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    return JsonResponse({k: request.POST.getlist(k) for k in request.POST})


@csrf_exempt
def json_view(request):
    if request.method == "POST":
        data = json.loads(request.body)
        return JsonResponse({"received": data, "type": type(data).__name__})
    return JsonResponse({"hello": "world", "n": 42, "unicode": "h\u00e9llo \u2603"})


@csrf_exempt
def upload(request):
    f = request.FILES["file"]
    digest = hashlib.sha256()
    size = 0
    for chunk in f.chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"filename": f.name, "size": size, "sha256": digest.hexdigest(),
                         "note": request.POST.get("note")})


def set_cookie(request):
    resp = HttpResponse("cookies set")
    resp.set_cookie("flavour", "chocolate")
    resp.set_cookie("session", "abc123", httponly=True)
    return resp


def cookies(request):
    return JsonResponse(dict(request.COOKIES))


def go(request):
    return HttpResponseRedirect("/landing/")


def landing(request):
    return HttpResponse("landed")


def missing(request):
    raise Http404("no such page")


def error(request):
    raise RuntimeError("django test error (expected)")


def environ(request):
    keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
            "SERVER_PORT", "REMOTE_ADDR", "wsgi.url_scheme")
    data = {k: request.META[k] for k in keys if k in request.META}
    data["scheme"] = request.scheme  # under ASGI, META has no wsgi.url_scheme
    return JsonResponse(data)


def stream(request):
    """A response without a length, produced piece by piece."""
    count = int(request.GET.get("n", "5"))
    return StreamingHttpResponse(("part %d\n" % i for i in range(count)),
                                 content_type="text/plain")
