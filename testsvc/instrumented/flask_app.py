"""Flask + prometheus_flask_exporter test service (exporter defaults)."""
import itertools, os, time
from flask import Flask, jsonify
from prometheus_flask_exporter import PrometheusMetrics

# Every ERROR_EVERY-th /login answers 500 (0: none): an exact error rate the tests compare to.
ERROR_EVERY = int(os.environ.get("ERROR_EVERY", "20"))
_logins = itertools.count(1)
app = Flask(__name__)
metrics = PrometheusMetrics(app)  # defaults: path='/metrics', group_by='path'

@app.get("/health")
def health():
    return jsonify(status="healthy")

@app.get("/login")
def login():
    time.sleep(0.020)
    if ERROR_EVERY and next(_logins) % ERROR_EVERY == 0:
        return jsonify(status="error"), 500
    return jsonify(status="ok")

if __name__ == "__main__":
    # threaded werkzeug server, no debug/reloader (exporter disables itself under the reloader)
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), threaded=True, debug=False)
