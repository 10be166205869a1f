"""The local service of the `flaky-service` demo workflow."""

from __future__ import annotations

import threading
from collections import Counter

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

_calls: Counter[str] = Counter()
_lock = threading.Lock()


@require_GET
def demo_flaky(request: HttpRequest) -> HttpResponse:
    """The local service of the ``flaky-service`` demo: each key fails ``fail_first`` times
    with 503 before it answers, like a rate-limited provider."""
    key = request.GET.get("key", "")[:200]
    try:
        fail_first = max(0, min(int(request.GET.get("fail_first", "2")), 20))
    except ValueError:
        return JsonResponse({"error": "fail_first must be a whole number"}, status=400)
    with _lock:
        _calls[key] += 1
        n = _calls[key]
    if n <= fail_first:
        return JsonResponse({"error": "temporarily unavailable", "call": n}, status=503)
    return JsonResponse({"key": key, "call": n, "source": "service"})
