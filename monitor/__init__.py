"""modelarts-monitor: alerts when ModelArts GPU/Ascend specs gain or lose capacity."""

__version__ = "0.1.0"
