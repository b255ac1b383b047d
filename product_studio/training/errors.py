"""The training package's error."""


class TrainingError(RuntimeError):
    """Training could not run or diverged; the message says what to change."""
