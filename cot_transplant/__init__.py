"""cot-transplant: transplant an arguer's keys/values into a chooser and train both."""

__version__ = "0.1.0"
