"""Study files, the study runner, MLflow tracking and the ``chemtune`` command line."""
