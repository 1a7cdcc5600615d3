"""Training of the per-project species classifier: RQ jobs, the training pipeline and its CLI.

Run order of one job (``trainer.pipeline.run_training``): export from Label Studio -> download and
crop -> location-grouped split -> train -> evaluate (new and served model) -> bundle -> gate ->
pointer + announcement. ``backend`` never imports this package; it enqueues
``trainer.jobs.train_project`` by name.
"""
