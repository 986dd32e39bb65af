"""Training: the run spec, the recipe a worker runs, and the services the UI calls.

    from studio.training.spec import RunSpec, validate_spec      # typed spec, YAML, every problem at once
    from studio.training.service import start_run, cancel_run, resume_run, list_runs, get_run, run_metrics
    from studio.training.recipe import train                      # spec -> adapter (what the job runs)

``spec`` and ``service`` import neither torch nor transformers (the UI process uses them).
"""
