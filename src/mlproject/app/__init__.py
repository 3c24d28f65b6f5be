"""The application: one resolved RunConfig, and the commands run on it (train, generate,
evaluate, the tracking server), each with an optional tracker; no MLflow here."""
