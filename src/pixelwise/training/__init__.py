"""Training: configuration, the Trainer and its loop, checkpoints, the budget planner, torchrun.

The package is named ``training`` rather than ``train`` so that it never shadows the public
function :func:`pixelwise.train`.
"""
