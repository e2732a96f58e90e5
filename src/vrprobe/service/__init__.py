"""vrprobe over HTTP: a model and its saved reliability probe answering questions about images (`vrprobe serve`).

- `app.py`: `create_app(scorer, max_batch, max_wait_ms, max_image_bytes)`, the FastAPI app (`POST /v1/answer`,
  `GET /healthz`, `/docs`) and its response models;
- `batcher.py`: `MicroBatcher`, which answers concurrent requests together, one model batch at a time;
- `inputs.py`: a request body (JSON or multipart) → a checked `Query`, or `BadRequest` (a 4xx and one line);
- `server.py`: `serve(model, probe, ...)`: check the settings, bind, load, run uvicorn.

Above `vrprobe.api` and below the CLI; it never touches a run directory.
"""

from vrprobe.service.app import create_app
from vrprobe.service.batcher import MicroBatcher
from vrprobe.service.server import serve

__all__ = ["MicroBatcher", "create_app", "serve"]
