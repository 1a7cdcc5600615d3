"""The contract between the web service and the trainer: anyone may import it.

The bundle on disk (``bundle``), which bundle each project serves and the ``model_version`` string
(``registry``), the Redis keys, queues and job ids (``keys``), the per-project set-up record
(``setup_record``), project ids (``projects``) and the Redis client factory (``redis_client``).
Written down for people in ``docs/contracts.md``. Imports only ``backend.config`` and ``backend.errors``.
"""
