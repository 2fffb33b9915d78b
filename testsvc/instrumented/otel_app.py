"""FastAPI + OpenTelemetry SDK + opentelemetry-instrumentation-fastapi + opentelemetry-exporter-prometheus.

The Prometheus exporter's PrometheusMetricReader registers a collector in prometheus_client's
default REGISTRY; instead of its separate start_http_server port we serve that registry on the
app's own port at GET /metrics with prometheus_client's ASGI app, so /health, /login and
/metrics share one port.

Semantic conventions: run.sh sets OTEL_SEMCONV_STABILITY_OPT_IN=http (stable: 
http_server_request_duration_seconds) unless the variable is already set; set it to the empty
string for the old conventions (http_server_duration_milliseconds), or to http/dup for both.
"""
import asyncio, itertools, os

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource, SERVICE_NAME
from prometheus_client import make_asgi_app

# Must be set before instrumenting.
reader = PrometheusMetricReader()  # default: target_info exposed, scope labels on
provider = MeterProvider(resource=Resource.create({SERVICE_NAME: "m-otel-python"}), metric_readers=[reader])
metrics.set_meter_provider(provider)

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

# Every ERROR_EVERY-th /login answers 500 (0: none): an exact error rate the tests compare to.
ERROR_EVERY = int(os.environ.get("ERROR_EVERY", "20"))
_logins = itertools.count(1)
app = FastAPI()

@app.get("/health")
async def health():
    return {"status": "healthy"}

@app.get("/login")
async def login():
    await asyncio.sleep(0.020)
    if ERROR_EVERY and next(_logins) % ERROR_EVERY == 0:
        return JSONResponse({"status": "error"}, status_code=500)
    return {"status": "ok"}

# prometheus_client's ASGI app as the endpoint of an exact route (a Mount would 307 /metrics -> /metrics/).
# Starlette calls plain functions as request->response handlers, so wrap the ASGI callable in an object.
class _ASGI:
    def __init__(self, asgi):
        self.asgi = asgi
    async def __call__(self, scope, receive, send):
        await self.asgi(scope, receive, send)

app.add_route("/metrics", _ASGI(make_asgi_app()), methods=["GET"])

FastAPIInstrumentor.instrument_app(app, meter_provider=provider)

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
