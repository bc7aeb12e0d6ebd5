"""Training: the classic train_nn loop, a run's epochs around it, the schedules, the run folder."""
