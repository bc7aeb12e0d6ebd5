"""What changes from one epoch to the next: the learning rate (warm-up, then constant or cosine) and Adam's epsilon
(raised for the late epochs with --late-adam-epsilon). Plain Python, so the command line can read the names."""
import math

# The cosine schedule ends at this share of the learning rate, not at 0: the last epoch still trains.
FINAL_RATE_SHARE = 0.05


def _cosine(progress):
    """From 1 down to FINAL_RATE_SHARE along half a cosine: large steps early, small ones to settle."""
    return FINAL_RATE_SHARE + (1 - FINAL_RATE_SHARE) * (1 + math.cos(math.pi * progress)) / 2


# --lr-schedule: the share of the learning rate at `progress`, 0 at the first epoch after
# the warm-up and 1 at the last.
LR_SCHEDULES = {'constant': lambda progress: 1.0, 'cosine': _cosine}


def _progress(config, epoch):
    """How far `epoch` (1-based) is through the epochs after the warm-up: 0 at the first, 1 at the last."""
    return min(1.0, (epoch - config.warmup_epochs - 1) / max(1, config.epochs - config.warmup_epochs - 1))


def learning_rate_schedule(config):
    """The learning rate of each epoch (1-based): a linear warm-up over config.warmup_epochs, then
    config.lr_schedule from config.learning_rate over the remaining epochs of config.epochs."""
    def rate(epoch):
        if epoch <= config.warmup_epochs:
            return config.learning_rate * epoch / (config.warmup_epochs + 1)
        return config.learning_rate * LR_SCHEDULES[config.lr_schedule](_progress(config, epoch))
    return rate


# --late-adam-epsilon takes over at this share of the epochs after the warm-up: for the cosine, where the rate
# has fallen to about half and the loss has settled near its floor.
LATE_PHASE_START = 0.5


def late_phase_start(config):
    """The first epoch of the late phase (config.epochs + 1 for a run too short to have one)."""
    return next((epoch for epoch in range(config.warmup_epochs + 1, config.epochs + 1)
                 if _progress(config, epoch) >= LATE_PHASE_START), config.epochs + 1)


def adam_epsilon_schedule(config):
    """Adam's epsilon of each epoch: config.adam_epsilon, then config.late_adam_epsilon (if set) from the late
    phase on. A large epsilon there turns the steps of weights whose gradients have become tiny into plain
    SGD steps, which stops the slow runaway of a long run's activations (docs/experiments.md, "Sixty epochs")."""
    late = late_phase_start(config)
    return lambda epoch: config.late_adam_epsilon if config.late_adam_epsilon and epoch >= late else config.adam_epsilon


class LearningRate:
    """The rate of each epoch: the configured schedule times `share`, which each rewind after an explosion
    lowers (and the run's checkpoints carry, so that a resumed run goes on at the rate it had)."""

    def __init__(self, config, share=1.0):
        self.schedule, self.share = learning_rate_schedule(config), share

    def __call__(self, epoch):
        return self.share * self.schedule(epoch)
