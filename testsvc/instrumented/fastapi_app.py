"""FastAPI + prometheus-fastapi-instrumentator test service (instrumentator defaults)."""
import asyncio, itertools, os
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator

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

# defaults: Instrumentator().instrument(app).expose(app)  -> GET /metrics
Instrumentator().instrument(app).expose(app)

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
