"""The /v2 views: each checks its input, calls one function of the proxy, and shapes the answer.

Routes: `/v2/`, `/v2/wt/<token>/<name>/manifests/<reference>`, `.../blobs/<digest>`, `.../tags/list`;
anything else under /v2 is NAME_UNKNOWN. `@oci_view` adds the method check, errors and headers.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse

from registry.errors import OciCode
from requests_app.oci.blobs import serve_blob
from requests_app.oci.errors import oci_error, oci_view
from requests_app.oci.manifests import check_reference, manifest_to_serve, tags_page

PULL = ("GET", "HEAD")


@oci_view(methods=None)
async def v2_unknown(request: HttpRequest, rest: str = "") -> HttpResponse:
    return oci_error(OciCode.NAME_UNKNOWN, "Unknown repository: pull Wave containers as <server>/wt/<token>/<image>")


@oci_view(methods=PULL)
async def v2_root(request: HttpRequest) -> HttpResponse:
    return HttpResponse("{}", content_type="application/json")


@oci_view(methods=PULL)
async def manifest(request: HttpRequest, token: str, name: str, reference: str) -> HttpResponse:
    check_reference(reference)
    document = await manifest_to_serve(
        token=token, name=name, reference=reference, client_ip=request.META.get("REMOTE_ADDR")
    )
    response = HttpResponse(b"" if request.method == "HEAD" else document.content, content_type=document.media_type)
    response["Content-Length"] = str(document.size)
    response["Docker-Content-Digest"] = document.digest
    response["ETag"] = f'"{document.digest}"'
    return response


@oci_view(methods=PULL)
async def blob(request: HttpRequest, token: str, name: str, digest: str) -> HttpResponseBase:
    return await serve_blob(request, token=token, name=name, digest=digest)


@oci_view(methods=("GET",))
def tags_list(request: HttpRequest, token: str, name: str) -> HttpResponse:
    page = tags_page(token=token, name=name, page={k: request.GET[k] for k in ("n", "last") if k in request.GET})
    response = JsonResponse({"name": page.name, "tags": page.tags})
    if page.link:
        response["Link"] = page.link
    return response
