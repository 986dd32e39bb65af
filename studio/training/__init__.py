"""Training: the recipe a worker runs, its pre-flight, and the services the UI calls.

    from studio.spec import RunSpec                               # the typed spec (studio.spec)
    from studio.training.service import check_spec                # every problem at once
    from studio.training.service import start_run, cancel_run, resume_run, list_runs, get_run, run_metrics
    from studio.training.recipe import train                      # spec -> adapter (what the job runs)

``service`` imports neither torch nor transformers (the UI process uses it); ``preflight`` runs
in the worker, on the machine that trains.
"""
