"""The code of a logged text-generation model (MLflow "models from code"): loaded as code, never unpickled."""

from mlflow.models import set_model

from mlproject.tracking.textgen import TextGenerationModel

set_model(TextGenerationModel())
