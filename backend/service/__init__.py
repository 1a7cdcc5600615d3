"""The web service: the FastAPI app, its routes, schemas, webhooks, job enqueueing, metrics, the model
watcher and the per-process model slots.

Only ``backend.cli`` (the composition root) imports it; ``trainer/`` never does (checked by
import-linter). See ``docs/architecture.md``.
"""
